"""The appraisal policy: a strict, declarative model loaded from TOML or JSON.

Every field is optional in the same way: ``None`` means "not checked". Allow-lists fail closed:
an empty list allows nothing. The defaults refuse what is unsafe to accept silently: debug
(``allow_debug = false``), simulated evidence (``allow_simulation = false``) and TCB statuses
other than ``UpToDate`` and ``SWHardeningNeeded``. Unknown keys are errors (``extra="forbid"``),
so a typo fails closed instead of switching a check off. See docs/policy.md for every field.
"""

from __future__ import annotations

import json
import tomllib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sealpod.errors import MalformedPolicy

TcbStatusName = Literal[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
]
TeeName = Literal["sgx", "tdx", "snp", "sim"]
DEFAULT_TCB_STATUSES: tuple[TcbStatusName, ...] = ("UpToDate", "SWHardeningNeeded")

Byte = Annotated[int, Field(ge=0, le=255)]
MAX_POLICY_SIZE = 256 * 1024
MAX_LIST = 4096


def _hex(value: str, *, sizes: tuple[int, ...], what: str) -> str:
    text = value.lower().removeprefix("0x")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{what} must be hex") from None
    if len(raw) not in sizes:
        want = " or ".join(str(s) for s in sizes)
        raise ValueError(f"{what} is {len(raw)} bytes, expected {want}")
    return raw.hex()


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class MinTcb(_Strict):
    """Component-wise minimum SEV-SNP TCB (SPL values); ``fmc`` applies to Turin only."""

    bootloader: Byte | None = None
    tee: Byte | None = None
    snp: Byte | None = None
    microcode: Byte | None = None
    fmc: Byte | None = None


class SnpPolicy(_Strict):
    """SEV-SNP specific checks (applied to SNP claims, and to simulated SNP)."""

    host_data: str | None = None  # 32 bytes hex, exact
    family_id: str | None = None  # 16 bytes hex, exact
    image_id: str | None = None  # 16 bytes hex, exact
    id_key_digests: list[str] | None = Field(default=None, max_length=MAX_LIST)  # 48 bytes each
    author_key_digests: list[str] | None = Field(default=None, max_length=MAX_LIST)
    require_id_key: bool = False  # refuse guests launched without an ID block key
    vmpl: Annotated[int, Field(ge=0, le=3)] | None = None  # exact VMPL of the report
    signing_keys: list[Literal["vcek", "vlek"]] | None = None
    products: list[Literal["Milan", "Genoa", "Turin"]] | None = None
    guest_policy_smt: bool | None = None
    guest_policy_migrate_ma: bool | None = None
    guest_policy_single_socket: bool | None = None
    guest_policy_cxl_allowed: bool | None = None
    guest_policy_mem_aes_256_xts: bool | None = None
    guest_policy_rapl_dis: bool | None = None
    guest_policy_ciphertext_hiding_dram: bool | None = None
    guest_policy_page_swap_disable: bool | None = None
    guest_policy_min_abi: str | None = None  # "major.minor"
    min_tcb: MinTcb | None = None
    min_firmware: str | None = None  # "major.minor" or "major.minor.build"

    @field_validator("host_data")
    @classmethod
    def _host_data(cls, v: str | None) -> str | None:
        return None if v is None else _hex(v, sizes=(32,), what="host_data")

    @field_validator("family_id", "image_id")
    @classmethod
    def _ids(cls, v: str | None) -> str | None:
        return None if v is None else _hex(v, sizes=(16,), what="family_id/image_id")

    @field_validator("id_key_digests", "author_key_digests")
    @classmethod
    def _digests(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [_hex(d, sizes=(48,), what="key digest") for d in v]

    @field_validator("guest_policy_min_abi")
    @classmethod
    def _abi(cls, v: str | None) -> str | None:
        if v is not None:
            parse_version(v, parts=(2,), what="guest_policy_min_abi")
        return v

    @field_validator("min_firmware")
    @classmethod
    def _firmware(cls, v: str | None) -> str | None:
        if v is not None:
            parse_version(v, parts=(2, 3), what="min_firmware")
        return v


class Policy(_Strict):
    """What verified claims must satisfy. See docs/policy.md."""

    measurements: list[str] | None = Field(default=None, max_length=MAX_LIST)
    signer: str | None = None
    product_id: Annotated[int, Field(ge=0, le=0xFFFF)] | None = None
    min_svn: Annotated[int, Field(ge=0, le=0xFFFF_FFFF)] | None = None
    tees: list[TeeName] | None = None
    allow_debug: bool = False
    accepted_tcb_statuses: list[TcbStatusName] | None = list(DEFAULT_TCB_STATUSES)
    accepted_advisories: list[str] | None = Field(default=None, max_length=MAX_LIST)
    refused_advisories: list[str] | None = Field(default=None, max_length=MAX_LIST)
    report_data: str | None = None  # 1-64 bytes hex, compared zero-padded to 64
    allow_simulation: bool = False
    snp: SnpPolicy | None = None

    @field_validator("measurements")
    @classmethod
    def _measurements(cls, v: list[str] | None) -> list[str] | None:
        # 32 bytes: SGX MRENCLAVE and sealpod workload measurements; 48: TDX MRTD, SNP MEASUREMENT.
        return None if v is None else [_hex(m, sizes=(32, 48), what="measurement") for m in v]

    @field_validator("signer")
    @classmethod
    def _signer(cls, v: str | None) -> str | None:
        return None if v is None else _hex(v, sizes=(32,), what="signer")

    @field_validator("report_data")
    @classmethod
    def _report_data(cls, v: str | None) -> str | None:
        return None if v is None else _hex(v, sizes=tuple(range(1, 65)), what="report_data")

    # --- loading --------------------------------------------------------------------------------
    @classmethod
    def from_toml(cls, text: str) -> Policy:
        """Load from TOML text.

        Raises:
            MalformedPolicy: bad TOML, an unknown key, a wrong type or value (with its key path).
        """
        _check_size(text)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise MalformedPolicy(f"policy is not valid TOML: {exc}") from exc
        return cls._validate(data)

    @classmethod
    def from_json(cls, text: str) -> Policy:
        """Load from JSON text (an object with the same keys as the TOML form).

        Raises:
            MalformedPolicy: bad JSON, an unknown key, a wrong type or value (with its key path).
        """
        _check_size(text)
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise MalformedPolicy(f"policy is not valid JSON: {exc}") from exc
        return cls._validate(data)

    @classmethod
    def from_text(cls, text: str, *, json_format: bool) -> Policy:
        """Load from TOML, or JSON when ``json_format``.

        Raises:
            MalformedPolicy: see :meth:`from_toml` and :meth:`from_json`.
        """
        return cls.from_json(text) if json_format else cls.from_toml(text)

    @classmethod
    def _validate(cls, data: object) -> Policy:
        if not isinstance(data, dict):
            raise MalformedPolicy(f"policy must be an object/table, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            # The spec's wording: "measurementz: unknown key (did you mean 'measurements'?)".
            from sealpod.spec.model import describe_error

            problems = [describe_error(e, cls) for e in exc.errors(include_url=False)]
            raise MalformedPolicy("policy is invalid: " + "; ".join(problems)) from exc


def parse_version(text: str, *, parts: tuple[int, ...], what: str) -> tuple[int, ...]:
    """Parse "1.55" or "1.55.40" into integers.

    Raises:
        ValueError: not dotted integers with one of the allowed part counts.
    """
    pieces = text.split(".")
    if len(pieces) not in parts or not all(p.isdigit() and len(p) <= 3 for p in pieces):
        raise ValueError(f"{what} is {text!r}, expected dotted integers like '1.55'")
    return tuple(int(p) for p in pieces)


def _check_size(text: str) -> None:
    if len(text) > MAX_POLICY_SIZE:
        raise MalformedPolicy(
            f"policy is {len(text)} characters, expected at most {MAX_POLICY_SIZE}"
        )
