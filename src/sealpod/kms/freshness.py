"""The KMS as the version counter store of one encrypted volume.

:class:`KmsVolumeFreshness` is a :class:`~sealpod.volume.freshness.Freshness` backed by the
counter the KMS holds for a volume name (``GET``/``POST /v1/volumes/{name}/counter``, see
:mod:`sealpod.kms.volumes`), over an attested session whose token releases ``volume.<name>``.
``open_volume(path, key, counter=KmsVolumeFreshness(client, session, "data"))`` then refuses
an older copy of the volume with :class:`RollbackDetected` (exit 15), across restarts and
hosts, because the host cannot roll the KMS back.

The KMS keys counters by name and also records the volume id registered under it, so a volume
that is not the one the KMS knows (a fresh one put in place of a used one, or another
volume's directory) is refused too.
"""

from __future__ import annotations

from sealpod.errors import RollbackDetected
from sealpod.kms.client import AttestedSession, KmsClient


class KmsVolumeFreshness:
    """The counter of volume ``name`` in the KMS, as a :class:`Freshness` store."""

    def __init__(self, client: KmsClient, session: AttestedSession, name: str) -> None:
        self.client = client
        self.session = session
        self.name = name

    def __repr__(self) -> str:
        return f"KmsVolumeFreshness(name={self.name!r})"

    def get(self, volume_id: str) -> int:
        """The counter the KMS holds for this volume (0 if it has never seen the name).

        Raises:
            RollbackDetected: the KMS holds another volume under this name.
            KmsError: the KMS is unreachable or refuses the session (exit 16).
        """
        held = self.client.volume_counter(self.session, self.name)
        if held.volume_id is not None and held.volume_id != volume_id:
            raise RollbackDetected(
                f"volume {self.name!r} is {volume_id}, but the KMS holds volume "
                f"{held.volume_id} at counter {held.counter} under that name "
                "(a replaced or foreign volume)",
                volume_id=held.volume_id,
                counter=held.counter,
            )
        return held.counter

    def advance(self, volume_id: str, expected_old: int, new: int) -> None:
        """Compare-and-swap the KMS's counter from ``expected_old`` to ``new``.

        Raises:
            RollbackDetected: the KMS holds another counter or volume (used twice, or rolled
                back).
            ConfigError: a malformed volume id or ``new <= expected_old``.
            KmsError: the KMS is unreachable or refuses the session (exit 16).
        """
        self.client.advance_volume_counter(
            self.session, self.name, volume_id=volume_id, expected=expected_old, new=new
        )
