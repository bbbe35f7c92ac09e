"""The owner's side of the KMS API (what ``sealpod kms secret|policy|user|audit`` call).

The admin token travels only in the Authorization header; it is read from the environment or a
file by the caller, never from a command line. Secret values are sent base64 in the JSON body.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import httpx

from sealpod.errors import ConfigError, KmsError, KmsUnavailable
from sealpod.kms.audit import AuditRecord, ChainReport, verify_chain
from sealpod.kms.client import (
    DEFAULT_TIMEOUT_SECS,
    VerifyArg,
    checked_base_url,
    raise_for_problem,
    tls_context,
)
from sealpod.kms.transport import sync_client

#: What an admin token may hold (it travels in an HTTP header): printable ASCII, no spaces.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]{1,4096}")


class AdminClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        verify: VerifyArg = True,
        timeout: float = DEFAULT_TIMEOUT_SECS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """A client of the KMS admin API at ``base_url`` with an admin ``token`` (or none).

        Raises:
            ConfigError: the URL is not an http(s) URL, or the token is not printable ASCII.
        """
        if token and not _TOKEN_CHARS.fullmatch(token):
            # Never echo it: a mangled token is still mostly a token.
            raise ConfigError("the admin token holds characters other than printable ASCII")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = sync_client(
            base_url=checked_base_url(base_url),
            verify=tls_context(verify),
            timeout=timeout,
            transport=transport,
            headers=headers,
        )

    def __repr__(self) -> str:
        return f"AdminClient(base_url={str(self._http.base_url)!r})"

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise KmsUnavailable(f"cannot reach the KMS: {type(exc).__name__}") from exc
        raise_for_problem(response)
        if response.status_code == 204 or not response.content:
            return None
        ctype = response.headers.get("content-type", "")
        if "json" not in ctype:
            return response.text
        try:
            return response.json()
        except ValueError as exc:
            raise KmsError("KMS answered with a body that is not JSON") from exc

    # -- system -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/sys/status"))

    def unseal(self, share: str) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/sys/unseal", json={"share": share}))

    def seal(self) -> None:
        self._call("POST", "/v1/sys/seal")

    def rotate_key(self, key: str, *, force: bool = False) -> dict[str, Any]:
        """Rotate ``token-signing`` or ``ca``."""
        return dict(self._call("POST", f"/v1/admin/keys/{key}/rotate", json={"force": force}))

    def ca_pem(self) -> str:
        return str(self._call("GET", "/v1/ca"))

    # -- secrets ------------------------------------------------------------------------------
    def put_secret(
        self,
        name: str,
        *,
        value: bytes | None = None,
        generate: str | None = None,
        dns: list[str] | None = None,
        validity_days: int = 30,
    ) -> dict[str, Any]:
        body: dict[str, object] = {"dns": dns or [], "validity_days": validity_days}
        if value is not None:
            body["value"] = base64.b64encode(value).decode()
        if generate is not None:
            body["generate"] = generate
        return dict(self._call("PUT", f"/v1/admin/secrets/{name}", json=body))

    def rotate_secret(self, name: str, *, value: bytes | None = None) -> dict[str, Any]:
        body = {"value": base64.b64encode(value).decode()} if value is not None else {}
        return dict(self._call("POST", f"/v1/admin/secrets/{name}/rotate", json=body))

    def get_secret(self, name: str, *, version: int | None = None) -> tuple[int, str, bytes]:
        """(version, kind, value)."""
        params = {"version": version} if version else None
        data = self._call("GET", f"/v1/admin/secrets/{name}/value", params=params)
        return int(data["version"]), str(data["kind"]), base64.b64decode(data["value"])

    def list_secrets(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/admin/secrets"))

    def secret_versions(self, name: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/v1/admin/secrets/{name}/versions"))

    def remove_secret(self, name: str) -> None:
        self._call("DELETE", f"/v1/admin/secrets/{name}")

    # -- policies -----------------------------------------------------------------------------
    def put_policy(self, name: str, document: str, *, fmt: str = "toml") -> dict[str, Any]:
        return dict(
            self._call(
                "PUT", f"/v1/admin/policies/{name}", json={"document": document, "format": fmt}
            )
        )

    def get_policy(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/admin/policies/{name}"))

    def list_policies(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/admin/policies"))

    def remove_policy(self, name: str) -> None:
        self._call("DELETE", f"/v1/admin/policies/{name}")

    def test_policy(self, name: str, evidence: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self._call("POST", f"/v1/admin/policies/{name}/test", json={"evidence": evidence})
        )

    # -- users --------------------------------------------------------------------------------
    def add_user(self, name: str, role: str) -> str:
        """Create a user; returns its token (shown once)."""
        data = self._call("POST", "/v1/admin/users", json={"name": name, "role": role})
        return str(data["token"])

    def remove_user(self, name: str) -> None:
        self._call("DELETE", f"/v1/admin/users/{name}")

    def list_users(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/admin/users"))

    # -- audit --------------------------------------------------------------------------------
    def audit_records(self, *, after: int = 0) -> Iterator[AuditRecord]:
        while True:
            page = self._call("GET", "/v1/admin/audit", params={"after": after, "limit": 1000})
            for raw in page["records"]:
                try:
                    yield AuditRecord.from_json(raw)
                except (KeyError, TypeError, ValueError) as exc:
                    raise KmsError("KMS returned a malformed audit record") from exc
            if page.get("next_after") is None:
                return
            after = int(page["next_after"])

    def audit_head(self) -> tuple[int, bytes]:
        page = self._call("GET", "/v1/admin/audit", params={"after": 0, "limit": 1})
        return int(page["head_seq"]), bytes.fromhex(str(page["head_hash"]))

    def audit_verify(
        self, *, expect: tuple[int, bytes] | None = None
    ) -> tuple[ChainReport, dict[str, Any]]:
        """Verify the chain twice: here, over the records fetched (hashes and links, against
        the head and the ``expect``-ed head kept from before), and on the server (which also
        checks each record's MAC and the head's, and signs a checkpoint when all is well)."""
        head = self.audit_head()  # records appended after this moment are not judged
        local = verify_chain(
            (r for r in self.audit_records() if r.seq <= head[0]), head=head, expect=expect
        )
        server = dict(self._call("GET", "/v1/admin/audit/verify"))
        return local, server

    def jwks(self) -> list[dict[str, Any]]:
        """The KMS's token-signing public keys (``/v1/jwks``), which also sign checkpoints."""
        data = self._call("GET", "/v1/jwks")
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise KmsError("KMS returned a malformed JWKS")
        return keys
