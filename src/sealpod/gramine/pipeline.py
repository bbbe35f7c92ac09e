"""The Gramine pipeline's I/O: write a bundle's manifest, run ``gramine-sgx-sign``, record the
enclave identity.

``sealpod gramine manifest BUNDLE -o DIR`` -> ``DIR/sealpod.manifest`` (checked, parsed back).
``sealpod gramine sign DIR --key author.pem`` -> runs ``gramine-sgx-sign`` (only where Gramine is
installed), which writes ``DIR/sealpod.manifest.sgx`` and ``DIR/sealpod.sig``; sealpod then reads
the SIGSTRUCT, verifies its RSA-3072 signature, checks it was made with the given key, and writes
``DIR/sgx-identity.json`` (MRENCLAVE, MRSIGNER, product id, svn, debug) and
``DIR/sgx-policy.toml``, a release policy pinning them (``sealpod kms policy put NAME
DIR/sgx-policy.toml``). The private key reaches ``gramine-sgx-sign`` through an anonymous memory
file (``/dev/fd/N``), never a file on disk or the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sealpod._files import read_limited, write_atomic
from sealpod.build.bundle import ROOTFS_NAME, load_bundle
from sealpod.build.keys import AuthorPrivateKey, KeyType, key_type
from sealpod.build.manifest import Manifest
from sealpod.errors import ConfigError, EvidenceSignatureError, SpecError, TeeUnavailable
from sealpod.gramine.manifest import HostLayout, build_manifest, render_manifest
from sealpod.gramine.sigstruct import SIGSTRUCT_SIZE, Sigstruct, parse_sigstruct, verify_sigstruct
from sealpod.runtime.users import MAX_TABLE_SIZE, UserTable
from sealpod.spec.model import SecretRef

MANIFEST_FILE = "sealpod.manifest"
MANIFEST_SGX_FILE = "sealpod.manifest.sgx"
SIG_FILE = "sealpod.sig"
IDENTITY_FILE = "sgx-identity.json"
POLICY_FILE = "sgx-policy.toml"
SIGNER_TOOL = "gramine-sgx-sign"
SIGN_TIMEOUT_SECS = 600


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestResult:
    path: Path
    measurement: bytes
    trusted_files: int
    volumes: int

    def to_dict(self) -> dict[str, object]:
        return {
            "manifest": str(self.path),
            "measurement": self.measurement.hex(),
            "trusted_files": self.trusted_files,
            "encrypted_mounts": self.volumes,
        }


def resolve_user(user: str, rootfs: Path) -> tuple[int, int]:
    """``UID[:GID]`` or a user name from the rootfs's ``/etc/passwd`` (as ``sealpod run`` does).

    Raises:
        SpecError: the name is not in the rootfs's passwd file.
    """
    passwd = rootfs / "etc" / "passwd"
    text = None
    if passwd.is_file() and not passwd.is_symlink():
        text = read_limited(passwd, "rootfs /etc/passwd", limit=MAX_TABLE_SIZE, error=SpecError)
    return UserTable.parse(text).resolve(user)


def write_manifest(
    bundle_path: Path,
    out: Path,
    *,
    premain_dir: str,
    volume_dir: str,
    host_bundle_dir: str | None = None,
    signer: bytes | None = None,
) -> ManifestResult:
    """Load (and signature-check) the bundle, generate, check and write ``out/sealpod.manifest``.

    Raises:
        BundleError / SignatureError: the bundle does not load or is signed by another signer.
        SpecError: the manifest cannot express the pod, or the checker refused it.
        ConfigError: ``out`` cannot be written.
    """
    bundle = load_bundle(bundle_path, signer=signer)
    uid, gid = resolve_user(bundle.manifest.process.user, bundle_path / ROOTFS_NAME)
    layout = HostLayout(
        bundle_dir=host_bundle_dir or str(bundle_path.resolve()),
        premain_dir=premain_dir,
        volume_dir=volume_dir,
        uid=uid,
        gid=gid,
    )
    doc = build_manifest(bundle.manifest, measurement=bundle.measurement, layout=layout)
    text = render_manifest(doc)
    try:
        out.mkdir(parents=True, exist_ok=True)
        target = out / MANIFEST_FILE
        if target.is_symlink():
            raise ConfigError(f"{target} is a symlink; refusing to write through it")
        write_atomic(target, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write {out / MANIFEST_FILE}: {exc.strerror or exc}") from exc
    sgx = doc["sgx"]
    trusted = sgx["trusted_files"] if isinstance(sgx, dict) else []
    return ManifestResult(
        path=target,
        measurement=bundle.measurement,
        trusted_files=len(trusted) if isinstance(trusted, list) else 0,
        volumes=len(bundle.manifest.volumes),
    )


def load_sigstruct(path: Path) -> Sigstruct:
    """Read and parse a ``.sig`` file (the signature is not checked here).

    Raises:
        ConfigError: unreadable or larger than a SIGSTRUCT.
        MalformedEvidence: not a SIGSTRUCT.
    """
    return parse_sigstruct(read_limited(path, "SIGSTRUCT", limit=SIGSTRUCT_SIZE, error=ConfigError))


def bundle_secret_names(manifest: Manifest) -> list[str]:
    """Every KMS secret the pod needs (env, files, volume keys), each once, as ``sealpod run``
    asks for them."""
    names = [v.secret for v in manifest.process.env.values() if isinstance(v, SecretRef)]
    names += [f.secret for f in manifest.files]
    names += [f"volume.{v.name}" for v in manifest.volumes]
    return list(dict.fromkeys(names))


def policy_toml(sig: Sigstruct, secrets: list[str] | None = None) -> str:
    """A release policy (docs/policy.md) pinning this enclave: MRENCLAVE, MRSIGNER, product id and
    minimum svn, SGX only; with ``secrets``, the ``[release]`` table granting them."""
    lines = [
        "# Generated by `sealpod gramine sign` from the enclave's SIGSTRUCT.",
        "# MRENCLAVE pins this exact build; drop `measurements` to accept any enclave of this",
        "# signer and product with at least this svn.",
        'tees = ["sgx"]',
        f'measurements = ["{sig.mr_enclave.hex()}"]',
        f'signer = "{sig.mr_signer.hex()}"',
        f"product_id = {sig.isv_prod_id}",
        f"min_svn = {sig.isv_svn}",
    ]
    if sig.debug:
        lines.append("# this enclave is a DEBUG enclave: no protection; refused unless you add")
        lines.append("# allow_debug = true")
    if secrets is not None:
        listed = ", ".join(json.dumps(name) for name in secrets)
        lines += ["", "[release]", f"secrets = [{listed}]"]
    return "\n".join(lines) + "\n"


def sign(
    out: Path, key: AuthorPrivateKey, *, date: str | None = None, secrets: list[str] | None = None
) -> Sigstruct:
    """Run ``gramine-sgx-sign`` on ``out/sealpod.manifest`` with ``key``; verify and record
    (``secrets``: what the recorded policy's ``[release]`` grants).

    Raises:
        ConfigError: the key is not RSA-3072 with e=3, or the manifest is missing.
        TeeUnavailable: ``gramine-sgx-sign`` is not on PATH, or it failed.
        MalformedEvidence / EvidenceSignatureError: the ``.sig`` it wrote does not parse or
            verify, or was made with another key.
    """
    if not isinstance(key, rsa.RSAPrivateKey) or key_type(key) is not KeyType.RSA_3072:
        raise ConfigError(
            "SGX signing needs an RSA-3072 key with e=3 (sealpod keygen --type rsa-3072)"
        )
    manifest = out / MANIFEST_FILE
    if not manifest.is_file():
        raise ConfigError(f"{manifest} is missing; run `sealpod gramine manifest` first")
    tool = shutil.which(SIGNER_TOOL)
    if tool is None:
        raise TeeUnavailable(
            f"{SIGNER_TOOL} is not on PATH: Gramine is not installed on this machine. Copy "
            f"{out} to a machine with Gramine (>= 1.6) and run `sealpod gramine sign` there"
        )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.memfd_create("sealpod-sgx-key", os.MFD_CLOEXEC)
    try:
        os.write(fd, pem)
        os.lseek(fd, 0, os.SEEK_SET)
        argv = [tool, "--manifest", str(manifest), "--output", str(out / MANIFEST_SGX_FILE),
                "--sigfile", str(out / SIG_FILE), "--key", f"/dev/fd/{fd}"]  # fmt: skip
        if date is not None:
            argv += ["--date", date]
        try:
            done = subprocess.run(  # noqa: S603 - a fixed tool found on PATH, no shell
                argv, pass_fds=(fd,), capture_output=True, timeout=SIGN_TIMEOUT_SECS, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TeeUnavailable(f"{SIGNER_TOOL} could not run: {exc}") from exc
    finally:
        os.close(fd)
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise TeeUnavailable(
            f"{SIGNER_TOOL} failed with exit code {done.returncode}: " + " | ".join(tail)
        )
    sig = load_sigstruct(out / SIG_FILE)
    verify_sigstruct(sig)
    expected = key.public_key().public_numbers().n.to_bytes(384, "little")
    if sig.modulus != expected:
        raise EvidenceSignatureError(
            f"{SIG_FILE} was signed with another key than the one given",
            step="SIGSTRUCT signer",
        )
    record_identity(out, sig, secrets)
    return sig


def record_identity(out: Path, sig: Sigstruct, secrets: list[str] | None = None) -> None:
    """Write ``sgx-identity.json`` and ``sgx-policy.toml`` beside the manifest.

    Raises:
        ConfigError: they cannot be written.
    """
    try:
        write_atomic(
            out / IDENTITY_FILE,
            (json.dumps(sig.to_json(), indent=2, sort_keys=True) + "\n").encode(),
            mode=0o644,
        )
        write_atomic(out / POLICY_FILE, policy_toml(sig, secrets).encode(), mode=0o644)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the enclave identity into {out}: {exc.strerror or exc}"
        ) from exc
