"""The simulated platform's state directory: keys, certificates, settings; trust and collateral.

Layout of ``$SEALPOD_HOME/sim`` (mode 0700)::

    platform.json            SimConfig: ids, the TCB status chosen with ``sim set-tcb``
    certs/<name>.pem         sgx-root, pck-ca, tcb-signing, pck-sgx, pck-tdx, ark, ask, vcek
    keys/<name>.pem          private keys, mode 0600 (keys/ itself 0700)
    keys/report-secret.bin   32 random bytes from which local-attestation report keys derive

``init`` builds the whole tree in a sibling temporary directory and renames it into place, so a
half-written platform is never visible and two concurrent ``init`` calls end with one platform.
Loading refuses key files that group or others can read, as ssh does.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sealpod._files import write_atomic
from sealpod.errors import ConfigError, CryptoError, TeeUnavailable
from sealpod.settings import sealpod_home
from sealpod.tee import sim_config as cfg
from sealpod.tee import sim_pki as pki
from sealpod.tee.sim_collateral import IntelSimPki, SimCollateral, build_collateral
from sealpod.verify.claims import TcbStatus, TeeKind
from sealpod.verify.trust import TrustAnchors

STATE_SUBDIR = "sim"
REPORT_SECRET_SIZE = 32
#: Keys, certificates and platform.json are a few KiB; a larger file is not ours.
MAX_STATE_FILE_SIZE = 1 << 20
_CRL_BASE = "https://sealpod-sim.invalid"  # RFC 2606: never resolves, nothing is fetched

#: name -> key type; P-256 on the Intel side, RSA-4096 and P-384 on the AMD side.
KEY_TYPES: dict[str, str] = {
    "sgx-root": "p256", "pck-ca": "p256", "tcb-signing": "p256", "pck-sgx": "p256",
    "pck-tdx": "p256", "ak-sgx": "p256", "ak-tdx": "p256", "ark": "rsa4096", "ask": "rsa4096",
    "vcek": "p384",
}  # fmt: skip
CERT_NAMES = ("sgx-root", "pck-ca", "tcb-signing", "pck-sgx", "pck-tdx", "ark", "ask", "vcek")


def state_dir_for(home: Path | None = None) -> Path:
    """``<home>/sim``; ``home`` defaults to ``$SEALPOD_HOME``."""
    return (home if home is not None else sealpod_home()) / STATE_SUBDIR


def _new_key(kind: str) -> pki.PrivateKey:
    if kind == "rsa4096":
        return pki.new_rsa_key(4096)
    return pki.new_ec_key(ec.SECP384R1() if kind == "p384" else ec.SECP256R1())


def _years(start: dt.datetime, years: int) -> pki.Validity:
    return pki.Validity(not_before=start, not_after=start + dt.timedelta(days=365 * years))


def _issue_all(
    keys: dict[str, pki.PrivateKey], config: cfg.SimConfig, now: dt.datetime
) -> dict[str, x509.Certificate]:
    """Issue every certificate of a new platform."""
    start = now.replace(microsecond=0) - dt.timedelta(days=1)
    ser = x509.random_serial_number
    certs: dict[str, x509.Certificate] = {}

    def ec_pub(name: str) -> ec.EllipticCurvePublicKey:
        key = keys[name]
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CryptoError(f"simulated platform key {name!r} is not an EC key")
        return key.public_key()

    def rsa_pub(name: str) -> rsa.RSAPublicKey:
        key = keys[name]
        if not isinstance(key, rsa.RSAPrivateKey):
            raise CryptoError(f"simulated platform key {name!r} is not an RSA key")
        return key.public_key()

    certs["sgx-root"] = pki.issue_certificate(
        subject=pki.sim_name("SIMULATED SGX Root CA"), public_key=ec_pub("sgx-root"),
        issuer=None, issuer_key=keys["sgx-root"], serial=ser(), validity=_years(start, 20),
        ca=True, path_length=1, crl_url=f"{_CRL_BASE}/sgx/root.crl",
    )  # fmt: skip
    root = certs["sgx-root"]
    certs["pck-ca"] = pki.issue_certificate(
        subject=pki.sim_name("SIMULATED SGX PCK Platform CA"), public_key=ec_pub("pck-ca"),
        issuer=root, issuer_key=keys["sgx-root"], serial=ser(), validity=_years(start, 15),
        ca=True, path_length=0, crl_url=f"{_CRL_BASE}/sgx/root.crl",
    )  # fmt: skip
    certs["tcb-signing"] = pki.issue_certificate(
        subject=pki.sim_name("SIMULATED SGX TCB Signing"), public_key=ec_pub("tcb-signing"),
        issuer=root, issuer_key=keys["sgx-root"], serial=ser(), validity=_years(start, 15),
        ca=False, crl_url=f"{_CRL_BASE}/sgx/root.crl",
    )  # fmt: skip
    ppid = bytes.fromhex(config.ppid)
    for name, fmspc, tcb in (
        ("pck-sgx", cfg.SGX_FMSPC, cfg.SGX_PCK_TCB),
        ("pck-tdx", cfg.TDX_FMSPC, cfg.TDX_PCK_TCB),
    ):
        ext_oid = x509.ObjectIdentifier(pki.SGX_EXTENSIONS_OID)
        der = pki.sgx_extension_der(ppid=ppid, tcb=tcb, pce_id=cfg.PCE_ID, fmspc=fmspc)
        certs[name] = pki.issue_certificate(
            subject=pki.sim_name("SIMULATED SGX PCK Certificate"), public_key=ec_pub(name),
            issuer=certs["pck-ca"], issuer_key=keys["pck-ca"], serial=ser(),
            validity=_years(start, 7), ca=False,
            crl_url=f"{_CRL_BASE}/sgx/pckcrl?ca=platform",
            extensions=[x509.Extension(ext_oid, False, x509.UnrecognizedExtension(ext_oid, der))],
        )  # fmt: skip
    product = cfg.SNP_PRODUCT
    certs["ark"] = pki.issue_certificate(
        subject=pki.sim_name(f"SIMULATED ARK-{product}"), public_key=rsa_pub("ark"),
        issuer=None, issuer_key=keys["ark"], serial=ser(), validity=_years(start, 25),
        ca=True, crl_url=f"{_CRL_BASE}/vcek/v1/{product}/crl",
    )  # fmt: skip
    certs["ask"] = pki.issue_certificate(
        subject=pki.sim_name(f"SIMULATED SEV-{product}"), public_key=rsa_pub("ask"),
        issuer=certs["ark"], issuer_key=keys["ark"], serial=ser(), validity=_years(start, 25),
        ca=True, path_length=0, crl_url=f"{_CRL_BASE}/vcek/v1/{product}/crl",
    )  # fmt: skip
    certs["vcek"] = pki.issue_certificate(
        subject=pki.sim_name("SIMULATED SEV-VCEK"), public_key=ec_pub("vcek"),
        issuer=certs["ask"], issuer_key=keys["ask"], serial=ser(), validity=_years(start, 7),
        ca=False,
        extensions=pki.vcek_extensions(
            product=cfg.SNP_PRODUCT_NAME, hwid=bytes.fromhex(config.chip_id), tcb=cfg.SNP_TCB
        ),
    )  # fmt: skip
    return certs


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read_state(path: Path) -> bytes:
    """A state file's bytes, bounded, refusing anything but a regular file.

    Raises:
        OSError: missing (``FileNotFoundError``), not a regular file, or larger than
            ``MAX_STATE_FILE_SIZE`` (callers turn it into a ``ConfigError``).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        data = f.read(MAX_STATE_FILE_SIZE + 1)
    if len(data) > MAX_STATE_FILE_SIZE:
        raise OSError(errno.EFBIG, f"larger than {MAX_STATE_FILE_SIZE} bytes", str(path))
    return data


def _check_private(path: Path, expected: int) -> None:
    st = path.stat()
    if st.st_mode & 0o077:
        raise ConfigError(
            f"simulated platform: {path} is mode {stat.S_IMODE(st.st_mode):04o}, expected "
            f"{expected:04o} (private keys must not be readable by others)"
        )


@dataclass(frozen=True, slots=True)
class _Paths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "platform.json"

    def cert(self, name: str) -> Path:
        return self.root / "certs" / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.root / "keys" / f"{name}.pem"

    @property
    def report_secret(self) -> Path:
        return self.root / "keys" / "report-secret.bin"


class SimPlatformState:
    """Keys, certificates and settings of one simulated platform (see module docstring)."""

    def __init__(
        self, state_dir: Path, config: cfg.SimConfig, certs: dict[str, x509.Certificate]
    ) -> None:
        self._paths = _Paths(state_dir)
        self._config = config
        self._certs = certs
        self._keys: dict[str, pki.PrivateKey] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self._paths.root)!r}, tcb={self._config.tcb_status})"

    # --- life cycle -----------------------------------------------------------------------------
    @classmethod
    def init(
        cls, home: Path | None = None, *, force: bool = False, now: dt.datetime | None = None
    ) -> Self:
        """Make a new platform (keys, certificates) in ``<home>/sim``.

        Raises:
            ConfigError: it exists and ``force`` is not set, or the directory is not writable.
        """
        target = state_dir_for(home)
        if target.exists() and not force:
            raise ConfigError(f"a simulated platform already exists at {target} (use --force)")
        now = now or dt.datetime.now(dt.UTC)
        config = cfg.SimConfig(
            created=cfg.iso_z(now),
            ppid=secrets.token_hex(pki.PPID_SIZE),
            chip_id=secrets.token_hex(pki.HWID_SIZE),
            qe_id=secrets.token_hex(16),
        )
        keys = {name: _new_key(kind) for name, kind in KEY_TYPES.items()}
        certs = _issue_all(keys, config, now)
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            staging = target.with_name(f".{target.name}.{secrets.token_hex(6)}.new")
            staging.mkdir(mode=0o700)
            (staging / "certs").mkdir(mode=0o700)
            (staging / "keys").mkdir(mode=0o700)
            paths = _Paths(staging)
            for name, key in keys.items():
                _write_private(paths.key(name), pki.private_key_pem(key))
            _write_private(paths.report_secret, secrets.token_bytes(REPORT_SECRET_SIZE))
            for name, cert in certs.items():
                paths.cert(name).write_bytes(pki.cert_pem(cert))
            _write_private(paths.config, config.to_json())
            if force and target.exists():
                old = target.with_name(f".{target.name}.{secrets.token_hex(6)}.old")
                target.rename(old)
                shutil.rmtree(old)
            try:
                staging.rename(target)
            except OSError:
                # Another process initialised it first: keep theirs.
                shutil.rmtree(staging, ignore_errors=True)
                return cls.load(home)
        except OSError as exc:
            raise ConfigError(f"cannot create the simulated platform at {target}: {exc}") from exc
        return cls(target, config, certs)

    @classmethod
    def load(cls, home: Path | None = None) -> Self:
        """Load the platform in ``<home>/sim``.

        Raises:
            TeeUnavailable: no platform there (run ``sealpod sim init``).
            ConfigError: the directory is incomplete, unreadable, or too permissive.
            CryptoError: a certificate does not load.
        """
        root = state_dir_for(home)
        paths = _Paths(root)
        try:
            present = paths.config.is_file()
        except OSError as exc:  # EACCES, ENAMETOOLONG: is_file() raises rather than say False
            raise TeeUnavailable(
                f"cannot read the simulated platform at {root}: {exc.strerror}"
            ) from exc
        if not present:
            raise TeeUnavailable(f"no simulated platform at {root}: run 'sealpod sim init' first")
        _check_private(root, 0o700)
        _check_private(root / "keys", 0o700)
        try:
            config = cfg.SimConfig.from_json(_read_state(paths.config))
            certs = {
                n: pki.load_certificate(_read_state(paths.cert(n)), what=n) for n in CERT_NAMES
            }
        except FileNotFoundError as exc:
            raise ConfigError(
                f"simulated platform at {root} is incomplete ({Path(exc.filename).name} is "
                "missing): run 'sealpod sim init --force'"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read the simulated platform at {root}: {exc}") from exc
        return cls(root, config, certs)

    # --- accessors ------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self._paths.root

    @property
    def config(self) -> cfg.SimConfig:
        return self._config

    def cert(self, name: str) -> x509.Certificate:
        return self._certs[name]

    def cert_der(self, name: str) -> bytes:
        return self._certs[name].public_bytes(serialization.Encoding.DER)

    def key(self, name: str) -> pki.PrivateKey:
        """A private key, loaded on first use after checking that its file is 0600."""
        if name not in self._keys:
            path = self._paths.key(name)
            try:
                _check_private(path, 0o600)
                data = _read_state(path)
            except FileNotFoundError as exc:
                raise ConfigError(
                    f"simulated platform key {name!r} is missing: run 'sealpod sim init --force'"
                ) from exc
            except OSError as exc:
                raise ConfigError(f"cannot read simulated platform key {name!r}: {exc}") from exc
            self._keys[name] = pki.load_private_key(data, what=name)
        return self._keys[name]

    def ec_key(self, name: str) -> ec.EllipticCurvePrivateKey:
        key = self.key(name)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CryptoError(f"simulated platform key {name!r} is not an EC key")
        return key

    def report_secret(self) -> bytes:
        """The platform's local-attestation root secret (never leaves this process)."""
        path = self._paths.report_secret
        try:
            _check_private(path, 0o600)
            data = _read_state(path)
        except OSError as exc:
            raise ConfigError(f"cannot read the simulated report secret {path}: {exc}") from exc
        if len(data) != REPORT_SECRET_SIZE:
            raise ConfigError(f"{path} is {len(data)} bytes, expected {REPORT_SECRET_SIZE}")
        return data

    # --- trust and collateral -------------------------------------------------------------------
    def sgx_root_fingerprint(self) -> bytes:
        return pki.fingerprint(self._certs["sgx-root"])

    def ark_fingerprint(self) -> bytes:
        return pki.fingerprint(self._certs["ark"])

    def trust_anchors(self) -> TrustAnchors:
        """Anchors that trust this platform's SGX root and ARK as *simulated* roots, nothing else.

        Combine with production anchors via ``DEFAULT_TRUST.with_sim_roots(...)`` if needed.
        """
        return TrustAnchors(
            intel_roots=frozenset(),
            amd_arks=frozenset(),
            sim_roots=frozenset({self.sgx_root_fingerprint(), self.ark_fingerprint()}),
        )

    def intel_pki(self) -> IntelSimPki:
        return IntelSimPki(
            root=self._certs["sgx-root"], root_key=self.ec_key("sgx-root"),
            pck_ca=self._certs["pck-ca"], pck_ca_key=self.ec_key("pck-ca"),
            tcb_signing=self._certs["tcb-signing"], tcb_signing_key=self.ec_key("tcb-signing"),
        )  # fmt: skip

    def collateral(self, kind: TeeKind, *, now: dt.datetime | None = None) -> SimCollateral:
        """Freshly signed DCAP collateral for the simulated SGX or TDX platform."""
        if kind not in (TeeKind.SGX, TeeKind.TDX):
            raise ConfigError(f"DCAP collateral exists for sgx and tdx, not {kind.value!r}")
        return build_collateral(
            kind, pki=self.intel_pki(), config=self._config, now=now or dt.datetime.now(dt.UTC)
        )

    def pck_chain_pem(self, kind: TeeKind) -> bytes:
        """PCK leaf, PCK Platform CA, root: the certification data of a quote."""
        leaf = self._certs["pck-tdx" if kind is TeeKind.TDX else "pck-sgx"]
        return pki.cert_pem(leaf, self._certs["pck-ca"], self._certs["sgx-root"])

    def snp_chain(self) -> bytes:
        """PEM ASK then ARK, as AMD KDS serves ``cert_chain``."""
        return pki.cert_pem(self._certs["ask"], self._certs["ark"])

    def vcek_der(self) -> bytes:
        return self._certs["vcek"].public_bytes(serialization.Encoding.DER)

    def snp_certificates(self) -> bytes:
        """PEM VCEK, ASK, ARK: what an evidence envelope carries for SNP."""
        return pki.cert_pem(self._certs["vcek"], self._certs["ask"], self._certs["ark"])

    def snp_crl(self, *, now: dt.datetime | None = None) -> bytes:
        """A DER CRL signed by the simulated ARK (revokes nothing), like KDS's ``crl``."""
        when = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0) - dt.timedelta(hours=1)
        return pki.issue_crl(
            issuer=self._certs["ark"], issuer_key=self.key("ark"), revoked_serials=(),
            this_update=when, next_update=when + dt.timedelta(days=30), number=1,
        )  # fmt: skip

    # --- changes --------------------------------------------------------------------------------
    def with_tcb(self, status: TcbStatus, advisories: tuple[str, ...]) -> Self:
        """Persist a new TCB status (and advisories) for future collateral; return the result."""
        new = self._config.model_copy(
            update={
                "tcb_status": status.value,
                "advisory_ids": advisories,
                "tcb_evaluation_data_number": self._config.tcb_evaluation_data_number + 1,
            }
        )
        new = cfg.SimConfig.model_validate(new.model_dump())
        try:
            write_atomic(self._paths.config, new.to_json())
        except OSError as exc:
            raise ConfigError(f"cannot update {self._paths.config}: {exc}") from exc
        state = type(self)(self._paths.root, new, self._certs)
        state._keys = self._keys
        return state

    def describe(self) -> dict[str, object]:
        """Public facts about the platform (certificate names, fingerprints, TCB status)."""
        return {
            "state_dir": str(self._paths.root),
            "created": self._config.created,
            "tcb_status": self._config.tcb_status,
            "advisory_ids": list(self._config.advisory_ids),
            "tcb_evaluation_data_number": self._config.tcb_evaluation_data_number,
            "sgx_root_sha256": self.sgx_root_fingerprint().hex(),
            "ark_sha256": self.ark_fingerprint().hex(),
            "sgx_fmspc": cfg.SGX_FMSPC.hex(),
            "tdx_fmspc": cfg.TDX_FMSPC.hex(),
            "snp_product": cfg.SNP_PRODUCT,
            "chip_id": self._config.chip_id,
            "certificates": {
                name: {
                    "subject": cert.subject.rfc4514_string(),
                    "not_after": cert.not_valid_after_utc.isoformat(),
                }
                for name, cert in self._certs.items()
            },
        }
