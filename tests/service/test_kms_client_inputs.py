"""The KMS clients refuse a malformed URL or a token that cannot travel in a header with a typed
error, before any request, and never echo the token."""

from __future__ import annotations

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sealpod.errors import ConfigError, KmsError
from sealpod.kms.admin_client import AdminClient
from sealpod.kms.client import AsyncKmsClient, KmsClient
from sealpod.kms.wire import open_release

KEY = ec.generate_private_key(ec.SECP256R1())


class _NoEvidence:
    def get_evidence(self, report_data: bytes) -> object:
        raise AssertionError("evidence produced for a request that cannot go out")


TOKEN = "sealpod.0123456789abcdef.SECRETxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"


@pytest.mark.parametrize(
    "url",
    [
        "::not a url::", "ftp://127.0.0.1/", "127.0.0.1:8443", "http://", "x" * 5000,
        # httpx raises idna's IDNAError (a UnicodeError) for the first; the socket module's
        # IDNA codec refuses the others when connecting: both escaped as exit 70
        "http://xn--/", "https://" + "a" * 64 + ".example/", "https://a..example/",
    ],
)  # fmt: skip
def test_malformed_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="KMS URL") as info:
        AdminClient(url, token=None)
    assert len(str(info.value)) < 300
    with pytest.raises(ConfigError, match="KMS URL"):
        KmsClient(url)
    with pytest.raises(ConfigError, match="KMS URL"):
        AsyncKmsClient(url)


@pytest.mark.parametrize("suffix", ["\u00e9", "\r\nX-Evil: 1", " ", "\x00"])
def test_token_outside_printable_ascii_is_refused_without_echo(suffix: str) -> None:
    with pytest.raises(ConfigError, match="printable ASCII") as info:
        AdminClient("http://127.0.0.1:1", token=TOKEN + suffix)
    assert "SECRET" not in str(info.value)


def test_good_url_and_token_are_accepted() -> None:
    with AdminClient("https://127.0.0.1:8443", token=TOKEN) as client:
        assert "127.0.0.1" in repr(client)
        assert "SECRET" not in repr(client)


@pytest.mark.parametrize("name", ["../sys/seal", "/etc/passwd", "a/b", "", ".hidden", "a" * 129])
def test_secret_name_outside_the_pattern_is_refused_before_attesting(name: str) -> None:
    """A name becomes a URL path segment and, under ``kms fetch --out-dir``, a file name."""
    backend = _NoEvidence()
    with KmsClient("http://127.0.0.1:1") as client, pytest.raises(ConfigError, match="secret name"):
        client.fetch_secrets(backend, b"\x00" * 32, ["ok", name])  # type: ignore[arg-type]


def test_release_of_another_name_is_refused() -> None:
    with pytest.raises(KmsError, match="expected 'db'"):
        open_release({"name": "other", "version": 1, "jwe": "x"}, KEY, "db")


def _unknown_key_then(answers: list[object]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if answer == "unknown":
            return httpx.Response(
                401, json={"code": "kms.auth.unknown_key", "detail": "unknown signing key"}
            )
        assert isinstance(answer, dict)
        return httpx.Response(200, json=answer)

    return httpx.MockTransport(handle)


def test_the_sync_client_retries_an_unknown_signing_key_once() -> None:
    from sealpod.errors import UnknownSigningKey
    from sealpod.kms import jwe
    from sealpod.kms.client import AttestedSession
    from sealpod.kms.tokens import thumbprint

    session = AttestedSession(
        token=TOKEN, key=KEY, secrets=("db",), policies=("p",), expires_at_unix=0, claims={}
    )
    sealed = jwe.encrypt_to(KEY.public_key(), b"value", kid=thumbprint(KEY.public_key()), cty="")
    ok = {"name": "db", "version": 1, "jwe": sealed, "content_type": ""}
    answers: list[object] = ["unknown", ok]
    with KmsClient("http://kms", transport=_unknown_key_then(answers)) as client:
        assert client.fetch(session, "db").value == b"value"
    assert answers == []  # exactly two requests
    answers = ["unknown", "unknown"]
    with KmsClient("http://kms", transport=_unknown_key_then(answers)) as client:
        with pytest.raises(UnknownSigningKey, match="unknown_key"):
            client.fetch(session, "db")  # once, not forever
    assert answers == []


@pytest.mark.parametrize("suffix", ["\u00e9", "\r\nX-Evil: 1", " ", "\x00"])
def test_a_session_token_that_cannot_travel_in_a_header_is_a_kms_error(suffix: str) -> None:
    # The token comes from the KMS's answer and goes back in the Authorization header; one
    # httpx cannot encode (UnicodeEncodeError) or http.client will not send escaped the
    # client's error mapping (exit 70).
    from sealpod.kms.wire import read_session

    data = {
        "token": TOKEN + suffix,
        "secrets": [],
        "policies": [],
        "expires_at_unix": 1,
        "claims": {},
    }
    with pytest.raises(KmsError, match="token") as info:
        read_session(data, KEY)
    assert "SECRET" not in str(info.value)
