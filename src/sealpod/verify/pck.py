"""Intel SGX PCK certificate extensions (OID 1.2.840.113741.1.13.1), decoded with asn1crypto.

Every PCK certificate carries one non-critical extension whose value is a SEQUENCE of
``{OID, value}`` pairs (Intel "SGX PCK Certificate and Certificate Revocation List Profile
Specification", section 1.5):

    .1  PPID                 OCTET STRING (16)
    .2  TCB                  SEQUENCE of {OID .2.1 .. .2.16 INTEGER (SGX TCB component SVNs),
                                          .2.17 INTEGER (PCESVN), .2.18 OCTET STRING (16, CPUSVN)}
    .3  PCE-ID               OCTET STRING (2)
    .4  FMSPC                OCTET STRING (6)
    .5  SGX Type             ENUMERATED (0 standard, 1 scalable, 2 scalable with integrity)
    .6  PlatformInstanceID   OCTET STRING (16), platform CA certificates only
    .7  Configuration        SEQUENCE of {.7.1 dynamicPlatform, .7.2 cachedKeys,
                                          .7.3 SMTEnabled} BOOLEAN, platform CA only

Mandatory entries must appear exactly once with the stated sizes; unknown entries are ignored
(Intel adds them over time). Any decoding problem is a :class:`CertificateError`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from asn1crypto import core
from cryptography import x509

from sealpod.errors import CertificateError

SGX_EXTENSIONS_OID = "1.2.840.113741.1.13.1"
PPID_SIZE = 16
CPU_SVN_SIZE = 16
PCE_ID_SIZE = 2
FMSPC_SIZE = 6
PLATFORM_INSTANCE_ID_SIZE = 16
TCB_COMPONENT_COUNT = 16

_STEP = "Step 3: PCK certificate chain"


# The extension's ASN.1 schema, defined once: read here, written by the simulated platform
# (sealpod.tee.sim_pki) and the test builders (sealpod.testing.dcap_builders).
class SgxEntry(core.Sequence):  # type: ignore[misc]
    """One ``{OID, value}`` pair of the SGX extension."""

    _fields = [("id", core.ObjectIdentifier), ("value", core.Any)]  # noqa: RUF012


class SgxEntries(core.SequenceOf):  # type: ignore[misc]
    """The SGX extension value, and the TCB and Configuration entries' values."""

    _child_spec = SgxEntry


class SgxType(core.Integer):  # type: ignore[misc]
    """ENUMERATED read as its integer value (0 standard, 1 scalable, 2 with integrity)."""

    tag = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class PckTcb:
    """The platform TCB the PCK certificate was issued for."""

    comp_svns: tuple[int, ...]  # SGX TCB components 1..16, in order
    pce_svn: int
    cpu_svn: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class PckExtensions:
    """Decoded SGX extensions of a PCK certificate."""

    ppid: bytes
    tcb: PckTcb
    pce_id: bytes
    fmspc: bytes
    sgx_type: int
    platform_instance_id: bytes | None = None
    dynamic_platform: bool | None = None
    cached_keys: bool | None = None
    smt_enabled: bool | None = None


def _fail(message: str) -> CertificateError:
    return CertificateError(f"PCK certificate SGX extension: {message}", step=_STEP)


def _index(entries: SgxEntries, arc: str, what: str) -> dict[int, core.Any]:
    """Map the last OID arc of each entry under ``arc`` to its value; refuse duplicates."""
    out: dict[int, core.Any] = {}
    prefix = arc + "."
    for entry in entries:
        oid = entry["id"].dotted
        if not oid.startswith(prefix) or "." in oid[len(prefix) :]:
            continue  # not ours, or a deeper arc: unknown, ignored
        key = int(oid[len(prefix) :])
        if key in out:
            raise _fail(f"{what} entry {oid} appears twice")
        out[key] = entry["value"]
    return out


def _octets(values: dict[int, core.Any], key: int, size: int, name: str) -> bytes:
    if key not in values:
        raise _fail(f"{name} is missing")
    value = values[key].parse(core.OctetString).native
    if not isinstance(value, bytes) or len(value) != size:
        got = len(value) if isinstance(value, bytes) else type(value).__name__
        raise _fail(f"{name} is {got} bytes, expected {size}")
    return value


def _integer(values: dict[int, core.Any], key: int, limit: int, name: str) -> int:
    if key not in values:
        raise _fail(f"{name} is missing")
    value = values[key].parse(core.Integer).native
    if not isinstance(value, int) or not 0 <= value <= limit:
        raise _fail(f"{name} is {value}, expected 0..{limit}")
    return value


def _boolean(values: dict[int, core.Any], key: int) -> bool | None:
    if key not in values:
        return None
    return bool(values[key].parse(core.Boolean).native)


# Cached by content: appraise and the verifier both decode the same PCK certificate per quote,
# and PckExtensions is immutable.
@functools.lru_cache(maxsize=256)
def parse_sgx_extensions(value: bytes) -> PckExtensions:
    """Decode the DER value of the SGX extension.

    Raises:
        CertificateError: the value is not valid DER of the expected shape, a mandatory entry
            is missing or repeated, or a size or range is wrong.
    """
    try:
        top = _index(SgxEntries.load(value, strict=True), SGX_EXTENSIONS_OID, "SGX extension")
        if 2 not in top:
            raise _fail("TCB is missing")
        tcb_entries = top[2].parse(SgxEntries)
        tcb_values = _index(tcb_entries, SGX_EXTENSIONS_OID + ".2", "TCB")
        comps = tuple(
            _integer(tcb_values, i, 255, f"TCB component {i} SVN")
            for i in range(1, TCB_COMPONENT_COUNT + 1)
        )
        tcb = PckTcb(
            comp_svns=comps,
            pce_svn=_integer(tcb_values, 17, 0xFFFF, "PCESVN"),
            cpu_svn=_octets(tcb_values, 18, CPU_SVN_SIZE, "CPUSVN"),
        )
        if 5 not in top:
            raise _fail("SGX Type is missing")
        sgx_type = top[5].parse(SgxType).native
        if not isinstance(sgx_type, int) or sgx_type < 0:
            raise _fail(f"SGX Type is {sgx_type}, expected a non-negative value")
        instance_id = None
        if 6 in top:
            instance_id = _octets(top, 6, PLATFORM_INSTANCE_ID_SIZE, "PlatformInstanceID")
        config: dict[int, core.Any] = {}
        if 7 in top:
            config = _index(top[7].parse(SgxEntries), SGX_EXTENSIONS_OID + ".7", "Configuration")
        return PckExtensions(
            ppid=_octets(top, 1, PPID_SIZE, "PPID"),
            tcb=tcb,
            pce_id=_octets(top, 3, PCE_ID_SIZE, "PCE-ID"),
            fmspc=_octets(top, 4, FMSPC_SIZE, "FMSPC"),
            sgx_type=sgx_type,
            platform_instance_id=instance_id,
            dynamic_platform=_boolean(config, 1),
            cached_keys=_boolean(config, 2),
            smt_enabled=_boolean(config, 3),
        )
    except CertificateError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise _fail(f"does not decode ({exc})") from exc


def pck_extensions(cert: x509.Certificate) -> PckExtensions:
    """Find and decode the SGX extension of a PCK certificate.

    Raises:
        CertificateError: the extension is absent, repeated or malformed.
    """
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSIONS_OID))
    except x509.ExtensionNotFound as exc:
        raise _fail("the PCK certificate has no SGX extension") from exc
    except (ValueError, x509.DuplicateExtension) as exc:
        raise _fail(f"the certificate's extensions do not parse ({exc})") from exc
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise _fail("unexpected extension type")
    return parse_sgx_extensions(ext.value.value)
