"""TCB evaluation for DCAP quotes, as Intel's Quote Verification Library does it.

Source of the rules: Intel SGX-TDX-DCAP-QuoteVerificationLibrary (``QuoteVerifier.cpp``,
``Checks/TcbLevelCheck.cpp``, ``Checks/TdxModuleCheck.cpp``, ``EnclaveReportVerifier.cpp``):

- Platform level: TCB levels are taken from highest to lowest; the first level whose 16 SGX
  component SVNs and PCESVN are all <= the PCK certificate's is the SGX level; for TDX the first
  of those levels whose TDX component SVNs are also <= the quote's ``tee_tcb_svn`` is the TDX
  level. When ``tee_tcb_svn[1]`` (the TDX module major version) is non-zero, components 0 and 1
  are not compared: the module's SVN is judged by its module identity instead.
- TDX module: with major version 0 the quote's MRSIGNERSEAM and SEAMATTRIBUTES must match
  ``tdxModule``; otherwise they must match the ``tdxModuleIdentities`` entry ``TDX_%02X`` of that
  version, whose TCB levels (by ``tee_tcb_svn[0]``) give the module's status.
- QE: MRSIGNER, ISVPRODID, MISCSELECT and ATTRIBUTES (masked) must match the QE identity; its
  ISVSVN selects the QE TCB level.
- Merge: a module or QE status of OutOfDate turns UpToDate/SWHardeningNeeded into OutOfDate and
  ConfigurationNeeded/ConfigurationAndSWHardeningNeeded into OutOfDateConfigurationNeeded;
  Revoked wins; otherwise the platform status stands. Advisory IDs are the union of the platform
  level's, the module level's and the QE level's, in that order.

Not implemented: the TDX 1.5 "TD relaunch advised" refinement (statuses this enum does not
have); such a TD keeps the status OutOfDate, the conservative answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sealpod.collateral.models import IdentityTcbLevel, QeIdentity, TcbInfo, TcbLevel
from sealpod.errors import IdentityMismatch, MalformedCollateral, NoMatchingTcbLevel
from sealpod.evidence.dcap_body import SgxReportBody, Td10ReportBody
from sealpod.verify.claims import TcbStatus, TeeKind
from sealpod.verify.pck import PckExtensions

STEP_QE_IDENTITY = "Step 6: QE identity"
STEP_PLATFORM_TCB = "Step 8: platform TCB level"
STEP_QE_TCB = "Step 9: QE TCB level"

_CONFIGURATION = {
    TcbStatus.CONFIGURATION_NEEDED,
    TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
}


@dataclass(frozen=True, slots=True)
class LevelResult:
    """A matched TCB level: its status, advisories and date."""

    status: TcbStatus
    advisory_ids: tuple[str, ...]
    tcb_date: datetime


def _masked(value: bytes, mask: bytes) -> bytes:
    return bytes(a & b for a, b in zip(value, mask, strict=True))


def _level_key(level: TcbLevel) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
    return (level.sgx_svns, level.pce_svn, level.tdx_svns or ())


def _identity_level(levels: tuple[IdentityTcbLevel, ...], isvsvn: int) -> IdentityTcbLevel | None:
    for level in sorted(levels, key=lambda lv: lv.tcb.isvsvn, reverse=True):
        if isvsvn >= level.tcb.isvsvn:
            return level
    return None


def check_qe_identity(qe_report: SgxReportBody, identity: QeIdentity) -> LevelResult:
    """Step 6 and Step 9: the QE is the one Intel describes, and how current it is.

    Raises:
        IdentityMismatch: MRSIGNER, ISVPRODID, MISCSELECT or ATTRIBUTES differ.
        NoMatchingTcbLevel: the QE's ISVSVN is below every level.
    """
    if qe_report.mr_signer != identity.mrsigner:
        raise IdentityMismatch(
            "QE MRSIGNER does not match the QE identity",
            step=STEP_QE_IDENTITY,
            expected=identity.mrsigner.hex(),
            actual=qe_report.mr_signer.hex(),
        )
    if qe_report.isv_prod_id != identity.isvprodid:
        raise IdentityMismatch(
            f"QE ISVPRODID is {qe_report.isv_prod_id}, expected {identity.isvprodid}",
            step=STEP_QE_IDENTITY,
            expected=identity.isvprodid,
            actual=qe_report.isv_prod_id,
        )
    misc_mask = int.from_bytes(identity.miscselect_mask, "little")
    expected_misc = int.from_bytes(identity.miscselect, "little") & misc_mask
    actual_misc = qe_report.misc_select & misc_mask
    if actual_misc != expected_misc:
        raise IdentityMismatch(
            f"QE MISCSELECT (masked) is {actual_misc:08x}, expected {expected_misc:08x}",
            step=STEP_QE_IDENTITY,
            expected=f"{expected_misc:08x}",
            actual=f"{actual_misc:08x}",
        )
    expected_attrs = _masked(identity.attributes, identity.attributes_mask)
    actual_attrs = _masked(qe_report.attributes, identity.attributes_mask)
    if actual_attrs != expected_attrs:
        raise IdentityMismatch(
            f"QE ATTRIBUTES (masked) are {actual_attrs.hex()}, expected {expected_attrs.hex()}",
            step=STEP_QE_IDENTITY,
            expected=expected_attrs.hex(),
            actual=actual_attrs.hex(),
        )
    level = _identity_level(identity.tcb_levels, qe_report.isv_svn)
    if level is None:
        lowest = min(lv.tcb.isvsvn for lv in identity.tcb_levels)
        raise NoMatchingTcbLevel(
            f"no matching QE TCB level found: QE ISVSVN {qe_report.isv_svn} is below the "
            f"lowest level ({lowest})",
            step=STEP_QE_TCB,
            expected=f">= {lowest}",
            actual=qe_report.isv_svn,
        )
    return LevelResult(level.tcb_status, level.advisory_ids, level.tcb_date)


def check_tcb_info_matches(tcb_info: TcbInfo, pck: PckExtensions, tee: TeeKind) -> None:
    """Step 8: the TCB Info is for this TEE and this platform (FMSPC, PCEID).

    Raises:
        IdentityMismatch: TEE kind, FMSPC or PCEID differ.
    """
    if tcb_info.tee is not tee:
        raise IdentityMismatch(
            f"TCB Info is for {tcb_info.tee.value.upper()}, the quote is {tee.value.upper()}",
            step=STEP_PLATFORM_TCB,
            expected=tee.value,
            actual=tcb_info.tee.value,
        )
    if pck.fmspc != tcb_info.fmspc:
        raise IdentityMismatch(
            "FMSPC of the PCK certificate does not match the TCB Info",
            step=STEP_PLATFORM_TCB,
            expected=tcb_info.fmspc.hex(),
            actual=pck.fmspc.hex(),
        )
    if pck.pce_id != tcb_info.pce_id:
        raise IdentityMismatch(
            "PCEID of the PCK certificate does not match the TCB Info",
            step=STEP_PLATFORM_TCB,
            expected=tcb_info.pce_id.hex(),
            actual=pck.pce_id.hex(),
        )


def check_tdx_module(body: Td10ReportBody, tcb_info: TcbInfo) -> LevelResult | None:
    """Step 8 (TDX): the TDX module's signer and attributes, and its identity's TCB level.

    Returns the module identity's level, or None for a module of major version 0 (judged by the
    platform TCB level alone).

    Raises:
        IdentityMismatch: no identity for the module's version, or MRSIGNERSEAM /
            SEAMATTRIBUTES differ.
        NoMatchingTcbLevel: the module's SVN is below every level of its identity.
    """
    module_svn, module_version = body.tee_tcb_svn[0], body.tee_tcb_svn[1]
    if tcb_info.tdx_module is None:  # TcbInfo's model requires it for id TDX
        raise MalformedCollateral("TCB Info for TDX has no tdxModule")
    mrsigner = tcb_info.tdx_module.mrsigner
    attributes = tcb_info.tdx_module.attributes
    mask = tcb_info.tdx_module.attributes_mask
    levels: tuple[IdentityTcbLevel, ...] | None = None
    if module_version > 0:
        wanted = f"TDX_{module_version:02X}"
        found = [
            ident for ident in tcb_info.tdx_module_identities or () if ident.id.upper() == wanted
        ]
        if not found:
            raise IdentityMismatch(
                f"TCB Info has no TDX module identity {wanted} for the quote's TDX module "
                f"(tee_tcb_svn[1] = {module_version})",
                step=STEP_PLATFORM_TCB,
                expected=wanted,
                actual=", ".join(i.id for i in tcb_info.tdx_module_identities or ()) or "none",
            )
        mrsigner, attributes, mask = (
            found[0].mrsigner,
            found[0].attributes,
            found[0].attributes_mask,
        )
        levels = found[0].tcb_levels
    if body.mr_signer_seam != mrsigner:
        raise IdentityMismatch(
            "TDX module MRSIGNERSEAM does not match the TCB Info",
            step=STEP_PLATFORM_TCB,
            expected=mrsigner.hex(),
            actual=body.mr_signer_seam.hex(),
        )
    if _masked(body.seam_attributes, mask) != _masked(attributes, mask):
        raise IdentityMismatch(
            "TDX module SEAMATTRIBUTES (masked) do not match the TCB Info",
            step=STEP_PLATFORM_TCB,
            expected=_masked(attributes, mask).hex(),
            actual=_masked(body.seam_attributes, mask).hex(),
        )
    if levels is None:
        return None
    level = _identity_level(levels, module_svn)
    if level is None:
        raise NoMatchingTcbLevel(
            f"no matching TDX module TCB level: module SVN {module_svn} is below every level "
            f"of TDX_{module_version:02X}",
            step=STEP_PLATFORM_TCB,
            actual=module_svn,
        )
    return LevelResult(level.tcb_status, level.advisory_ids, level.tcb_date)


def match_platform_level(
    tcb_info: TcbInfo, pck: PckExtensions, tee_tcb_svn: bytes | None
) -> tuple[TcbLevel, TcbLevel]:
    """Step 8: the highest TCB levels the platform meets: (SGX level, level of the verdict).

    For SGX both are the same level; for TDX the second is the first of the SGX-matching
    levels whose TDX components the quote also meets (Intel's sgxTcbLevel / tdxTcbLevel).

    Raises:
        NoMatchingTcbLevel: the platform is below every level.
    """
    start = 2 if tee_tcb_svn is not None and tee_tcb_svn[1] > 0 else 0
    pck_svns = pck.tcb.comp_svns
    sgx_level: TcbLevel | None = None
    for level in sorted(tcb_info.tcb_levels, key=_level_key, reverse=True):
        if pck.tcb.pce_svn < level.pce_svn:
            continue
        if any(have < need for have, need in zip(pck_svns, level.sgx_svns, strict=True)):
            continue
        sgx_level = sgx_level or level
        if tee_tcb_svn is not None:
            tdx = level.tdx_svns
            if tdx is None:  # TcbInfo's model requires it for id TDX
                raise MalformedCollateral("TCB Info for TDX has a level without tdxtcbcomponents")
            if any(tee_tcb_svn[i] < tdx[i] for i in range(start, len(tdx))):
                continue
        return sgx_level, level
    detail = f"PCK SGX SVNs {list(pck_svns)}, PCESVN {pck.tcb.pce_svn}"
    if tee_tcb_svn is not None:
        detail += f", TEE TCB SVN {tee_tcb_svn.hex()}"
    raise NoMatchingTcbLevel(
        f"no matching TCB level found (TCB not supported): {detail}",
        step=STEP_PLATFORM_TCB,
        actual=detail,
    )


_RELAUNCH_SGX = {
    TcbStatus.UP_TO_DATE,
    TcbStatus.SW_HARDENING_NEEDED,
    TcbStatus.CONFIGURATION_NEEDED,
    TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
}


def td_relaunch_advised(
    tcb_info: TcbInfo,
    tee_tcb_svn2: bytes,
    *,
    sgx_status: TcbStatus,
    tdx_status: TcbStatus,
    module_status: TcbStatus | None,
    qe_status: TcbStatus,
) -> bool:
    """Step 8 (TD 1.5): Intel QVL's TD relaunch check (``TDRelaunchCheck.cpp``).

    True when the TD runs on an out-of-date TDX module although the platform has already
    been updated (``tee_tcb_svn2``, the current module, meets the latest level), so relaunching
    the TD would make it current. Intel then reports ``TDRelaunchAdvised``; sealpod keeps the
    OutOfDate status and reports the advice as a platform fact.

    Raises:
        IdentityMismatch: the current module's version has no module identity.
    """
    if qe_status in (TcbStatus.OUT_OF_DATE, TcbStatus.REVOKED):
        return False
    if sgx_status not in _RELAUNCH_SGX or module_status is not TcbStatus.OUT_OF_DATE:
        return False
    if tdx_status not in (TcbStatus.OUT_OF_DATE, TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED):
        return False
    latest = max(tcb_info.tcb_levels, key=_level_key)
    latest_tdx = latest.tdx_svns
    if latest_tdx is None:
        raise MalformedCollateral("TCB Info for TDX has a level without tdxtcbcomponents")
    if tee_tcb_svn2[1] == 0:
        return tee_tcb_svn2[0] >= latest_tdx[0] and tee_tcb_svn2[2] >= latest_tdx[2]
    wanted = f"TDX_{tee_tcb_svn2[1]:02X}"
    found = [i for i in tcb_info.tdx_module_identities or () if i.id.upper() == wanted]
    if not found:
        raise IdentityMismatch(
            f"TCB Info has no TDX module identity {wanted} for the current TDX module "
            f"(tee_tcb_svn2[1] = {tee_tcb_svn2[1]})",
            step=STEP_PLATFORM_TCB,
            expected=wanted,
        )
    latest_module = max(found[0].tcb_levels, key=lambda lv: lv.tcb.isvsvn)
    return tee_tcb_svn2[0] >= latest_module.tcb.isvsvn and tee_tcb_svn2[2] >= latest_tdx[2]


def converge(status: TcbStatus, other: TcbStatus) -> TcbStatus:
    """Fold a QE or TDX module status into the platform status (Intel QVL's rule)."""
    if other is TcbStatus.REVOKED:
        return TcbStatus.REVOKED
    if other is TcbStatus.OUT_OF_DATE:
        if status in (TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED):
            return TcbStatus.OUT_OF_DATE
        if status in _CONFIGURATION:
            return TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    return status


def union_advisories(*lists: tuple[str, ...]) -> tuple[str, ...]:
    """Advisory IDs of every list, first occurrence kept, in order."""
    out: dict[str, None] = {}
    for ids in lists:
        for advisory in ids:
            out.setdefault(advisory, None)
    return tuple(out)
