"""Attested secret release through the ASGI transport: the happy path and every refusal."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from kms_data import MEAS_A, MEAS_B, SECRET_VALUES, SIGNER, policy_toml

from sealpod.crypto.binding import attestation_report_data
from sealpod.errors import AttestationRefused, KmsAuthError, KmsForbidden, KmsUnavailable
from sealpod.kms import jwe
from sealpod.kms.client import AttestedSession
from sealpod.kms.fakes import FakeBackend
from sealpod.kms.tokens import make_proof
from sealpod.verify.claims import TcbStatus, TeeKind

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio


async def attest_body(
    kms: KmsHarness, backend: FakeBackend, workload: bytes = MEAS_A
) -> dict[str, Any]:
    """A valid attestation request body (fresh challenge, fresh key)."""
    r = await kms.http.post("/v1/attestation/challenge", json={"tee": "sgx"})
    assert r.status_code == 200, r.text
    nonce_b64 = r.json()["nonce"]
    key = ec.generate_private_key(ec.SECP256R1())
    pub = jwe.public_key_der(key)
    ev = backend.get_evidence(attestation_report_data(base64.b64decode(nonce_b64), pub, workload))
    return {
        "nonce": nonce_b64,
        "evidence": json.loads(ev.to_envelope().to_json()),
        "public_key": base64.b64encode(pub).decode(),
        "workload": workload.hex(),
    }


def codes_of(exc: AttestationRefused) -> set[str]:
    return {getattr(v, "code", str(v)) for v in exc.violations}


async def refused_codes(kms: KmsHarness, body: dict[str, Any]) -> set[str]:
    r = await kms.http.post("/v1/attestation", json=body)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == 403 and problem["code"] == "kms.refused"
    return {v["code"] for v in problem["violations"]}


# -- the happy path ----------------------------------------------------------------------------
async def test_full_release_returns_the_secrets(kms_any: KmsHarness) -> None:
    got = await kms_any.workload.fetch_secrets(
        kms_any.backend(), MEAS_A, ["db-password", "api-key"]
    )
    assert got["db-password"].value == SECRET_VALUES["db-password"]
    assert got["api-key"].value == SECRET_VALUES["api-key"]
    assert got["api-key"].version == 1
    assert SECRET_VALUES["api-key"].hex() not in repr(got)


async def test_token_grants_exactly_the_policy_secrets(kms: KmsHarness) -> None:
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    assert session.secrets == ("api-key", "db-password")
    assert session.policies == ("workload-a",)
    assert session.claims["tee"] == "sim" and session.claims["workload"] == MEAS_A.hex()
    assert session.expires_at_unix - int(kms.clock.now.timestamp()) == 60


async def test_released_value_is_a_jwe_to_the_ephemeral_key(kms: KmsHarness) -> None:
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    path = "/v1/secrets/db-password"
    proof = make_proof(session.key, method="GET", path=path, token=session.token, now=kms.clock.now)
    r = await kms.http.get(
        path, headers={"Authorization": f"Bearer {session.token}", "DPoP": proof}
    )
    assert r.status_code == 200
    body = r.json()
    assert SECRET_VALUES["db-password"] not in r.content
    header = json.loads(base64.urlsafe_b64decode(body["jwe"].split(".")[0] + "=="))
    assert header["alg"] == "ECDH-ES+A256KW" and header["enc"] == "A256GCM"
    assert jwe.decrypt(body["jwe"], session.key)[0] == SECRET_VALUES["db-password"]
    with pytest.raises(Exception, match="JWE does not decrypt"):
        jwe.decrypt(body["jwe"], ec.generate_private_key(ec.SECP256R1()))


async def test_accepted_and_released_are_audited(kms: KmsHarness) -> None:
    await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["db-password"])
    records = await kms.audit()
    attest = [r for r in records if r["kind"] == "attest"]
    release = [r for r in records if r["kind"] == "secret.release"]
    assert attest[-1]["outcome"] == "ok" and attest[-1]["subject"] == MEAS_A.hex()
    assert attest[-1]["details"]["policies"] == ["workload-a"]
    assert release[-1]["subject"] == "db-password" and release[-1]["details"]["version"] == 1


async def test_rotated_secret_releases_the_new_version(kms: KmsHarness) -> None:
    r = await kms.http.post(
        "/v1/admin/secrets/api-key/rotate",
        json={"value": base64.b64encode(b"rotated value").decode()},
        headers=kms.auth(),
    )
    assert r.status_code == 200 and r.json()["current_version"] == 2
    got = await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["api-key"])
    assert got["api-key"].value == b"rotated value" and got["api-key"].version == 2


async def test_signed_upgrade_matches_a_signer_policy(kms: KmsHarness) -> None:
    # signer + product id + min svn: a new build (new measurement) needs no policy change.
    await kms.put_policy(
        "by-signer",
        "allow_simulation = true\n"
        f'signer = "{SIGNER.hex()}"\nproduct_id = 1\nmin_svn = 1\n'
        '[release]\nsecrets = ["other"]\n',
    )
    session = await kms.workload.attest(kms.backend(MEAS_B), MEAS_B)
    assert session.secrets == ("other",) and session.policies == ("by-signer",)


# -- refusals, each named ----------------------------------------------------------------------
async def test_refuses_replayed_nonce(kms_any: KmsHarness) -> None:
    body = await attest_body(kms_any, kms_any.backend())
    first = await kms_any.http.post("/v1/attestation", json=body)
    assert first.status_code == 200
    assert await refused_codes(kms_any, body) == {"nonce_replayed"}


async def test_refuses_expired_nonce(kms: KmsHarness) -> None:
    body = await attest_body(kms, kms.backend())
    kms.clock.advance(kms.settings.nonce_ttl_secs + 1)
    assert await refused_codes(kms, body) == {"nonce_expired"}


async def test_refuses_unknown_nonce(kms: KmsHarness) -> None:
    body = await attest_body(kms, kms.backend())
    body["nonce"] = base64.b64encode(b"\x01" * 32).decode()
    assert await refused_codes(kms, body) == {"nonce_unknown"}


async def test_two_concurrent_attestations_with_one_nonce_exactly_one_wins(
    kms_any: KmsHarness,
) -> None:
    for _ in range(8):
        body = await attest_body(kms_any, kms_any.backend())
        responses = await asyncio.gather(
            *(kms_any.http.post("/v1/attestation", json=body) for _ in range(2))
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 403]
        loser = next(r for r in responses if r.status_code == 403)
        assert {v["code"] for v in loser.json()["violations"]} == {"nonce_replayed"}


async def test_refuses_evidence_for_another_measurement(kms: KmsHarness) -> None:
    with pytest.raises(AttestationRefused) as info:
        await kms.workload.attest(kms.backend(MEAS_B), MEAS_B)
    assert codes_of(info.value) == {"measurement_not_allowed"}
    finding = info.value.violations[0]
    assert getattr(finding, "actual", None) == MEAS_B.hex()
    assert getattr(finding, "policy", None) == "workload-a"


async def test_refuses_workload_claim_that_differs_from_the_enclave(kms: KmsHarness) -> None:
    # Evidence of enclave A that binds a claim "I am workload B" in report_data.
    with pytest.raises(AttestationRefused) as info:
        await kms.workload.attest(kms.backend(MEAS_A), MEAS_B)
    assert codes_of(info.value) == {"workload_mismatch"}


async def test_refuses_report_data_not_bound_to_nonce_and_key(kms: KmsHarness) -> None:
    body = await attest_body(kms, kms.backend())
    other = ec.generate_private_key(ec.SECP256R1())
    body["public_key"] = base64.b64encode(jwe.public_key_der(other)).decode()
    assert await refused_codes(kms, body) == {"report_data_mismatch"}


async def test_refuses_debug_enclave(kms: KmsHarness) -> None:
    with pytest.raises(AttestationRefused) as info:
        await kms.workload.attest(kms.backend(debug=True), MEAS_A)
    assert codes_of(info.value) == {"debug_not_allowed"}


async def test_refuses_disallowed_tcb_status(kms: KmsHarness) -> None:
    with pytest.raises(AttestationRefused) as info:
        await kms.workload.attest(kms.backend(tcb_status=TcbStatus.OUT_OF_DATE), MEAS_A)
    assert codes_of(info.value) == {"tcb_status_not_accepted"}


async def test_refuses_simulation_not_allowed(kms: KmsHarness) -> None:
    await kms.put_policy("workload-a", policy_toml(allow_simulation=False))
    with pytest.raises(AttestationRefused) as info:
        await kms.workload.attest(kms.backend(), MEAS_A)
    assert codes_of(info.value) == {"simulation_not_allowed"}


async def test_hardware_claims_pass_a_policy_without_simulation(kms: KmsHarness) -> None:
    await kms.put_policy("workload-a", policy_toml(allow_simulation=False))
    session = await kms.workload.attest(kms.backend(tee=TeeKind.SGX, emulated=None), MEAS_A)
    assert session.claims["tee"] == "sgx"


async def test_refuses_when_no_policy_exists(kms: KmsHarness) -> None:
    r = await kms.http.delete("/v1/admin/policies/workload-a", headers=kms.auth())
    assert r.status_code == 204
    with pytest.raises(AttestationRefused) as info:
        await kms.workload.attest(kms.backend(), MEAS_A)
    assert codes_of(info.value) == {"no_policy"}


async def test_refuses_forged_evidence_signature(kms: KmsHarness) -> None:
    kms.verifier.fail_signature = True
    body = await attest_body(kms, kms.backend())
    r = await kms.http.post("/v1/attestation", json=body)
    assert r.status_code == 403
    (v,) = r.json()["violations"]
    assert v["code"] == "verify.signature" and "Step 4" in v["message"]


async def test_collateral_unavailable_is_503(kms: KmsHarness) -> None:
    kms.verifier.collateral_down = True
    body = await attest_body(kms, kms.backend())
    r = await kms.http.post("/v1/attestation", json=body)
    assert r.status_code == 503 and r.json()["code"] == "collateral.unavailable"


async def test_refuses_token_for_another_ephemeral_key(kms: KmsHarness) -> None:
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    thief = AttestedSession(
        token=session.token,
        key=ec.generate_private_key(ec.SECP256R1()),  # proves possession of another key
        secrets=session.secrets,
        policies=session.policies,
        expires_at_unix=session.expires_at_unix,
        claims=session.claims,
    )
    with pytest.raises(KmsAuthError, match="another key"):
        await kms.workload.fetch(thief, "db-password")


async def test_refuses_token_without_proof(kms: KmsHarness) -> None:
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    r = await kms.http.get(
        "/v1/secrets/db-password", headers={"Authorization": f"Bearer {session.token}"}
    )
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


async def test_refuses_expired_token(kms: KmsHarness) -> None:
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    kms.clock.advance(61 + 5)  # token_ttl_secs = 60, plus the verifier's 5 s leeway
    with pytest.raises(KmsAuthError, match="token refused"):
        await kms.workload.fetch(session, "db-password")


async def test_refuses_secret_not_in_the_policy(kms: KmsHarness) -> None:
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    with pytest.raises(KmsForbidden, match="not released"):
        await kms.workload.fetch(session, "other")
    records = await kms.audit()
    refused = [r for r in records if r["kind"] == "secret.release" and r["outcome"] == "refused"]
    assert refused[-1]["subject"] == "other"
    assert refused[-1]["details"]["codes"] == ["secret_not_released"]


async def test_refuses_admin_token_as_attestation_token(kms: KmsHarness) -> None:
    r = await kms.http.get("/v1/secrets/db-password", headers=kms.auth())
    assert r.status_code == 401


async def test_refusals_are_audited_with_codes(kms_any: KmsHarness) -> None:
    with pytest.raises(AttestationRefused):
        await kms_any.workload.attest(kms_any.backend(debug=True), MEAS_A)
    body = await attest_body(kms_any, kms_any.backend())
    await kms_any.http.post("/v1/attestation", json=body)
    await kms_any.http.post("/v1/attestation", json=body)
    records = [r for r in await kms_any.audit() if r["kind"] == "attest"]
    outcomes = [(r["outcome"], r["details"].get("codes")) for r in records]
    assert ("refused", ["debug_not_allowed"]) in outcomes
    assert ("refused", ["nonce_replayed"]) in outcomes
    assert ("ok", None) in outcomes
    assert all(r["actor"] == "10.9.8.7" for r in records)


# -- malformed requests (400) ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nonce", "!!not base64!!"),
        ("nonce", base64.b64encode(b"short").decode()),
        ("public_key", base64.b64encode(b"not a key").decode()),
        ("workload", "zz"),
        ("evidence", {"tee": "sgx", "evidence": "AAAA"}),
        ("evidence", {"tee": "martian", "evidence": "AAAA"}),
        ("unexpected", 1),
    ],
)
async def test_malformed_attestation_is_400(kms: KmsHarness, field: str, value: object) -> None:
    body = await attest_body(kms, kms.backend())
    body[field] = value
    r = await kms.http.post("/v1/attestation", json=body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"


async def test_not_json_is_400(kms: KmsHarness) -> None:
    r = await kms.http.post(
        "/v1/attestation", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400


async def test_client_maps_sealed_to_unavailable(kms: KmsHarness) -> None:
    r = await kms.http.post("/v1/sys/seal", headers=kms.auth())
    assert r.status_code == 204
    with pytest.raises(KmsUnavailable, match="sealed"):
        await kms.workload.attest(kms.backend(), MEAS_A)


async def test_malformed_attempt_uses_its_nonce_up(kms: KmsHarness) -> None:
    body = await attest_body(kms, kms.backend())
    good_key = body["public_key"]
    body["public_key"] = base64.b64encode(b"not a key").decode()
    assert (await kms.http.post("/v1/attestation", json=body)).status_code == 400
    body["public_key"] = good_key
    assert await refused_codes(kms, body) == {"nonce_replayed"}
