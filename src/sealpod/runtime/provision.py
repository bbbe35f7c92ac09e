"""Phase *provision*: the released secrets turned into what the workload receives.

Environment variables (``{ secret = "NAME" }``) become part of the sandbox's environment,
which the kernel shows only to the workload's uid and root (``/proc/PID/environ``), never on a
command line. ``[[files]]`` contents and volume keys go into a :class:`SecretStore`
(``memfd_secret`` memory); the files reach the sandbox through pipes, which bubblewrap copies
into the pod's tmpfs — no byte of a secret is written to the host's disk.
"""

from __future__ import annotations

import json

from sealpod.errors import ConfigError
from sealpod.kms.client import ReleasedSecret
from sealpod.runtime.kms import Released
from sealpod.runtime.memory import SecretStore
from sealpod.runtime.plan import RATLS, RunPlan, SecretFile, workload_environment


def file_key(secret_file: SecretFile) -> str:
    """The store's name for a secret file's contents."""
    return f"file:{secret_file.path}"


def file_contents(secret_file: SecretFile, secret: ReleasedSecret) -> bytes:
    """What file ``secret_file`` holds: the whole value, or one member of a JSON secret.

    Raises:
        ConfigError: ``field`` is set but the secret is not a JSON object with that text
            member (the message names the file and the secret, never the value).
    """
    if secret_file.field is None:
        return secret.value
    try:
        data = json.loads(secret.value)
    except ValueError:
        data = None
    member = data.get(secret_file.field) if isinstance(data, dict) else None
    if not isinstance(member, str):
        raise ConfigError(
            f"files: {secret_file.path} wants field {secret_file.field!r} of secret"
            f" {secret_file.secret!r}, which is not a JSON object with that member"
            " (generate it with --generate tls-cert)"
        )
    return member.encode()


def prepare(
    plan: RunPlan, released: Released, *, ratls: tuple[bytes, bytes] | None = None
) -> tuple[SecretStore, dict[str, str]]:
    """The protected store (file contents, volume keys) and the workload's environment.
    ``ratls`` is the (key, certificate) PEM pair sealpod issued, for ``[runtime] ratls``.

    Raises:
        ConfigError: a secret cannot be an env value or a file's field; a volume key is not
            32 bytes.
    """
    values = released.secrets
    protected: dict[str, bytes] = {}
    for secret_file in plan.files:
        if secret_file.secret == RATLS:
            if ratls is None:
                raise ConfigError("the pod asks for an RA-TLS certificate but none was issued")
            pem = ratls[0] if secret_file.field == "key" else ratls[1]
            protected[file_key(secret_file)] = pem
            continue
        protected[file_key(secret_file)] = file_contents(secret_file, values[secret_file.secret])
    for volume in plan.volumes:
        key = values[volume.key_secret].value
        if len(key) != 32:
            raise ConfigError(
                f"secret {volume.key_secret!r} is {len(key)} bytes, expected a 32-byte volume"
                f" key (sealpod kms secret put {volume.key_secret} --generate bytes:32)"
            )
        protected[volume.key_secret] = key
    env = workload_environment(plan, {name: s.value for name, s in values.items()})
    store = SecretStore(protected)
    released.secrets.clear()  # the store holds them now; drop the decrypted copies
    return store, env
