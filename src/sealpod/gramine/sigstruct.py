"""SGX SIGSTRUCT: the 1808-byte enclave signature structure that ``gramine-sgx-sign`` writes (.sig).

Layout from Intel SDM Vol. 3D, "Enclave Signature Structure (SIGSTRUCT)" (Table 38-19), all
integers little-endian::

    offset size  field                  signed?
         0   16  HEADER                 yes  06000000 E1000000 00000100 00000000
        16    4  VENDOR                 yes  0x0000 (or 0x8086 for Intel enclaves)
        20    4  DATE                   yes  yyyymmdd as BCD (0x20240315)
        24   16  HEADER2                yes  01010000 60000000 60000000 01000000
        40    4  SWDEFINED              yes
        44   84  reserved (zero)        yes
       128  384  MODULUS                no   RSA-3072 modulus, little-endian
       512    4  EXPONENT               no   must be 3
       516  384  SIGNATURE              no   little-endian RSA signature
       900    4  MISCSELECT             yes
       904    4  MISCMASK               yes
       908    1  CET_ATTRIBUTES         yes
       909    1  CET_ATTRIBUTES_MASK    yes
       910    2  reserved (zero)        yes
       912   16  ISVFAMILYID            yes
       928   16  ATTRIBUTES             yes  flags u64 || xfrm u64
       944   16  ATTRIBUTEMASK          yes
       960   32  ENCLAVEHASH            yes  = MRENCLAVE
       992   16  reserved (zero)        yes
      1008   16  ISVEXTPRODID           yes
      1024    2  ISVPRODID              yes
      1026    2  ISVSVN                 yes
      1028   12  reserved (zero)        no
      1040  384  Q1                     no   floor(s^2 / n)
      1424  384  Q2                     no   floor((s^2 mod n) * s / n)

The signature is RSASSA-PKCS1-v1_5 with SHA-256 over bytes 0..128 followed by bytes 900..1028
(SDM: "the signing procedure uses the EMSA-PKCS1-v1.5 format"). MRSIGNER, as the CPU computes it
at EINIT, is SHA-256 of the 384 modulus bytes exactly as stored (little-endian).

Parsing checks structure only (sizes, constant headers, zero reserved ranges); whether the debug
attribute or a product id is acceptable is policy. :func:`verify_sigstruct` checks the RSA
signature (with ``cryptography``), the exponent and Q1/Q2.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sealpod._binary import Reader, Writer
from sealpod.errors import EvidenceSignatureError, MalformedEvidence

SIGSTRUCT_SIZE = 1808
HEADER = bytes.fromhex("06000000e10000000000010000000000")
HEADER2 = bytes.fromhex("01010000600000006000000001000000")
KEY_SIZE = 384  # RSA-3072 modulus, signature, Q1 and Q2
RSA_EXPONENT = 3
SIGNED_HEAD_SIZE = 128  # bytes 0..128 are signed
SIGNED_BODY_OFFSET = 900  # and bytes 900..1028
SIGNED_BODY_SIZE = 128
VENDOR_INTEL = 0x8086
ATTRIBUTE_DEBUG = 0x02  # ATTRIBUTES.FLAGS bit 1 (SDM "SECS.ATTRIBUTES")
ATTRIBUTE_MODE64BIT = 0x04
_STEP = "SIGSTRUCT signature"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sigstruct:
    """A parsed SIGSTRUCT; ``raw`` keeps the bytes exactly as read."""

    vendor: int
    date: int  # the raw u32, BCD yyyymmdd
    swdefined: int
    modulus: bytes = field(repr=False)  # little-endian, as stored
    exponent: int
    signature: bytes = field(repr=False)  # little-endian, as stored
    misc_select: int
    misc_mask: int
    cet_attributes: int
    cet_attributes_mask: int
    isv_family_id: bytes
    attributes: bytes  # flags u64 || xfrm u64
    attribute_mask: bytes
    enclave_hash: bytes  # MRENCLAVE
    isv_ext_prod_id: bytes
    isv_prod_id: int
    isv_svn: int
    q1: bytes = field(repr=False)
    q2: bytes = field(repr=False)
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def mr_enclave(self) -> bytes:
        return self.enclave_hash

    @property
    def mr_signer(self) -> bytes:
        """SHA-256 of the little-endian modulus: the MRSIGNER the CPU reports."""
        return hashlib.sha256(self.modulus).digest()

    @property
    def attribute_flags(self) -> int:
        return int.from_bytes(self.attributes[:8], "little")

    @property
    def debug(self) -> bool:
        return bool(self.attribute_flags & ATTRIBUTE_DEBUG)

    @property
    def date_text(self) -> str:
        """The signing date as ``YYYY-MM-DD`` (its hex digits read as decimal, as Gramine and the
        SGX SDK write it); the raw value in hex when it is not valid BCD."""
        text = f"{self.date:08x}"
        if not text.isdigit():
            return f"0x{text}"
        return f"{text[0:4]}-{text[4:6]}-{text[6:8]}"

    def signed_bytes(self) -> bytes:
        """The 256 bytes the signature covers (SDM: header part || body part)."""
        data = self.to_bytes()
        return (
            data[:SIGNED_HEAD_SIZE]
            + data[SIGNED_BODY_OFFSET : SIGNED_BODY_OFFSET + SIGNED_BODY_SIZE]
        )

    def to_bytes(self) -> bytes:
        """Serialize (the inverse of :func:`parse_sigstruct`)."""
        w = Writer()
        w.raw(HEADER).u32(self.vendor).u32(self.date).raw(HEADER2).u32(self.swdefined).zeros(84)
        w.raw(self.modulus, KEY_SIZE).u32(self.exponent).raw(self.signature, KEY_SIZE)
        w.u32(self.misc_select).u32(self.misc_mask).u8(self.cet_attributes)
        w.u8(self.cet_attributes_mask).zeros(2).raw(self.isv_family_id, 16)
        w.raw(self.attributes, 16).raw(self.attribute_mask, 16).raw(self.enclave_hash, 32)
        w.zeros(16).raw(self.isv_ext_prod_id, 16).u16(self.isv_prod_id).u16(self.isv_svn)
        w.zeros(12).raw(self.q1, KEY_SIZE).raw(self.q2, KEY_SIZE)
        return w.getvalue()

    def to_json(self) -> dict[str, object]:
        """JSON-ready identity (no key material beyond the public modulus hash)."""
        return {
            "mr_enclave": self.mr_enclave.hex(),
            "mr_signer": self.mr_signer.hex(),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "debug": self.debug,
            "attributes": self.attributes.hex(),
            "attribute_mask": self.attribute_mask.hex(),
            "misc_select": f"0x{self.misc_select:08x}",
            "misc_mask": f"0x{self.misc_mask:08x}",
            "vendor": f"0x{self.vendor:04x}",
            "date": self.date_text,
            "exponent": self.exponent,
        }


def parse_sigstruct(raw: bytes | bytearray | memoryview) -> Sigstruct:
    """Parse a SIGSTRUCT (exactly 1808 bytes).

    Raises:
        MalformedEvidence: wrong size, wrong HEADER/HEADER2, or a non-zero reserved byte
            (naming the field and its offset).
    """
    data = bytes(raw)
    if len(data) != SIGSTRUCT_SIZE:
        raise MalformedEvidence(
            f"SIGSTRUCT is {len(data)} bytes, expected {SIGSTRUCT_SIZE}",
            field="sigstruct",
            offset=min(len(data), SIGSTRUCT_SIZE),
        )
    r = Reader(data, name="SIGSTRUCT")
    _constant(r, HEADER, "header")
    vendor = r.u32("vendor")
    date = r.u32("date")
    _constant(r, HEADER2, "header2")
    swdefined = r.u32("swdefined")
    r.zeros(84, "reserved1")
    modulus = r.take(KEY_SIZE, "modulus")
    exponent = r.u32("exponent")
    signature = r.take(KEY_SIZE, "signature")
    misc_select = r.u32("misc_select")
    misc_mask = r.u32("misc_mask")
    cet_attributes = r.u8("cet_attributes")
    cet_attributes_mask = r.u8("cet_attributes_mask")
    r.zeros(2, "reserved2")
    isv_family_id = r.take(16, "isv_family_id")
    attributes = r.take(16, "attributes")
    attribute_mask = r.take(16, "attribute_mask")
    enclave_hash = r.take(32, "enclave_hash")
    r.zeros(16, "reserved3")
    isv_ext_prod_id = r.take(16, "isv_ext_prod_id")
    isv_prod_id = r.u16("isv_prod_id")
    isv_svn = r.u16("isv_svn")
    r.zeros(12, "reserved4")
    q1 = r.take(KEY_SIZE, "q1")
    q2 = r.take(KEY_SIZE, "q2")
    r.end()
    return Sigstruct(
        vendor=vendor, date=date, swdefined=swdefined, modulus=modulus, exponent=exponent,
        signature=signature, misc_select=misc_select, misc_mask=misc_mask,
        cet_attributes=cet_attributes, cet_attributes_mask=cet_attributes_mask,
        isv_family_id=isv_family_id, attributes=attributes, attribute_mask=attribute_mask,
        enclave_hash=enclave_hash, isv_ext_prod_id=isv_ext_prod_id, isv_prod_id=isv_prod_id,
        isv_svn=isv_svn, q1=q1, q2=q2, raw=data,
    )  # fmt: skip


def _constant(r: Reader, expected: bytes, name: str) -> None:
    start = r.offset
    value = r.take(len(expected), name)
    if value != expected:
        raise MalformedEvidence(
            f"SIGSTRUCT: field {name!r} is {value.hex()}, expected {expected.hex()}",
            field=name,
            offset=start,
        )


def public_key(sig: Sigstruct) -> rsa.RSAPublicKey:
    """The signer's RSA public key (modulus and exponent from the structure).

    Raises:
        EvidenceSignatureError: the exponent is not 3, or the modulus is not a 3072-bit number.
    """
    if sig.exponent != RSA_EXPONENT:
        raise EvidenceSignatureError(
            f"SIGSTRUCT exponent is {sig.exponent}, expected {RSA_EXPONENT}",
            step=_STEP,
            expected=RSA_EXPONENT,
            actual=sig.exponent,
        )
    n = int.from_bytes(sig.modulus, "little")
    if n.bit_length() != KEY_SIZE * 8 or n % 2 == 0:
        raise EvidenceSignatureError(
            f"SIGSTRUCT modulus is a {n.bit_length()}-bit number, expected an odd 3072-bit one",
            step=_STEP,
        )
    return rsa.RSAPublicNumbers(RSA_EXPONENT, n).public_key()


def verify_sigstruct(sig: Sigstruct) -> None:
    """Check the RSA-3072 signature over the signed parts, and Q1/Q2.

    Raises:
        EvidenceSignatureError: a wrong exponent or modulus, a signature that does not verify, or
            Q1/Q2 that do not match the signature (EINIT would refuse them).
    """
    key = public_key(sig)
    s = int.from_bytes(sig.signature, "little")
    n = key.public_numbers().n
    if s >= n:
        raise EvidenceSignatureError(
            "SIGSTRUCT signature is not smaller than the modulus", step=_STEP
        )
    try:
        key.verify(
            s.to_bytes(KEY_SIZE, "big"), sig.signed_bytes(), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature as exc:
        raise EvidenceSignatureError(
            "SIGSTRUCT signature does not verify with its own modulus (the signed fields were "
            "changed after signing)",
            step=_STEP,
        ) from exc
    q1, q2 = sigstruct_q1_q2(s, n)
    if sig.q1 != q1 or sig.q2 != q2:
        raise EvidenceSignatureError(
            "SIGSTRUCT Q1/Q2 do not match the signature (EINIT would refuse the enclave)",
            step=_STEP,
        )


def sigstruct_q1_q2(signature: int, modulus: int) -> tuple[bytes, bytes]:
    """Q1 = floor(s^2 / n), Q2 = floor((s^2 mod n) * s / n), each 384 bytes little-endian (the
    helper values EINIT uses to check the signature without a division)."""
    s2 = signature * signature
    q1 = s2 // modulus
    q2 = (s2 % modulus) * signature // modulus
    return q1.to_bytes(KEY_SIZE, "little"), q2.to_bytes(KEY_SIZE, "little")
