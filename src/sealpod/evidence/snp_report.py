"""AMD SEV-SNP attestation report codec (versions 2, 3, 4 and 5).

The layout is ``ATTESTATION_REPORT`` of the SEV-SNP Firmware ABI specification (AMD pub. 56860,
table 23 in revision 1.58): 0x4A0 bytes, little-endian, the signature over bytes 0x000-0x29F.

* v2: the original layout.
* v3 adds CPUID family, model and stepping at 0x188-0x18A (ABI 1.56).
* v4 is emitted by some firmware (e.g. Milan 1.55.31); its public fields are those of v3, so it
  is parsed with the v3 layout and every byte v3 reserves must still be zero.
* v5 adds LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR at 0x1F8 and 0x200 (ABI 1.58).

Every TCB_VERSION is a u64 whose byte layout depends on the processor generation (ABI table 3):
Milan and Genoa put the boot loader in byte 0, TEE in 1, SNP in 6 and microcode in 7; Turin and
later put FMC in byte 0, boot loader in 1, TEE in 2, SNP in 3 and microcode in 7. The parser keeps
each TCB as its raw u64 and decodes it with the layout of the product (``SnpReport.product``, from
the CPUID fields of v3+ reports; v2 reports predate Turin). The verifier re-decodes with the
product its certificate chain names.

Structure (sizes, reserved ranges, known algorithm and key selector, guest-policy reserved bits)
is checked here; versions, debug bits, VMPL and TCB levels are policy, decided later.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sealpod._binary import Reader, Writer
from sealpod.errors import MalformedEvidence

# --- sizes and offsets (ABI 1.58 table 23) ------------------------------------------------------
REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0  # the signature covers bytes 0x000-0x29F
SIGNATURE_OFFSET = 0x2A0
SIGNATURE_SIZE = 0x200
ECDSA_COMPONENT_SIZE = 72  # r and s, little-endian, zero-extended (ABI table 139)
SIGNATURE_RESERVED_SIZE = SIGNATURE_SIZE - 2 * ECDSA_COMPONENT_SIZE
REPORT_DATA_SIZE = 64
MEASUREMENT_SIZE = 48
HOST_DATA_SIZE = 32
CHIP_ID_SIZE = 64
FAMILY_ID_SIZE = 16
IMAGE_ID_SIZE = 16
KEY_DIGEST_SIZE = 48
REPORT_ID_SIZE = 32

CPUID_OFFSET = 0x188  # v3+
MIT_VECTOR_OFFSET = 0x1F8  # v5

SUPPORTED_VERSIONS = (2, 3, 4, 5)
SIG_ALGO_ECDSA_P384_SHA384 = 1

# KEY_INFO (0x48): bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 4:2 SIGNING_KEY, 31:5 reserved.
_KEY_INFO_RESERVED_MASK = 0xFFFF_FFE0

# Guest policy (ABI table 9): bit 17 is reserved and must be one; 63:26 must be zero.
POLICY_SMT_BIT = 16
POLICY_RESERVED_ONE_BIT = 17
POLICY_MIGRATE_MA_BIT = 18
POLICY_DEBUG_BIT = 19
POLICY_SINGLE_SOCKET_BIT = 20
POLICY_CXL_ALLOW_BIT = 21
POLICY_MEM_AES_256_XTS_BIT = 22
POLICY_RAPL_DIS_BIT = 23
POLICY_CIPHERTEXT_HIDING_DRAM_BIT = 24
POLICY_PAGE_SWAP_DISABLE_BIT = 25
_POLICY_RESERVED_ZERO_MASK = ~((1 << 26) - 1) & 0xFFFF_FFFF_FFFF_FFFF


class SnpProduct(enum.StrEnum):
    """AMD EPYC generations with their own VCEK hierarchy (ARK/ASK) and KDS product name."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"


class SigningKey(enum.IntEnum):
    """KEY_INFO.SIGNING_KEY: which endorsement key signed the report."""

    VCEK = 0
    VLEK = 1
    NONE = 7  # the report is not signed


def product_from_cpuid(family: int, model: int) -> SnpProduct | None:
    """The product for a CPUID family/model pair (combined base + extended values).

    Family 19h: Milan is models 00h-0Fh; Genoa (and Bergamo, Siena, which use Genoa's
    hierarchy) 10h-1Fh and A0h-AFh. Family 1Ah models 00h-1Fh are Turin.
    """
    if family == 0x19:
        if model <= 0x0F:
            return SnpProduct.MILAN
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return SnpProduct.GENOA
        return None
    if family == 0x1A and model <= 0x1F:
        return SnpProduct.TURIN
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class TcbVersion:
    """A decoded TCB_VERSION. ``fmc`` is only present in the Turin layout."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def from_u64(cls, raw: int, *, turin: bool) -> TcbVersion:
        b = raw.to_bytes(8, "little")
        if turin:
            return cls(fmc=b[0], bootloader=b[1], tee=b[2], snp=b[3], microcode=b[7])
        return cls(bootloader=b[0], tee=b[1], snp=b[6], microcode=b[7])

    def to_u64(self) -> int:
        """The u64 with reserved bytes zero; the layout follows from ``fmc`` being set."""
        b = bytearray(8)
        if self.fmc is not None:
            b[0], b[1], b[2], b[3] = self.fmc, self.bootloader, self.tee, self.snp
        else:
            b[0], b[1], b[6] = self.bootloader, self.tee, self.snp
        b[7] = self.microcode
        return int.from_bytes(b, "little")

    def __str__(self) -> str:
        parts = [] if self.fmc is None else [f"fmc {self.fmc}"]
        parts += [
            f"bootloader {self.bootloader}",
            f"tee {self.tee}",
            f"snp {self.snp}",
            f"microcode {self.microcode}",
        ]
        return ", ".join(parts)


def tcb_reserved_bytes(raw: int, *, turin: bool) -> bytes:
    """The bytes of a TCB_VERSION that its layout reserves (expected zero)."""
    b = raw.to_bytes(8, "little")
    return b[4:7] if turin else b[2:6]


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestPolicy:
    """The guest policy bits (ABI table 9) the owner fixed at launch."""

    raw: int
    abi_minor: int
    abi_major: int
    smt: bool
    migrate_ma: bool
    debug: bool
    single_socket: bool
    cxl_allowed: bool
    mem_aes_256_xts: bool
    rapl_dis: bool
    ciphertext_hiding_dram: bool
    page_swap_disable: bool

    @classmethod
    def from_u64(cls, raw: int) -> GuestPolicy:
        def bit(n: int) -> bool:
            return bool(raw >> n & 1)

        return cls(
            raw=raw,
            abi_minor=raw & 0xFF,
            abi_major=raw >> 8 & 0xFF,
            smt=bit(POLICY_SMT_BIT),
            migrate_ma=bit(POLICY_MIGRATE_MA_BIT),
            debug=bit(POLICY_DEBUG_BIT),
            single_socket=bit(POLICY_SINGLE_SOCKET_BIT),
            cxl_allowed=bit(POLICY_CXL_ALLOW_BIT),
            mem_aes_256_xts=bit(POLICY_MEM_AES_256_XTS_BIT),
            rapl_dis=bit(POLICY_RAPL_DIS_BIT),
            ciphertext_hiding_dram=bit(POLICY_CIPHERTEXT_HIDING_DRAM_BIT),
            page_swap_disable=bit(POLICY_PAGE_SWAP_DISABLE_BIT),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformInfo:
    """PLATFORM_INFO bits (ABI table 24). Unknown bits are kept in ``raw``, not refused: newer
    firmware adds enablement bits and their meaning is for policy to judge."""

    raw: int
    smt_enabled: bool
    tsme_enabled: bool
    ecc_enabled: bool
    rapl_disabled: bool
    ciphertext_hiding_dram_enabled: bool
    alias_check_complete: bool

    @classmethod
    def from_u64(cls, raw: int) -> PlatformInfo:
        return cls(
            raw=raw,
            smt_enabled=bool(raw & 1),
            tsme_enabled=bool(raw >> 1 & 1),
            ecc_enabled=bool(raw >> 2 & 1),
            rapl_disabled=bool(raw >> 3 & 1),
            ciphertext_hiding_dram_enabled=bool(raw >> 4 & 1),
            alias_check_complete=bool(raw >> 5 & 1),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SnpReport:
    """A parsed SEV-SNP attestation report.

    ``raw`` keeps the bytes exactly as received (empty for a report built in code). It is not
    updated by ``dataclasses.replace``: after changing fields, serialize with :meth:`to_bytes`.
    Verifiers check the signature over the bytes they received, not over a re-serialization.
    """

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    key_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid_fam_id: int | None  # v3+
    cpuid_mod_id: int | None
    cpuid_step: int | None
    chip_id: bytes
    committed_tcb: int
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: int
    launch_mit_vector: int | None  # v5
    current_mit_vector: int | None
    signature_r: bytes  # 72 bytes little-endian
    signature_s: bytes
    raw: bytes = field(default=b"", repr=False, compare=False)

    # --- decoded views --------------------------------------------------------------------------
    @property
    def signed_bytes(self) -> bytes:
        """Bytes 0x000-0x29F, over which the VCEK/VLEK signed (of ``raw`` when present)."""
        return (self.raw or self.to_bytes())[:SIGNED_SIZE]

    @property
    def guest_policy(self) -> GuestPolicy:
        return GuestPolicy.from_u64(self.policy)

    @property
    def platform(self) -> PlatformInfo:
        return PlatformInfo.from_u64(self.platform_info)

    @property
    def signing_key(self) -> SigningKey:
        return SigningKey(self.key_info >> 2 & 0x7)

    @property
    def author_key_en(self) -> bool:
        return bool(self.key_info & 1)

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.key_info >> 1 & 1)

    @property
    def product(self) -> SnpProduct | None:
        """The product named by the CPUID fields (v3+), else None (v2 predates Turin)."""
        if self.cpuid_fam_id is None or self.cpuid_mod_id is None:
            return None
        return product_from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    def turin_layout(self, product: SnpProduct | None = None) -> bool:
        """Whether TCB_VERSION values use the Turin layout (for ``product``, or as reported)."""
        if product is not None:
            return product is SnpProduct.TURIN
        # Zen 5 (family 1Ah) and later use the Turin layout even for models not yet named here.
        return self.cpuid_fam_id is not None and self.cpuid_fam_id >= 0x1A

    def tcb(self, which: str = "reported", product: SnpProduct | None = None) -> TcbVersion:
        """Decode one of ``reported``, ``current``, ``committed`` or ``launch`` TCB."""
        raw = {
            "reported": self.reported_tcb,
            "current": self.current_tcb,
            "committed": self.committed_tcb,
            "launch": self.launch_tcb,
        }[which]
        return TcbVersion.from_u64(raw, turin=self.turin_layout(product))

    @property
    def firmware_version(self) -> str:
        """Current firmware as ``major.minor.build``."""
        return f"{self.current_major}.{self.current_minor}.{self.current_build}"

    @property
    def signature_rs(self) -> tuple[int, int]:
        """(r, s) as integers (the 72-byte fields are little-endian)."""
        return (
            int.from_bytes(self.signature_r, "little"),
            int.from_bytes(self.signature_s, "little"),
        )

    # --- serialization --------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialize; the inverse of :func:`parse_report` (reserved ranges written as zero).

        Raises:
            ValueError: a field does not fit its size (only for hand-built reports).
        """
        w = Writer()
        w.u32(self.version).u32(self.guest_svn).u64(self.policy)
        w.raw(self.family_id, FAMILY_ID_SIZE).raw(self.image_id, IMAGE_ID_SIZE)
        w.u32(self.vmpl).u32(self.signature_algo).u64(self.current_tcb).u64(self.platform_info)
        w.u32(self.key_info).zeros(4)
        w.raw(self.report_data, REPORT_DATA_SIZE).raw(self.measurement, MEASUREMENT_SIZE)
        w.raw(self.host_data, HOST_DATA_SIZE)
        w.raw(self.id_key_digest, KEY_DIGEST_SIZE).raw(self.author_key_digest, KEY_DIGEST_SIZE)
        w.raw(self.report_id, REPORT_ID_SIZE).raw(self.report_id_ma, REPORT_ID_SIZE)
        w.u64(self.reported_tcb)
        if self.version >= 3:
            w.u8(self.cpuid_fam_id or 0).u8(self.cpuid_mod_id or 0).u8(self.cpuid_step or 0)
            w.zeros(0x1A0 - 0x18B)
        else:
            w.zeros(0x1A0 - 0x188)
        w.raw(self.chip_id, CHIP_ID_SIZE).u64(self.committed_tcb)
        w.u8(self.current_build).u8(self.current_minor).u8(self.current_major).zeros(1)
        w.u8(self.committed_build).u8(self.committed_minor).u8(self.committed_major).zeros(1)
        w.u64(self.launch_tcb)
        if self.version >= 5:
            w.u64(self.launch_mit_vector or 0).u64(self.current_mit_vector or 0)
            w.zeros(SIGNATURE_OFFSET - 0x208)
        else:
            w.zeros(SIGNATURE_OFFSET - MIT_VECTOR_OFFSET)
        w.raw(self.signature_r, ECDSA_COMPONENT_SIZE).raw(self.signature_s, ECDSA_COMPONENT_SIZE)
        w.zeros(SIGNATURE_RESERVED_SIZE)
        return w.getvalue()


def parse_report(raw: bytes | bytearray | memoryview) -> SnpReport:
    """Parse a 0x4A0-byte SEV-SNP attestation report.

    Raises:
        MalformedEvidence: wrong size, unsupported version or signature algorithm, a reserved
            range or bit that is not zero, a reserved SIGNING_KEY value, or guest-policy bit 17
            clear. The message names the field and its offset.
    """
    data = bytes(raw)
    if len(data) != REPORT_SIZE:
        raise MalformedEvidence(
            f"SNP report is {len(data)} bytes, expected {REPORT_SIZE}",
            field="report",
            offset=min(len(data), REPORT_SIZE),
        )
    r = Reader(data, name="SNP report")
    version = r.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise MalformedEvidence(
            f"SNP report: field 'version' is {version}, expected one of "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}",
            field="version",
            offset=0x00,
        )
    guest_svn = r.u32("guest_svn")
    policy = r.u64("policy")
    if not policy >> POLICY_RESERVED_ONE_BIT & 1:
        raise MalformedEvidence(
            "SNP report: field 'policy' bit 17 is 0, expected 1 (reserved, must be one)",
            field="policy",
            offset=0x08,
        )
    if policy & _POLICY_RESERVED_ZERO_MASK:
        raise MalformedEvidence(
            f"SNP report: field 'policy' is {policy:#x}, expected bits 63:26 to be zero",
            field="policy",
            offset=0x08,
        )
    family_id = r.take(FAMILY_ID_SIZE, "family_id")
    image_id = r.take(IMAGE_ID_SIZE, "image_id")
    vmpl = r.u32("vmpl")
    signature_algo = r.u32("signature_algo")
    if signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise MalformedEvidence(
            f"SNP report: field 'signature_algo' is {signature_algo}, expected "
            f"{SIG_ALGO_ECDSA_P384_SHA384} (ECDSA P-384 with SHA-384)",
            field="signature_algo",
            offset=0x34,
        )
    current_tcb = r.u64("current_tcb")
    platform_info = r.u64("platform_info")
    key_info = r.u32("key_info")
    if key_info & _KEY_INFO_RESERVED_MASK:
        raise MalformedEvidence(
            f"SNP report: field 'key_info' is {key_info:#x}, expected bits 31:5 to be zero",
            field="key_info",
            offset=0x48,
        )
    selector = key_info >> 2 & 0x7
    if selector not in {k.value for k in SigningKey}:
        raise MalformedEvidence(
            f"SNP report: field 'key_info.signing_key' is {selector}, expected 0 (VCEK), "
            "1 (VLEK) or 7 (none)",
            field="key_info",
            offset=0x48,
        )
    r.zeros(4, "reserved_0x4c")
    report_data = r.take(REPORT_DATA_SIZE, "report_data")
    measurement = r.take(MEASUREMENT_SIZE, "measurement")
    host_data = r.take(HOST_DATA_SIZE, "host_data")
    id_key_digest = r.take(KEY_DIGEST_SIZE, "id_key_digest")
    author_key_digest = r.take(KEY_DIGEST_SIZE, "author_key_digest")
    report_id = r.take(REPORT_ID_SIZE, "report_id")
    report_id_ma = r.take(REPORT_ID_SIZE, "report_id_ma")
    reported_tcb = r.u64("reported_tcb")
    fam: int | None = None
    mod: int | None = None
    step: int | None = None
    if version >= 3:
        fam, mod, step = r.u8("cpuid_fam_id"), r.u8("cpuid_mod_id"), r.u8("cpuid_step")
        r.zeros(0x1A0 - 0x18B, "reserved_0x18b")
    else:
        r.zeros(0x1A0 - 0x188, "reserved_0x188")
    chip_id = r.take(CHIP_ID_SIZE, "chip_id")
    committed_tcb = r.u64("committed_tcb")
    current_build, current_minor, current_major = (
        r.u8("current_build"),
        r.u8("current_minor"),
        r.u8("current_major"),
    )
    r.zeros(1, "reserved_0x1eb")
    committed_build, committed_minor, committed_major = (
        r.u8("committed_build"),
        r.u8("committed_minor"),
        r.u8("committed_major"),
    )
    r.zeros(1, "reserved_0x1ef")
    launch_tcb = r.u64("launch_tcb")
    launch_mit: int | None = None
    current_mit: int | None = None
    if version >= 5:
        launch_mit = r.u64("launch_mit_vector")
        current_mit = r.u64("current_mit_vector")
        r.zeros(SIGNATURE_OFFSET - 0x208, "reserved_0x208")
    else:
        r.zeros(SIGNATURE_OFFSET - MIT_VECTOR_OFFSET, "reserved_0x1f8")
    sig_r = r.take(ECDSA_COMPONENT_SIZE, "signature_r")
    sig_s = r.take(ECDSA_COMPONENT_SIZE, "signature_s")
    r.zeros(SIGNATURE_RESERVED_SIZE, "signature_reserved")
    r.end()
    return SnpReport(
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        family_id=family_id,
        image_id=image_id,
        vmpl=vmpl,
        signature_algo=signature_algo,
        current_tcb=current_tcb,
        platform_info=platform_info,
        key_info=key_info,
        report_data=report_data,
        measurement=measurement,
        host_data=host_data,
        id_key_digest=id_key_digest,
        author_key_digest=author_key_digest,
        report_id=report_id,
        report_id_ma=report_id_ma,
        reported_tcb=reported_tcb,
        cpuid_fam_id=fam,
        cpuid_mod_id=mod,
        cpuid_step=step,
        chip_id=chip_id,
        committed_tcb=committed_tcb,
        current_build=current_build,
        current_minor=current_minor,
        current_major=current_major,
        committed_build=committed_build,
        committed_minor=committed_minor,
        committed_major=committed_major,
        launch_tcb=launch_tcb,
        launch_mit_vector=launch_mit,
        current_mit_vector=current_mit,
        signature_r=sig_r,
        signature_s=sig_s,
        raw=data,
    )
