"""SIGSTRUCTs built and signed here, for tests (sealpod never computes MRENCLAVE itself).

:func:`make_sigstruct` signs a SIGSTRUCT with an RSA-3072 (e=3) key exactly as Intel's SDM and
``gramine-sgx-sign`` do: PKCS#1 v1.5 with SHA-256 over header part || body part, modulus and
signature stored little-endian, Q1/Q2 computed from the signature.

Run as ``python -m sealpod.testing.sigstruct --manifest M --output O --sigfile S --key K`` it is
a stand-in for ``gramine-sgx-sign`` (tests put a wrapper named so on PATH): the "MRENCLAVE" it
writes is SHA-256 of the manifest file, which is NOT what Gramine measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sealpod.gramine.sigstruct import KEY_SIZE, Sigstruct, parse_sigstruct, sigstruct_q1_q2

_ZERO_SIG = bytes(KEY_SIZE)


def make_sigstruct(
    key: rsa.RSAPrivateKey,
    *,
    mr_enclave: bytes = bytes(range(32)),
    isv_prod_id: int = 7,
    isv_svn: int = 3,
    debug: bool = False,
    date: int = 0x20260315,
    vendor: int = 0,
) -> bytes:
    """A signed 1808-byte SIGSTRUCT."""
    flags = 0x04 | (0x02 if debug else 0)  # MODE64BIT (+ DEBUG)
    unsigned = Sigstruct(
        vendor=vendor, date=date, swdefined=0, modulus=_ZERO_SIG, exponent=3,
        signature=_ZERO_SIG, misc_select=0, misc_mask=0xFFFFFFFF, cet_attributes=0,
        cet_attributes_mask=0, isv_family_id=bytes(16),
        attributes=flags.to_bytes(8, "little") + (0x3).to_bytes(8, "little"),
        attribute_mask=bytes.fromhex("fdffffffffffffff1bfff9ffffffffff"),
        enclave_hash=mr_enclave, isv_ext_prod_id=bytes(16), isv_prod_id=isv_prod_id,
        isv_svn=isv_svn, q1=_ZERO_SIG, q2=_ZERO_SIG,
    )  # fmt: skip
    return resign(unsigned, key)


def resign(sig: Sigstruct, key: rsa.RSAPrivateKey) -> bytes:
    """``sig`` signed (again) with ``key``: modulus, exponent, signature, Q1 and Q2 replaced."""
    n = key.public_key().public_numbers().n
    with_key = dataclasses.replace(sig, modulus=n.to_bytes(KEY_SIZE, "little"), exponent=3)
    signature = key.sign(with_key.signed_bytes(), padding.PKCS1v15(), hashes.SHA256())
    s = int.from_bytes(signature, "big")
    q1, q2 = sigstruct_q1_q2(s, n)
    final = dataclasses.replace(with_key, signature=s.to_bytes(KEY_SIZE, "little"), q1=q1, q2=q2)
    return final.to_bytes()


def _fake_sign(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gramine-sgx-sign (sealpod test stand-in)")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--sigfile", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--date")
    args = parser.parse_args(argv)
    manifest = Path(args.manifest).read_bytes()
    key = serialization.load_pem_private_key(Path(args.key).read_bytes(), None)
    if not isinstance(key, rsa.RSAPrivateKey):
        print("key is not RSA", file=sys.stderr)
        return 1
    Path(args.output).write_bytes(manifest)
    raw = make_sigstruct(key, mr_enclave=hashlib.sha256(manifest).digest())
    parse_sigstruct(raw)
    Path(args.sigfile).write_bytes(raw)
    return 0


if __name__ == "__main__":
    sys.exit(_fake_sign(sys.argv[1:]))
