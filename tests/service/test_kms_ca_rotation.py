"""Rotation of the workload CA: certificates of the previous CA stay trusted through the bundle,
new ones come from the new CA, rotating again too soon is refused, replicas pick the new CA up,
and a planted CA certificate makes unsealing fail instead of being trusted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from kms_data import MEAS_A, policy_toml
from sqlalchemy import text

from sealpod.errors import ConfigError
from sealpod.kms.generate import CertificateAuthority
from sealpod.kms.keys import MasterKey
from sealpod.kms.rekey import rekey

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio


@pytest.fixture
async def tls_kms(kms: KmsHarness) -> KmsHarness:
    r = await kms.http.put(
        "/v1/admin/secrets/tls",
        json={"generate": "tls-cert", "dns": ["app.internal"], "validity_days": 10},
        headers=kms.auth(),
    )
    assert r.status_code == 201, r.text
    await kms.put_policy("workload-a", policy_toml(secrets=["tls", "db-password"]))
    return kms


async def release(kms: KmsHarness) -> tuple[x509.Certificate, list[x509.Certificate]]:
    got = (await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["tls"]))["tls"].json()
    cert = x509.load_pem_x509_certificate(got["cert"].encode())
    return cert, x509.load_pem_x509_certificates(got["ca"].encode())


async def rotate(kms: KmsHarness, *, force: bool = False) -> Any:
    return await kms.http.post(
        "/v1/admin/keys/ca/rotate", json={"force": force}, headers=kms.auth()
    )


def chains(cert: x509.Certificate, bundle: list[x509.Certificate]) -> bool:
    for ca in bundle:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):  # not issued by this CA
            continue
        return True
    return False


async def test_certificates_of_the_previous_ca_stay_trusted(tls_kms: KmsHarness) -> None:
    kms = tls_kms
    old_cert, old_bundle = await release(kms)
    assert len(old_bundle) == 1 and chains(old_cert, old_bundle)
    r = await rotate(kms)
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["key"] == "ca" and done["previous_id"] != done["id"]
    new_cert, bundle = await release(kms)
    assert [c.fingerprint(hashes.SHA256()).hex() for c in bundle] == [
        done["id"],
        done["previous_id"],
    ]
    new_cert.verify_directly_issued_by(bundle[0])  # issued by the new CA ...
    assert chains(old_cert, bundle)  # ... and the old certificate still chains to the bundle
    served = x509.load_pem_x509_certificates((await kms.http.get("/v1/ca")).content)
    assert served == bundle
    records = [r for r in await kms.audit() if r["kind"] == "key.rotate"]
    assert records[-1]["subject"] == "ca" and records[-1]["details"]["id"] == done["id"]


async def test_rotating_again_waits_for_the_longest_certificate(tls_kms: KmsHarness) -> None:
    kms = tls_kms
    first_cert, _ = await release(kms)
    assert (await rotate(kms)).status_code == 200
    r = await rotate(kms)
    assert r.status_code == 409 and r.json()["code"] == "kms.conflict", r.text
    kms.clock.advance(10 * 86400 + 31)  # the tls-cert secret's validity_days, plus the refresh
    assert (await rotate(kms)).status_code == 200
    _, bundle = await release(kms)
    assert len(bundle) == 2 and not chains(first_cert, bundle)  # the first CA is gone now
    assert (await rotate(kms, force=True)).status_code == 200


async def test_another_replica_issues_from_the_new_ca(
    tls_kms: KmsHarness, kms_process: Any
) -> None:
    kms = tls_kms
    async with kms_process(kms, kms.master) as replica:
        assert (await rotate(kms)).status_code == 200
        new_ca = kms.app.state.kms_state.keys.ca.cert
        replica.app.state.kms_state._signer_checked -= 31  # its periodic check is due
        cert, bundle = await release(replica)
        cert.verify_directly_issued_by(new_ca)
        assert bundle[0] == new_ca


async def test_a_planted_ca_certificate_fails_unsealing(
    tls_kms: KmsHarness, kms_process: Any
) -> None:
    kms = tls_kms
    assert (await rotate(kms)).status_code == 200
    attacker = CertificateAuthority.create(label="mallory", now=kms.clock.now)
    with kms.store.transaction() as tx:
        tx.c.execute(
            text("UPDATE kms_keys SET public = :p WHERE name = 'ca.prev'"),
            {"p": attacker.cert_pem()},
        )
    with pytest.raises(ConfigError, match="does not match its certificate"):
        async with kms_process(kms, kms.master):
            pass


async def test_a_rekey_keeps_both_cas(tls_kms: KmsHarness, kms_process: Any) -> None:
    kms = tls_kms
    assert (await rotate(kms)).status_code == 200
    bundle = (await kms.http.get("/v1/ca")).content
    new = MasterKey.generate()
    assert rekey(kms.store, kms.master, new).internal_keys == 3  # token, CA, previous CA
    async with kms_process(kms, new) as after:
        assert (await after.http.get("/v1/ca")).content == bundle
        cert, chain = await release(after)
        cert.verify_directly_issued_by(chain[0])
