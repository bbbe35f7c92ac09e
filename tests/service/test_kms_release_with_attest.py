"""Secrets released in the attestation response itself (``release`` in the request).

The same rules as a later ``GET /v1/secrets/{name}``: only what a matched policy releases, each
release audited (in the attestation's own transaction, with the token's ``jti``), the value
opened before anything is recorded as released. Asking for a secret the policies do not release,
or one that does not exist, refuses the whole attestation and still uses up the nonce.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from kms_data import MEAS_A, SECRET_VALUES
from sqlalchemy import text

from sealpod.errors import AttestationRefused, ConfigError, CryptoError, KmsError
from sealpod.kms import jwe
from sealpod.kms.codec import RELEASE_BUNDLE_CTY
from sealpod.kms.tokens import TokenSigner

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio


async def test_released_secrets_open_with_the_ephemeral_key_only(kms_any: KmsHarness) -> None:
    body, key = await kms_any.attestation_body(release=["api-key", "db-password"])
    r = await kms_any.http.post("/v1/attestation", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["released"] == [
        {"name": "api-key", "version": 1, "content_type": "application/octet-stream"},
        {"name": "db-password", "version": 1, "content_type": "application/octet-stream"},
    ]
    plaintext, header = jwe.decrypt(answer["released_jwe"], key)
    assert header["cty"] == RELEASE_BUNDLE_CTY
    bundle = json.loads(plaintext)["secrets"]
    assert [x["name"] for x in bundle] == ["api-key", "db-password"]
    for item in bundle:
        assert base64.b64decode(item["value"]) == SECRET_VALUES[item["name"]]
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CryptoError, match="does not decrypt"):
        jwe.decrypt(answer["released_jwe"], other)
    assert SECRET_VALUES["api-key"].decode() not in r.text  # only ciphertext on the wire
    assert base64.b64encode(SECRET_VALUES["api-key"]).decode() not in r.text


async def test_without_release_the_answer_carries_no_secrets(kms: KmsHarness) -> None:
    body, _ = await kms.attestation_body()
    answer = (await kms.http.post("/v1/attestation", json=body)).json()
    assert answer["released"] == [] and answer["released_jwe"] is None


@pytest.mark.parametrize(
    "mutate",
    [
        lambda a: {**a, "released_jwe": None},
        lambda a: {**a, "released_jwe": a["released_jwe"][:-4] + "AAAA"},
    ],
    ids=["missing", "tampered"],
)
async def test_client_refuses_an_answer_without_its_secrets(kms: KmsHarness, mutate: Any) -> None:
    """What the client library does with an answer that lost or garbled its bundle."""
    from sealpod.kms.wire import released_with

    body, key = await kms.attestation_body(release=["api-key"])
    answer = (await kms.http.post("/v1/attestation", json=body)).json()
    assert released_with(answer, key, ["api-key"])["api-key"].value == SECRET_VALUES["api-key"]
    with pytest.raises((KmsError, CryptoError)):
        released_with(mutate(answer), key, ["api-key"])
    with pytest.raises(KmsError, match="expected"):
        released_with(answer, key, ["db-password"])


async def test_each_release_is_audited_with_the_tokens_jti(kms: KmsHarness) -> None:
    before = len(await kms.audit())
    body, _ = await kms.attestation_body(release=["db-password", "api-key"])
    r = await kms.http.post("/v1/attestation", json=body)
    assert r.status_code == 200, r.text
    signer: TokenSigner = kms.app.state.kms_state.keys.signer
    jti = signer.verify(r.json()["token"], now=kms.clock()).jti
    records = (await kms.audit())[before:]
    assert [(x["kind"], x["subject"], x["outcome"]) for x in records] == [
        ("attest", MEAS_A.hex(), "ok"),
        ("secret.release", "db-password", "ok"),
        ("secret.release", "api-key", "ok"),
    ]
    assert {x["details"]["jti"] for x in records} == {jti}
    assert all(x["details"]["version"] == 1 for x in records[1:])
    assert (await kms.http.get("/v1/admin/audit/verify", headers=kms.auth())).json()["ok"]


async def test_the_token_still_reads_later(kms: KmsHarness) -> None:
    got = await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["api-key"])
    assert got["api-key"].value == SECRET_VALUES["api-key"]
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    assert (await kms.workload.fetch(session, "db-password")).value == SECRET_VALUES["db-password"]


async def test_duplicate_names_are_released_once(kms: KmsHarness) -> None:
    body, _ = await kms.attestation_body(release=["api-key", "api-key"])
    r = await kms.http.post("/v1/attestation", json=body)
    assert [x["name"] for x in r.json()["released"]] == ["api-key"]  # once
    got = await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["api-key", "api-key"])
    assert list(got) == ["api-key"]


async def test_secret_not_in_policy_refuses_the_attestation(kms: KmsHarness) -> None:
    before = len(await kms.audit())
    body, _ = await kms.attestation_body(release=["api-key", "other"])
    r = await kms.http.post("/v1/attestation", json=body)
    assert r.status_code == 403
    problem = r.json()
    assert [v["code"] for v in problem["violations"]] == ["secret_not_released"]
    assert problem["violations"][0]["actual"] == "other"
    assert SECRET_VALUES["api-key"].decode() not in r.text and "released" not in problem
    records = (await kms.audit())[before:]
    assert [(x["kind"], x["outcome"]) for x in records] == [("attest", "refused")]
    assert records[0]["details"]["codes"] == ["secret_not_released"]
    # the nonce is used up by the refused attempt
    again = await kms.http.post("/v1/attestation", json={**body, "release": ["api-key"]})
    assert again.status_code == 403
    assert [v["code"] for v in again.json()["violations"]] == ["nonce_replayed"]


async def test_client_reports_the_refusal_with_its_code(kms: KmsHarness) -> None:
    with pytest.raises(AttestationRefused) as info:
        await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["other"])
    assert [getattr(v, "code", None) for v in info.value.violations] == ["secret_not_released"]


async def test_missing_secret_refuses_the_attestation(kms: KmsHarness) -> None:
    await kms.put_policy(
        "wide",
        f'allow_simulation = true\nmeasurements = ["{MEAS_A.hex()}"]\n'
        '[release]\nsecrets = ["api-key", "never-stored"]\n',
    )
    body, _ = await kms.attestation_body(release=["never-stored"])
    r = await kms.http.post("/v1/attestation", json=body)
    assert r.status_code == 403
    assert [v["code"] for v in r.json()["violations"]] == ["secret_missing"]


async def test_tampered_value_fails_closed_and_is_audited_as_error(kms: KmsHarness) -> None:
    with kms.store.engine.begin() as conn:
        conn.execute(
            text("UPDATE kms_secret_versions SET ciphertext = :c WHERE name = 'db-password'"),
            {"c": b"\x00" * 64},
        )
    before = len(await kms.audit())
    body, _ = await kms.attestation_body(release=["api-key", "db-password"])
    r = await kms.http.post("/v1/attestation", json=body)
    assert r.status_code == 500 and "token" not in r.json()
    assert SECRET_VALUES["api-key"].decode() not in r.text
    records = (await kms.audit())[before:]
    assert [(x["kind"], x["outcome"]) for x in records] == [("attest", "error")]
    again = await kms.http.post("/v1/attestation", json=body)
    assert [v["code"] for v in again.json()["violations"]] == ["nonce_replayed"]


@pytest.mark.parametrize(
    "release",
    [["../etc/passwd"], ["a b"], [""], ["x" * 129], [f"s{i}" for i in range(65)], "api-key", [1]],
    ids=["traversal", "space", "empty", "too-long", "too-many", "not-a-list", "not-a-string"],
)
async def test_malformed_release_list_is_a_400(kms: KmsHarness, release: object) -> None:
    body, _ = await kms.attestation_body(release=[])
    r = await kms.http.post("/v1/attestation", json={**body, "release": release})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "malformed"


async def test_client_refuses_a_bad_name_before_spending_a_nonce(kms: KmsHarness) -> None:
    with pytest.raises(ConfigError, match="secret name"):
        await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["../x"])
