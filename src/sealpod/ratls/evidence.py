"""The interoperable RA-TLS evidence: CBOR-tagged ``[evidence, claims-buffer]`` (pure).

The format shared by Gramine (>= 1.8), rats-tls, Occlum and the Intel SGX SDK's attested TLS, as
the CCC Attestation SIG's "Interoperable RA-TLS" documents define it:

* the certificate extension ``tcg-dice-conceptual-message-wrapper`` (OID 2.23.133.5.4.9; the
  TCG DICE draft first called it ``tcg-dice-tagged-evidence``) holds the encoding of a CBOR tag
  around a definite-length array of two byte strings::

      <tag>([ evidence-bytes, claims-buffer ])

  with tag 60000 for Intel TEE quotes (SGX and TDX ECDSA quotes; the header tells them apart) and
  0x1a7504 for AMD SEV-SNP attestation reports (rats-tls's tag; the CCC documents define no SNP
  tag yet);
* ``claims-buffer`` is the encoding of a CBOR map from text to byte strings, holding at least
  ``"pubkey-hash"`` (and optionally ``"nonce"``, or other custom claims);
* the ``"pubkey-hash"`` value is itself the encoding of a CoSWID ``hash-entry``, a CBOR array
  ``[hash-alg-id, hash-value]``: the IANA "Named Information" hash id (1 = SHA-256, 7 = SHA-384,
  8 = SHA-512) and the hash of the certificate's DER ``SubjectPublicKeyInfo``;
* the TEE's 64-byte report data starts with SHA-256(claims-buffer), followed by 32 zero bytes.

So the binding chain is: report data -> SHA-256 of the claims buffer bytes -> pubkey-hash ->
hash of the DER SubjectPublicKeyInfo of the TLS certificate.

Decoding uses ``cbor2``; every size is bounded before it is trusted and every shape mismatch is a
:class:`~sealpod.errors.MalformedEvidence` naming the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import cbor2

from sealpod.errors import MalformedEvidence
from sealpod.verify.claims import TeeKind

TAG_INTEL_TEE_QUOTE = 60000
TAG_SEV_SNP_REPORT = 0x1A7504
TAGS: Mapping[int, str] = MappingProxyType(
    {TAG_INTEL_TEE_QUOTE: "intel-tee-quote", TAG_SEV_SNP_REPORT: "sev-snp-report"}
)
# IANA Named Information Hash Algorithm Registry ids -> (name, digest size).
HASH_ALGS: Mapping[int, tuple[str, int]] = MappingProxyType(
    {1: ("sha-256", 32), 7: ("sha-384", 48), 8: ("sha-512", 64)}
)
CLAIM_PUBKEY_HASH = "pubkey-hash"
CLAIM_NONCE = "nonce"
MAX_EXTENSION_SIZE = 256 * 1024  # a DCAP quote is 5-16 KiB; SNP endorsements a few KiB
MAX_EVIDENCE_SIZE = 128 * 1024
MAX_CLAIMS_SIZE = 16 * 1024
MAX_CLAIMS = 32
MAX_CLAIM_VALUE_SIZE = 4096
REPORT_DATA_SIZE = 64
_FIELD = "tcg-dice-evidence"
# What cbor2 raises on hostile input: its decode errors (truncation is CBORDecodeEOF), plus what
# huge declared lengths or deep nesting turn into.
CBOR_ERRORS = (
    cbor2.CBORDecodeError, EOFError, ValueError, TypeError, LookupError, RecursionError,
    MemoryError, OverflowError,
)  # fmt: skip
_CBOR_ERRORS = CBOR_ERRORS


@dataclass(frozen=True, slots=True, kw_only=True)
class HashEntry:
    """A CoSWID hash-entry ``[alg-id, value]``."""

    alg_id: int
    value: bytes

    @property
    def alg_name(self) -> str:
        return HASH_ALGS[self.alg_id][0]

    def matches(self, data: bytes) -> bool:
        """True when ``value`` is the hash of ``data`` under this entry's algorithm."""
        name = self.alg_name.replace("-", "")
        return hashlib.new(name, data).digest() == self.value

    def to_bytes(self) -> bytes:
        return cbor2.dumps([self.alg_id, self.value])


@dataclass(frozen=True, slots=True, kw_only=True)
class TaggedEvidence:
    """One decoded evidence extension. ``claims_buffer`` keeps the bytes the quote hashes."""

    tag: int
    evidence: bytes = field(repr=False)
    claims_buffer: bytes = field(repr=False)
    claims: Mapping[str, bytes] = field(repr=False)
    pubkey_hash: HashEntry

    @property
    def kind(self) -> TeeKind:
        """The evidence format: SGX or TDX (from the quote header) or SNP."""
        if self.tag == TAG_SEV_SNP_REPORT:
            return TeeKind.SNP
        tee_type = int.from_bytes(self.evidence[4:8], "little")
        return TeeKind.TDX if tee_type == 0x81 else TeeKind.SGX

    @property
    def nonce(self) -> bytes | None:
        return self.claims.get(CLAIM_NONCE)

    def expected_report_data(self) -> bytes:
        """SHA-256(claims-buffer) || 32 zero bytes: what the TEE's report data must be."""
        return claims_report_data(self.claims_buffer)

    def to_bytes(self) -> bytes:
        """The extension value (the inverse of :func:`parse_tagged_evidence`)."""
        return cbor2.dumps(cbor2.CBORTag(self.tag, [self.evidence, self.claims_buffer]))


def claims_report_data(claims_buffer: bytes) -> bytes:
    """The 64-byte report data that binds ``claims_buffer``."""
    return hashlib.sha256(claims_buffer).digest().ljust(REPORT_DATA_SIZE, b"\x00")


def encode_claims(spki_der: bytes, *, nonce: bytes | None = None) -> bytes:
    """The claims buffer for a certificate key: ``{"pubkey-hash": h'[1, SHA-256(SPKI)]'}`` (plus
    ``"nonce"`` when given), definite-length, canonical CBOR."""
    entry = HashEntry(alg_id=1, value=hashlib.sha256(spki_der).digest())
    claims: dict[str, bytes] = {CLAIM_PUBKEY_HASH: entry.to_bytes()}
    if nonce is not None:
        claims[CLAIM_NONCE] = nonce
    return cbor2.dumps(claims, canonical=True)


def encode_tagged_evidence(kind: TeeKind, evidence: bytes, claims_buffer: bytes) -> bytes:
    """The extension value for ``evidence`` of ``kind`` (SGX, TDX or SNP).

    Raises:
        MalformedEvidence: a kind the format has no tag for.
    """
    if kind in (TeeKind.SGX, TeeKind.TDX):
        tag = TAG_INTEL_TEE_QUOTE
    elif kind is TeeKind.SNP:
        tag = TAG_SEV_SNP_REPORT
    else:
        raise MalformedEvidence(f"RA-TLS evidence cannot carry {kind.value} evidence", field="tag")
    return cbor2.dumps(cbor2.CBORTag(tag, [evidence, claims_buffer]))


def _loads(data: bytes, what: str) -> object:
    try:
        return cbor2.loads(data)
    except _CBOR_ERRORS as exc:
        raise MalformedEvidence(f"RA-TLS {what} is not valid CBOR: {exc}", field=what) from exc


def parse_hash_entry(data: bytes) -> HashEntry:
    """Decode a pubkey-hash value (an encoded ``[alg-id, hash]``).

    Raises:
        MalformedEvidence: not such an array, an unknown algorithm or a wrong-sized hash.
    """
    item = _loads(data, CLAIM_PUBKEY_HASH)
    if not isinstance(item, list | tuple) or len(item) != 2:
        raise MalformedEvidence(
            "RA-TLS pubkey-hash is not a [hash-alg-id, hash-value] array", field=CLAIM_PUBKEY_HASH
        )
    alg, value = item
    if not isinstance(alg, int) or isinstance(alg, bool) or alg not in HASH_ALGS:
        raise MalformedEvidence(
            f"RA-TLS pubkey-hash algorithm is {alg!r}, expected 1 (sha-256), 7 (sha-384) or "
            "8 (sha-512)",
            field=CLAIM_PUBKEY_HASH,
        )
    size = HASH_ALGS[alg][1]
    if not isinstance(value, bytes) or len(value) != size:
        got = len(value) if isinstance(value, bytes) else type(value).__name__
        raise MalformedEvidence(
            f"RA-TLS pubkey-hash value is {got} bytes, expected {size} for {HASH_ALGS[alg][0]}",
            field=CLAIM_PUBKEY_HASH,
        )
    if HashEntry(alg_id=alg, value=value).to_bytes() != data:
        raise MalformedEvidence(
            "RA-TLS pubkey-hash is not a definite-length encoding of exactly one array",
            field=CLAIM_PUBKEY_HASH,
        )
    return HashEntry(alg_id=alg, value=value)


def parse_claims(data: bytes) -> dict[str, bytes]:
    """Decode a claims buffer: a map of at most 32 text keys to byte strings.

    Raises:
        MalformedEvidence: not such a map, oversized, or without ``pubkey-hash``.
    """
    if not data:
        raise MalformedEvidence("RA-TLS claims buffer is empty", field="claims")
    if len(data) > MAX_CLAIMS_SIZE:
        raise MalformedEvidence(
            f"RA-TLS claims buffer is {len(data)} bytes, expected at most {MAX_CLAIMS_SIZE}",
            field="claims",
        )
    item = _loads(data, "claims")
    if not isinstance(item, dict):
        raise MalformedEvidence(
            f"RA-TLS claims are a {type(item).__name__}, expected a map", field="claims"
        )
    if len(item) > MAX_CLAIMS:
        raise MalformedEvidence(
            f"RA-TLS claims hold {len(item)} entries, expected at most {MAX_CLAIMS}", field="claims"
        )
    claims: dict[str, bytes] = {}
    for key, value in item.items():
        if not isinstance(key, str) or not isinstance(value, bytes):
            raise MalformedEvidence(
                "RA-TLS claims must map text names to byte strings", field="claims"
            )
        if len(value) > MAX_CLAIM_VALUE_SIZE:
            raise MalformedEvidence(
                f"RA-TLS claim {key[:40]!r} is {len(value)} bytes, expected at most "
                f"{MAX_CLAIM_VALUE_SIZE}",
                field="claims",
            )
        claims[key] = value
    if CLAIM_PUBKEY_HASH not in claims:
        raise MalformedEvidence("RA-TLS claims have no 'pubkey-hash'", field="claims")
    return claims


def parse_tagged_evidence(data: bytes) -> TaggedEvidence:
    """Decode the value of a 2.23.133.5.4.9 extension.

    Raises:
        MalformedEvidence: oversized, not CBOR, an unknown tag, not a two-byte-string array,
            trailing bytes, or malformed claims.
    """
    if len(data) > MAX_EXTENSION_SIZE:
        raise MalformedEvidence(
            f"RA-TLS evidence extension is {len(data)} bytes, expected at most "
            f"{MAX_EXTENSION_SIZE}",
            field=_FIELD,
        )
    item = _loads(data, _FIELD)
    if not isinstance(item, cbor2.CBORTag):
        raise MalformedEvidence(
            f"RA-TLS evidence is a {type(item).__name__}, expected a CBOR tag", field=_FIELD
        )
    if item.tag not in TAGS:
        raise MalformedEvidence(
            f"RA-TLS evidence tag is {item.tag}, expected {TAG_INTEL_TEE_QUOTE} (Intel TEE "
            f"quote) or {TAG_SEV_SNP_REPORT:#x} (SEV-SNP report)",
            field="tag",
        )
    value = item.value
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, bytes) for v in value)
    ):
        raise MalformedEvidence(
            "RA-TLS evidence is not an array of two byte strings [evidence, claims]", field=_FIELD
        )
    evidence, claims_buffer = value
    if not evidence or len(evidence) > MAX_EVIDENCE_SIZE:
        raise MalformedEvidence(
            f"RA-TLS evidence is {len(evidence)} bytes, expected 1..{MAX_EVIDENCE_SIZE}",
            field="evidence",
        )
    claims = parse_claims(claims_buffer)
    parsed = TaggedEvidence(
        tag=item.tag,
        evidence=evidence,
        claims_buffer=claims_buffer,
        claims=MappingProxyType(claims),
        pubkey_hash=parse_hash_entry(claims[CLAIM_PUBKEY_HASH]),
    )
    if parsed.to_bytes() != data:
        # Indefinite lengths, non-minimal integers or trailing bytes: the spec asks for the
        # definite-length encoding, and one item, so anything else is refused.
        raise MalformedEvidence(
            "RA-TLS evidence is not the definite-length encoding of one tagged array",
            field=_FIELD,
        )
    return parsed
