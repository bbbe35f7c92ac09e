"""Pod spec and sample release policy text for a catalog entry. Pure.

Recipes describe their pod as a :class:`PodParts`; :func:`spec_toml` writes the commented
``sealpod.toml`` and :func:`policy_toml` the sample release policy, which grants exactly the
secrets the spec reads (env, files and each volume's key), pinned to one signer and product id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sealpod.catalog.model import Layout, toml_list, toml_str


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretFile:
    """A ``[[files]]`` entry: a secret (or one field of a JSON ``tls-cert`` secret)."""

    path: str
    secret: str
    field: str | None = None
    mode: int = 0o400


@dataclass(frozen=True, slots=True, kw_only=True)
class PodParts:
    """The pieces of a pod spec a recipe chooses."""

    title: str
    entrypoint: str
    args: tuple[str, ...] = ()
    user: str
    workdir: str = "/"
    env: tuple[tuple[str, str], ...] = ()  # literal values
    secret_env: tuple[tuple[str, str], ...] = ()  # (variable, secret name)
    files: tuple[SecretFile, ...] = ()
    volumes: tuple[tuple[str, str], ...] = ()  # (name, path)
    rollback_window_ms: int = 0  # of every volume (docs/runtime.md, "The rollback window")
    tmpfs: tuple[str, ...] = ()
    ratls: str | None = None  # where sealpod run puts an RA-TLS key.pem and cert.pem
    ready_tcp: str
    product_id: int
    memory: str
    backends: tuple[str, ...]


def spec_toml(parts: PodParts) -> str:
    """The commented ``sealpod.toml`` for ``parts`` (``[image] source`` is ``rootfs``)."""
    out = [
        f"# {parts.title}",
        "# Written by `sealpod catalog build`. Every password and key comes from the KMS after",
        "# attestation; none is in this file or the image.",
        "",
        "[image]",
        'source = "rootfs"',
        "",
        "[process]",
        f"entrypoint = {toml_str(parts.entrypoint)}",
        f"args = {toml_list(parts.args)}",
        f"workdir = {toml_str(parts.workdir)}",
        f"user = {toml_str(parts.user)}",
        "",
        "[process.env]",
    ]
    out += [f"{name} = {toml_str(value)}" for name, value in parts.env]
    out += [f"{name} = {{ secret = {toml_str(secret)} }}" for name, secret in parts.secret_env]
    for f in parts.files:
        out += ["", "[[files]]", f"path = {toml_str(f.path)}", f"secret = {toml_str(f.secret)}"]
        if f.field is not None:
            out.append(f"field = {toml_str(f.field)}")
        out.append(f"mode = 0o{f.mode:o}")
    for name, path in parts.volumes:
        out += [
            "",
            f"# Encrypted volume; its key is the KMS secret volume.{name}.",
            "[[volumes]]",
            f"path = {toml_str(path)}",
            f"name = {toml_str(name)}",
        ]
        if parts.rollback_window_ms:
            out += [
                "# Commits may return before the KMS records them; a restored copy can undo at",
                '# most this many ms of synced writes (docs/runtime.md, "The rollback window").',
                f"rollback_window_ms = {parts.rollback_window_ms}",
            ]
    out += [
        "",
        "[runtime]",
        f"tmpfs = {toml_list(parts.tmpfs)}",
        f"ready_tcp = {toml_str(parts.ready_tcp)}",
        *([f"ratls = {toml_str(parts.ratls)}"] if parts.ratls else []),
        "",
        "[tee]",
        f"backends = {toml_list(parts.backends)}",
        f"memory = {toml_str(parts.memory)}",
        "",
        "[identity]",
        f"product_id = {parts.product_id}",
        "svn = 1",
        "",
    ]
    return "\n".join(out)


def policy_toml(
    layout: Layout,
    *,
    measurement: str | None,
    signer: str | None,
    allow_simulation: bool,
) -> str:
    """The sample release policy for ``layout``'s pod.

    With ``measurement`` and ``signer`` (after ``sealpod build``) they are filled in; otherwise
    they are placeholders an operator must replace (the KMS refuses the file until then).
    """
    released = layout.released_secrets()
    lines = [
        f"# Release policy for the catalog entry {layout.recipe!r}.",
        "# Put it into the KMS with: sealpod kms policy put NAME THIS_FILE",
        "# It grants exactly the secrets the pod reads: its env and file secrets, and the key",
        "# of each encrypted volume (volume.<name>), all in one attestation answer.",
    ]
    if allow_simulation:
        lines += [
            "# SIMULATION: allow_simulation = true accepts evidence from the simulated TEE, which",
            "# protects nothing. It is here for the local demo only; delete it (and list your",
            "# hardware in `tees`) before a real deployment.",
            "allow_simulation = true",
        ]
    else:
        lines.append('tees = ["snp", "tdx", "sgx"]')
    lines += [
        "# The bundle's author key (`sealpod inspect BUNDLE` prints signer_id) and product id:",
        "# any later signed version of this pod passes; pin `measurements` to allow one build.",
        f"signer = {toml_str(signer or 'REPLACE-WITH-SIGNER-ID')}",
        f"product_id = {layout.product_id}",
        "min_svn = 1",
    ]
    if measurement is not None:
        lines.append(f"measurements = [{toml_str(measurement)}]")
    lines += [
        "",
        "[release]",
        f"secrets = {toml_list(released)}",
        "# Volume keys that do not exist yet are made by the KMS at the first release.",
        "generate_volume_keys = true",
        "",
    ]
    return "\n".join(lines)


def secret_summary(layout: Layout) -> Sequence[str]:
    """The commands that create the pod's secrets in the KMS, one per line."""
    return [s.put_command() for s in layout.secrets]
