"""Pieces every recipe shares: standard parameters, TLS files, the password check in shell."""

from __future__ import annotations

from collections.abc import Mapping

from sealpod.catalog.model import Param, ParamValue, SecretNeed
from sealpod.catalog.spec import SecretFile
from sealpod.spec.model import MAX_ROLLBACK_WINDOW_MS

#: Every backend; the release policy decides which evidence the KMS accepts (simulated
#: evidence only with allow_simulation, which the sample policy sets for the local demo only).
ALL_BACKENDS = ("snp", "tdx", "sgx", "sim")
ENTRY_DIR = "/usr/local/sbin"


def common_params(name: str, product_id: int, memory: str = "512M") -> tuple[Param, ...]:
    """``name`` (prefix of its secrets and volume), ``dns``, ``memory``, ``product_id`` and the
    volume's ``rollback_window_ms``."""
    return (
        Param(
            name="name",
            kind="name",
            default=name,
            help="instance name: its KMS secrets are NAME-*, its volume volume.NAME",
        ),
        Param(
            name="dns",
            kind="dns",
            default="localhost,127.0.0.1",
            help="names on the TLS certificate the KMS issues (comma-separated)",
        ),
        Param(name="memory", kind="size", default=memory, help="enclave / VM memory (tee.memory)"),
        Param(
            name="product_id",
            kind="int",
            default=product_id,
            help="identity.product_id, pinned by the release policy",
        ),
        Param(
            name="rollback_window_ms",
            kind="int",
            default=0,
            help="ms the KMS volume counter may lag synced writes (0: never; at most 60000)",
            maximum=MAX_ROLLBACK_WINDOW_MS,
        ),
    )


def tls_secret(values: Mapping[str, ParamValue]) -> SecretNeed:
    """The KMS-issued certificate (a fresh key at every release, signed by the KMS CA)."""
    dns = tuple(str(values["dns"]).split(","))
    return SecretNeed(
        name=f"{values['name']}-tls",
        generate="tls-cert",
        dns=dns,
        purpose="TLS key and certificate issued by the KMS CA at each release",
    )


def tls_files(values: Mapping[str, ParamValue]) -> tuple[SecretFile, ...]:
    """``/run/secrets/tls.key``, ``tls.crt`` and ``ca.crt``: the fields of the tls-cert secret."""
    secret = f"{values['name']}-tls"
    return (
        SecretFile(path="/run/secrets/tls.key", secret=secret, field="key", mode=0o400),
        SecretFile(path="/run/secrets/tls.crt", secret=secret, field="cert", mode=0o444),
        SecretFile(path="/run/secrets/ca.crt", secret=secret, field="ca", mode=0o444),
    )


def password_secret(name: str, purpose: str) -> SecretNeed:
    """A password the KMS generates (32 characters of A-Z a-z 0-9 - _ . ~)."""
    return SecretNeed(name=name, generate="password", purpose=purpose)


# Shell: read a password file into a variable, refusing characters the configs cannot quote.
SHELL_READ_FN = r"""
read_password() {  # VAR FILE: the secret file's content, refused if empty or unquotable
  _v=$(cat "$2") || { echo "sealpod entry: cannot read $2" >&2; exit 78; }
  case "$_v" in
    "" | *[!A-Za-z0-9_.~+=/@%:,-]*)
      echo "sealpod entry: $2 is empty or holds a character outside A-Z a-z 0-9 _.~+=/@%:,-" >&2
      exit 78 ;;
  esac
  eval "$1=\$_v"
}
"""
