"""SEV-SNP evidence in the JSON form Trustee's KBS clients send, and back.

A Confidential Containers guest sends ``tee-evidence`` for ``tee = "snp"`` as the JSON
serialization of its attestation report, field by field (byte arrays as lists of numbers, each
TCB_VERSION as ``{fmc, bootloader, tee, snp, microcode}``, firmware versions as
``{major, minor, build}``, the signature as ``{r, s}``), plus a ``cert_chain`` of
``{cert_type, data}`` entries (the VCEK or VLEK, and possibly ASK/ASVK and ARK) in DER.

:func:`report_from_trustee` rebuilds the 0x4A0-byte report with :class:`SnpReport` (reserved
ranges zero, as the firmware writes them) and checks it with the ordinary parser; the verifier
then checks the signature over the rebuilt bytes, so a field that was changed, dropped or placed
wrongly fails there. :func:`trustee_from_report` is the inverse (for guests and tests).
A report of a Turin-or-later CPU (CPUID family 1Ah+) carries ``fmc`` in every TCB, an older one
in none; anything else is refused.
Pure: no I/O. Every malformed input raises :class:`MalformedEvidence`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sealpod.crypto import pem
from sealpod.errors import MalformedEvidence
from sealpod.evidence.snp_report import (
    CHIP_ID_SIZE,
    ECDSA_COMPONENT_SIZE,
    FAMILY_ID_SIZE,
    HOST_DATA_SIZE,
    IMAGE_ID_SIZE,
    KEY_DIGEST_SIZE,
    MEASUREMENT_SIZE,
    REPORT_DATA_SIZE,
    REPORT_ID_SIZE,
    SnpReport,
    TcbVersion,
    parse_report,
)

#: cert_type values this verifier can use (the rest of AMD's chain comes from its own roots).
CERT_TYPES = ("VCEK", "VLEK", "ASK", "ASVK", "ARK")
MAX_CERTS = 8
MAX_CERT_SIZE = 8 * 1024

_U8 = Annotated[int, Field(ge=0, le=0xFF)]
_U32 = Annotated[int, Field(ge=0, le=0xFFFF_FFFF)]
_U64 = Annotated[int, Field(ge=0, le=0xFFFF_FFFF_FFFF_FFFF)]


def _bytes_field(size: int) -> Any:
    return Field(min_length=size, max_length=size)


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class _Tcb(_Model):
    fmc: _U8 | None = None
    bootloader: _U8
    tee: _U8
    snp: _U8
    microcode: _U8


class _Version(_Model):
    major: _U8
    minor: _U8
    build: _U8


class _Signature(_Model):
    r: list[_U8] = _bytes_field(ECDSA_COMPONENT_SIZE)
    s: list[_U8] = _bytes_field(ECDSA_COMPONENT_SIZE)


class _Report(_Model):
    version: _U32
    guest_svn: _U32
    policy: _U64
    family_id: list[_U8] = _bytes_field(FAMILY_ID_SIZE)
    image_id: list[_U8] = _bytes_field(IMAGE_ID_SIZE)
    vmpl: _U32
    sig_algo: _U32
    current_tcb: _Tcb
    plat_info: _U64
    key_info: _U32
    report_data: list[_U8] = _bytes_field(REPORT_DATA_SIZE)
    measurement: list[_U8] = _bytes_field(MEASUREMENT_SIZE)
    host_data: list[_U8] = _bytes_field(HOST_DATA_SIZE)
    id_key_digest: list[_U8] = _bytes_field(KEY_DIGEST_SIZE)
    author_key_digest: list[_U8] = _bytes_field(KEY_DIGEST_SIZE)
    report_id: list[_U8] = _bytes_field(REPORT_ID_SIZE)
    report_id_ma: list[_U8] = _bytes_field(REPORT_ID_SIZE)
    reported_tcb: _Tcb
    cpuid_fam_id: _U8 | None = None  # v3+
    cpuid_mod_id: _U8 | None = None
    cpuid_step: _U8 | None = None
    chip_id: list[_U8] = _bytes_field(CHIP_ID_SIZE)
    committed_tcb: _Tcb
    current: _Version
    committed: _Version
    launch_tcb: _Tcb
    launch_mit_vector: _U64 | None = None  # v5
    current_mit_vector: _U64 | None = None
    signature: _Signature


class _Cert(_Model):
    cert_type: str = Field(max_length=16)
    data: list[_U8] = Field(min_length=1, max_length=MAX_CERT_SIZE)


class TrusteeSnpEvidence(_Model):
    """``{attestation_report, cert_chain?}`` as Trustee's SNP attester sends it."""

    attestation_report: _Report
    cert_chain: list[_Cert] | None = Field(default=None, max_length=MAX_CERTS)


def _tcb(value: _Tcb, *, turin: bool, name: str) -> int:
    if (value.fmc is not None) != turin:
        raise MalformedEvidence(
            f"SNP evidence: {name} {'lacks' if turin else 'has'} 'fmc', which the "
            f"{'Turin' if turin else 'pre-Turin'} TCB layout of this report "
            f"{'has' if turin else 'lacks'}",
            field=name,
        )
    return TcbVersion(
        fmc=value.fmc,
        bootloader=value.bootloader,
        tee=value.tee,
        snp=value.snp,
        microcode=value.microcode,
    ).to_u64()


def report_from_trustee(evidence: Mapping[str, Any]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The raw report and the ``(cert_type, DER)`` certificates of Trustee SNP evidence.

    Raises:
        MalformedEvidence: not this JSON shape, a value out of range or of the wrong length,
            mixed TCB layouts, an unknown cert_type, or a rebuilt report the parser refuses.
    """
    try:
        parsed = TrusteeSnpEvidence.model_validate(evidence)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise MalformedEvidence(
            f"SNP evidence (Trustee JSON): {where or 'body'}: {first.get('msg', 'invalid')}",
            field=where or "tee-evidence",
        ) from None
    r = parsed.attestation_report
    # The layout follows the CPU (family 1Ah and later: Turin), as the parser decodes it; a v2
    # report names no CPU, so its TCBs tell.
    turin = r.cpuid_fam_id >= 0x1A if r.cpuid_fam_id is not None else r.current_tcb.fmc is not None
    report = SnpReport(
        version=r.version,
        guest_svn=r.guest_svn,
        policy=r.policy,
        family_id=bytes(r.family_id),
        image_id=bytes(r.image_id),
        vmpl=r.vmpl,
        signature_algo=r.sig_algo,
        current_tcb=_tcb(r.current_tcb, turin=turin, name="current_tcb"),
        platform_info=r.plat_info,
        key_info=r.key_info,
        report_data=bytes(r.report_data),
        measurement=bytes(r.measurement),
        host_data=bytes(r.host_data),
        id_key_digest=bytes(r.id_key_digest),
        author_key_digest=bytes(r.author_key_digest),
        report_id=bytes(r.report_id),
        report_id_ma=bytes(r.report_id_ma),
        reported_tcb=_tcb(r.reported_tcb, turin=turin, name="reported_tcb"),
        cpuid_fam_id=r.cpuid_fam_id,
        cpuid_mod_id=r.cpuid_mod_id,
        cpuid_step=r.cpuid_step,
        chip_id=bytes(r.chip_id),
        committed_tcb=_tcb(r.committed_tcb, turin=turin, name="committed_tcb"),
        current_build=r.current.build,
        current_minor=r.current.minor,
        current_major=r.current.major,
        committed_build=r.committed.build,
        committed_minor=r.committed.minor,
        committed_major=r.committed.major,
        launch_tcb=_tcb(r.launch_tcb, turin=turin, name="launch_tcb"),
        launch_mit_vector=r.launch_mit_vector,
        current_mit_vector=r.current_mit_vector,
        signature_r=bytes(r.signature.r),
        signature_s=bytes(r.signature.s),
    )
    raw = report.to_bytes()
    parse_report(raw)  # the same structural checks as binary evidence
    certs: list[tuple[str, bytes]] = []
    for i, cert in enumerate(parsed.cert_chain or []):
        if cert.cert_type not in CERT_TYPES:
            raise MalformedEvidence(
                f"SNP evidence: cert_chain[{i}].cert_type is {cert.cert_type!r}, expected one "
                f"of {', '.join(CERT_TYPES)}",
                field="cert_chain",
            )
        certs.append((cert.cert_type, bytes(cert.data)))
    return raw, certs


def certificates_pem(certs: Sequence[tuple[str, bytes]]) -> str | None:
    """The certificates as one PEM text (None when there are none); DER is not parsed here."""
    if not certs:
        return None
    return pem.encode_certificates([der for _, der in certs])


def trustee_from_report(raw: bytes, certs: Sequence[tuple[str, bytes]] = ()) -> dict[str, Any]:
    """The Trustee JSON form of a raw report (and ``(cert_type, DER)`` certificates).

    Raises:
        MalformedEvidence: ``raw`` is not a report the parser accepts.
    """
    report = parse_report(raw)
    turin = report.turin_layout()

    def tcb(value: int) -> dict[str, int | None]:
        t = TcbVersion.from_u64(value, turin=turin)
        return {
            "fmc": t.fmc,
            "bootloader": t.bootloader,
            "tee": t.tee,
            "snp": t.snp,
            "microcode": t.microcode,
        }

    body: dict[str, Any] = {
        "version": report.version,
        "guest_svn": report.guest_svn,
        "policy": report.policy,
        "family_id": list(report.family_id),
        "image_id": list(report.image_id),
        "vmpl": report.vmpl,
        "sig_algo": report.signature_algo,
        "current_tcb": tcb(report.current_tcb),
        "plat_info": report.platform_info,
        "key_info": report.key_info,
        "report_data": list(report.report_data),
        "measurement": list(report.measurement),
        "host_data": list(report.host_data),
        "id_key_digest": list(report.id_key_digest),
        "author_key_digest": list(report.author_key_digest),
        "report_id": list(report.report_id),
        "report_id_ma": list(report.report_id_ma),
        "reported_tcb": tcb(report.reported_tcb),
        "chip_id": list(report.chip_id),
        "committed_tcb": tcb(report.committed_tcb),
        "current": {
            "major": report.current_major,
            "minor": report.current_minor,
            "build": report.current_build,
        },
        "committed": {
            "major": report.committed_major,
            "minor": report.committed_minor,
            "build": report.committed_build,
        },
        "launch_tcb": tcb(report.launch_tcb),
        "signature": {"r": list(report.signature_r), "s": list(report.signature_s)},
    }
    if report.version >= 3:
        body["cpuid_fam_id"] = report.cpuid_fam_id
        body["cpuid_mod_id"] = report.cpuid_mod_id
        body["cpuid_step"] = report.cpuid_step
    if report.version >= 5:
        body["launch_mit_vector"] = report.launch_mit_vector
        body["current_mit_vector"] = report.current_mit_vector
    evidence: dict[str, Any] = {"attestation_report": body}
    if certs:
        evidence["cert_chain"] = [{"cert_type": t, "data": list(der)} for t, der in certs]
    return evidence


def der_certificates(text: str | None) -> list[bytes]:
    """DER of each certificate in a PEM text, in order (the armour only; nothing is parsed).

    Raises:
        MalformedEvidence: text that holds no PEM certificate or a block that is not base64.
    """
    if not text:
        return []
    try:
        return list(pem.decode(text.encode("ascii", "replace")))
    except pem.PemError as exc:
        raise MalformedEvidence(f"SNP certificates: {exc}", field="certificates") from exc
