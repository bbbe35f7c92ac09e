"""The Trustee KBS protocol endpoints (/kbs/v0/auth|attest|resource) with real simulated SGX
quotes, through the ASGI transport."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwe as jose_jwe
from joserfc.jwk import ECKey, RSAKey
from kms_data import policy_toml

from sealpod.evidence.snp_report import parse_report
from sealpod.evidence.trustee_snp import der_certificates, report_from_trustee, trustee_from_report
from sealpod.kms.kbs import COOKIE, canonical_json, kbs_report_data
from sealpod.kms.store import Store
from sealpod.kms.verifier import build_verifier
from sealpod.tee.sim import SimBackend, SimIdentity, SimPlatform

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio

IDENTITY = SimIdentity(
    measurement=hashlib.sha256(b"kbs workload").digest(),
    signer=hashlib.sha256(b"kbs author").digest(),
    product_id=3,
    svn=1,
)
VALUE = b"kbs resource value 5e1f"


@pytest.fixture
async def kbs_kms(kms_sqlite_store: Store, sim_home: Path) -> AsyncIterator[KmsHarness]:
    from kms_harness import running_kms

    policy = policy_toml(measurements=[IDENTITY.measurement], secrets=["default.key.db"])
    async with running_kms(
        kms_sqlite_store,
        policy=policy,
        verifier=build_verifier(trust_sim=True, home=sim_home),
        start=datetime.now(UTC),
    ) as harness:
        await harness.put_secret("default.key.db", VALUE)
        yield harness


def test_runtime_data_hash_matches_trustee() -> None:
    # The attestation service's own test vector: JCS then SHA-384.
    data = {"b": 1, "a": "test", "c": {"d": "e"}}
    assert canonical_json(data) == b'{"a":"test","b":1,"c":{"d":"e"}}'
    assert kbs_report_data(data)[:48].hex() == (
        "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c"
        "4597480a186427c813ca941da78870c3"
    )
    assert kbs_report_data(data)[48:] == bytes(16)


class Guest:
    """A Confidential Containers guest, as far as the KBS protocol goes."""

    def __init__(
        self, kms: KmsHarness, platform: SimPlatform, key: ECKey | RSAKey, tee: str = "sgx"
    ) -> None:
        self.kms, self.key, self.tee = kms, key, tee
        self.backend = SimBackend(platform, IDENTITY, tee)  # type: ignore[arg-type]
        self.cookie = ""

    async def auth(self) -> str:
        r = await self.kms.http.post(
            "/kbs/v0/auth", json={"version": "0.4.0", "tee": self.tee, "extra-params": {}}
        )
        assert r.status_code == 200, r.text
        self.cookie = r.cookies[COOKIE]
        return str(r.json()["nonce"])

    def payload(self, nonce: str, *, bound_nonce: str | None = None) -> dict[str, Any]:
        runtime = {"nonce": nonce, "tee-pubkey": self.key.as_dict(private=False)}
        bound = {**runtime, "nonce": bound_nonce or nonce}
        produced = self.backend.get_evidence(kbs_report_data(bound))
        evidence: dict[str, Any]
        if self.tee == "snp":  # Trustee's SNP attester: the report as JSON, the VCEK chain
            pem = produced.certificates.decode() if produced.certificates else None
            chain = list(zip(("VCEK", "ASK", "ARK"), der_certificates(pem), strict=True))
            evidence = trustee_from_report(produced.raw, chain)
        else:
            evidence = {"quote": base64.b64encode(produced.raw).decode()}
        return {
            "runtime-data": runtime,
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": "{}"},
        }

    async def attest(self, body: dict[str, Any]) -> Any:
        return await self.kms.http.post(
            "/kbs/v0/attest", json=body, headers={"Cookie": f"{COOKIE}={self.cookie}"}
        )

    def open(self, response: dict[str, str]) -> bytes:
        compact = ".".join(
            response[k] for k in ("protected", "encrypted_key", "iv", "ciphertext", "tag")
        )
        result = jose_jwe.decrypt_compact(
            compact, self.key, algorithms=["ECDH-ES+A256KW", "RSA-OAEP", "A256GCM"]
        )
        assert result.plaintext is not None
        return result.plaintext


def ec_key() -> ECKey:
    return ECKey.import_key(ec.generate_private_key(ec.SECP256R1()))


async def test_kbs_flow_with_ec_key_and_cookie(kbs_kms: KmsHarness, sim_home: Path) -> None:
    guest = Guest(kbs_kms, SimPlatform.load(sim_home), ec_key())
    nonce = await guest.auth()
    r = await guest.attest(guest.payload(nonce))
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert r.cookies[COOKIE] == token
    r = await kbs_kms.http.get(
        "/kbs/v0/resource/default/key/db", headers={"Cookie": f"{COOKIE}={token}"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"protected", "encrypted_key", "aad", "iv", "ciphertext", "tag"}
    assert json.loads(base64.urlsafe_b64decode(body["protected"] + "=="))["enc"] == "A256GCM"
    assert guest.open(body) == VALUE


async def test_kbs_flow_with_snp_evidence_in_trustee_json(
    kbs_kms: KmsHarness, sim_home: Path
) -> None:
    guest = Guest(kbs_kms, SimPlatform.load(sim_home), ec_key(), tee="snp")
    nonce = await guest.auth()
    payload = guest.payload(nonce)
    measurement = parse_report(report_from_trustee(payload["tee-evidence"]["primary_evidence"])[0])
    await kbs_kms.put_policy(
        "snp-guest",
        policy_toml(measurements=[measurement.measurement], secrets=["default.key.db"]),
    )
    r = await guest.attest(payload)
    assert r.status_code == 200, r.text
    r = await kbs_kms.http.get(
        "/kbs/v0/resource/default/key/db", headers={"Authorization": f"Bearer {r.json()['token']}"}
    )
    assert r.status_code == 200, r.text
    assert guest.open(r.json()) == VALUE
    attests = [a for a in await kbs_kms.audit() if a["kind"] == "attest"]
    assert attests[-1]["outcome"] == "ok" and attests[-1]["details"]["protocol"] == "kbs"


async def test_kbs_snp_evidence_tampered_in_json_is_refused(
    kbs_kms: KmsHarness, sim_home: Path
) -> None:
    guest = Guest(kbs_kms, SimPlatform.load(sim_home), ec_key(), tee="snp")
    payload = guest.payload(await guest.auth())
    report = payload["tee-evidence"]["primary_evidence"]["attestation_report"]
    report["measurement"][0] ^= 1  # a well-formed report that is not the one the VCEK signed
    r = await guest.attest(payload)
    assert r.status_code == 403, r.text
    assert "signature" in json.dumps(r.json()["violations"])


@pytest.mark.vectors
async def test_kbs_verifies_trustees_real_snp_evidence(
    kbs_kms: KmsHarness, sim_home: Path, vectors: Path
) -> None:
    # Trustee's end-to-end Genoa evidence, with AMD's ASK and ARK appended to its chain: the
    # converted report verifies against the pinned AMD root; it is bound to Trustee's test
    # runtime data, not to this session, which is the one refusal left.
    data = json.loads((vectors / "trustee/snp/e2e-evidence.json").read_text())
    pem = (vectors / "go-sev-guest/ask_ark_genoa.pem").read_text()
    for kind, der in zip(("ASK", "ARK"), der_certificates(pem), strict=True):
        data["cert_chain"].append({"cert_type": kind, "data": list(der)})
    guest = Guest(kbs_kms, SimPlatform.load(sim_home), ec_key(), tee="snp")
    nonce = await guest.auth()
    body = {
        "runtime-data": {"nonce": nonce, "tee-pubkey": guest.key.as_dict(private=False)},
        "tee-evidence": data,
    }
    r = await guest.attest(body)
    assert r.status_code == 403, r.text
    assert [v["code"] for v in r.json()["violations"]] == ["report_data_mismatch"]


async def test_kbs_flow_with_rsa_key_and_bearer(kbs_kms: KmsHarness, sim_home: Path) -> None:
    key = RSAKey.import_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    guest = Guest(kbs_kms, SimPlatform.load(sim_home), key)
    r = await guest.attest(guest.payload(await guest.auth()))
    assert r.status_code == 200, r.text
    r = await kbs_kms.http.get(
        "/kbs/v0/resource/default/key/db",
        headers={"Authorization": f"Bearer {r.json()['token']}"},
    )
    assert r.status_code == 200, r.text
    assert guest.open(r.json()) == VALUE


async def test_kbs_refuses_replayed_session(kbs_kms: KmsHarness, sim_home: Path) -> None:
    guest = Guest(kbs_kms, SimPlatform.load(sim_home), ec_key())
    body = guest.payload(await guest.auth())
    assert (await guest.attest(body)).status_code == 200
    r = await guest.attest(body)
    assert r.status_code == 403
    assert {v["code"] for v in r.json()["violations"]} == {"nonce_replayed"}


async def test_kbs_refuses_evidence_bound_to_another_nonce(
    kbs_kms: KmsHarness, sim_home: Path
) -> None:
    guest = Guest(kbs_kms, SimPlatform.load(sim_home), ec_key())
    nonce = await guest.auth()
    r = await guest.attest(guest.payload(nonce, bound_nonce=base64.b64encode(b"x" * 32).decode()))
    assert r.status_code == 403
    assert {v["code"] for v in r.json()["violations"]} == {"report_data_mismatch"}


async def test_kbs_refuses_runtime_data_for_another_session(
    kbs_kms: KmsHarness, sim_home: Path
) -> None:
    guest = Guest(kbs_kms, SimPlatform.load(sim_home), ec_key())
    other_nonce = await guest.auth()  # a second session's challenge...
    await guest.auth()
    r = await guest.attest(guest.payload(other_nonce))  # ...answered on this session
    assert r.status_code == 403
    assert {v["code"] for v in r.json()["violations"]} == {"nonce_mismatch"}


async def test_kbs_refuses_resource_not_released(kbs_kms: KmsHarness, sim_home: Path) -> None:
    await kbs_kms.put_secret("default.key.other", b"no")
    guest = Guest(kbs_kms, SimPlatform.load(sim_home), ec_key())
    r = await guest.attest(guest.payload(await guest.auth()))
    token = r.json()["token"]
    r = await kbs_kms.http.get(
        "/kbs/v0/resource/default/key/other", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 403 and r.json()["code"] == "kms.forbidden"


async def test_kbs_attest_without_session_is_401(kbs_kms: KmsHarness, sim_home: Path) -> None:
    guest = Guest(kbs_kms, SimPlatform.load(sim_home), ec_key())
    body = guest.payload(base64.b64encode(b"n" * 32).decode())
    r = await kbs_kms.http.post("/kbs/v0/attest", json=body)
    assert r.status_code == 401


async def test_kbs_resource_without_token_is_401(kbs_kms: KmsHarness) -> None:
    assert (await kbs_kms.http.get("/kbs/v0/resource/default/key/db")).status_code == 401


@pytest.mark.parametrize("tee", ["az-snp-vtpm", "az-tdx-vtpm", "sample"])
async def test_kbs_unsupported_tee_is_400(kbs_kms: KmsHarness, tee: str) -> None:
    r = await kbs_kms.http.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": tee})
    assert r.status_code == 400


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("runtime-data"),
        lambda b: b["runtime-data"].update({"tee-pubkey": {"kty": "oct", "k": "AAAA"}}),
        lambda b: b["runtime-data"]["tee-pubkey"].update({"d": "secret"}),
        lambda b: b.update({"tee-evidence": {"primary_evidence": {"no": "quote"}}}),
        lambda b: b.update({"tee-evidence": {"quote": "AAAA"}}),
    ],
)
async def test_kbs_malformed_attestation_is_400(
    kbs_kms: KmsHarness, sim_home: Path, mutate: Any
) -> None:
    guest = Guest(kbs_kms, SimPlatform.load(sim_home), ec_key())
    body = guest.payload(await guest.auth())
    mutate(body)
    r = await guest.attest(body)
    assert r.status_code == 400, r.text


async def test_kbs_attempts_are_audited(kbs_kms: KmsHarness, sim_home: Path) -> None:
    guest = Guest(kbs_kms, SimPlatform.load(sim_home), ec_key())
    body = guest.payload(await guest.auth())
    await guest.attest(body)
    await guest.attest(body)
    records = [r for r in await kbs_kms.audit() if r["kind"] == "attest"]
    assert [(r["outcome"], r["details"]["protocol"]) for r in records[-2:]] == [
        ("ok", "kbs"),
        ("refused", "kbs"),
    ]


async def test_kbs_resource_revoked_with_its_policy(kbs_kms: KmsHarness, sim_home: Path) -> None:
    # Issue 17 item 2: a KBS token reads only while its policy is stored unchanged.
    guest = Guest(kbs_kms, SimPlatform.load(sim_home), ec_key())
    token = (await guest.attest(guest.payload(await guest.auth()))).json()["token"]
    path, auth = "/kbs/v0/resource/default/key/db", {"Authorization": f"Bearer {token}"}
    assert (await kbs_kms.http.get(path, headers=auth)).status_code == 200
    r = await kbs_kms.http.delete("/v1/admin/policies/workload-a", headers=kbs_kms.auth())
    assert r.status_code == 204
    r = await kbs_kms.http.get(path, headers=auth)
    assert r.status_code == 403 and "policy_revoked" in r.json()["detail"], r.text
