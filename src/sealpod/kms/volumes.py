"""Volume version counters held by the KMS: the rollback defence that outlives a restart.

An encrypted volume raises its header counter on every commit (docs/volume-format.md). A host
that keeps an old copy of the volume directory can put it back between two runs; the volume
alone cannot tell. The KMS keeps, per volume name, the volume id and the last counter, which
the host cannot roll back:

* ``GET /v1/volumes/{name}/counter`` — what the KMS holds (``volume_id`` null and ``counter`` 0
  for a volume it has never seen);
* ``POST /v1/volumes/{name}/counter`` ``{"volume_id", "expected", "new"}`` — compare-and-swap:
  moves to ``new`` only if the KMS holds ``expected`` for that volume id (``expected`` 0: no
  record yet, which registers the volume id). Anything else is refused with 409
  ``kms.volume_rollback``, saying what the KMS holds: an older copy of the volume, a
  replaced volume, or the same volume used twice at once.

Both are workload requests, authenticated exactly as secret reads are (the attestation token
plus a DPoP-style proof by its ephemeral key, :meth:`AttestationService.authorize`; each proof
accepted once), and allowed only to a token whose policies release the volume's key
``volume.<name>`` *now* (:meth:`AttestationService.admit`, in the counter's own transaction: a
removed or changed policy stops its tokens at once): whoever may open the volume may move its
counter, nobody else. Every move and every refused move is in the
audit chain (name, volume id, old and new counter, the workload's measurement); reads are not.
"""

from __future__ import annotations

from sealpod.errors import VolumeCounterConflict
from sealpod.kms.models import VolumeCounter, VolumeCounterAdvance
from sealpod.kms.release import VOLUME_KEY_PREFIX
from sealpod.kms.service import AttestationService, Authorized
from sealpod.kms.state import to_ms
from sealpod.kms.store import Tx
from sealpod.kms.store.volumes import CounterRecord, get_counter, swap_counter

AUDIT_KIND = "volume.counter"


class VolumeCounters:
    """The two counter operations, on the attestation service's store, keys and checks."""

    def __init__(self, attestation: AttestationService) -> None:
        self.attestation = attestation
        self.state = attestation.state
        self.store = attestation.store

    def _authorize(
        self, name: str, *, authorization: str | None, proof: str | None, method: str, path: str
    ) -> Authorized:
        return self.attestation.authorize(
            VOLUME_KEY_PREFIX + name,
            authorization=authorization,
            proof=proof,
            method=method,
            path=path,
            kind=AUDIT_KIND,
        )

    def get(
        self, name: str, *, authorization: str | None, proof: str | None, path: str
    ) -> VolumeCounter:
        """What the KMS holds for volume ``name``.

        Raises:
            KmsAuthError: no/expired/forged token, or no valid proof by its key (401).
            KmsForbidden: the token's policies do not release ``volume.<name>`` (403).
        """
        auth = self._authorize(
            name, authorization=authorization, proof=proof, method="GET", path=path
        )
        # A write transaction: admitting records the proof (and audits a refusal).
        with self.store.transaction() as tx:
            refusal = self.attestation.admit(tx, auth, VOLUME_KEY_PREFIX + name, kind=AUDIT_KIND)
            record = get_counter(tx, name) if refusal is None else None
        if refusal is not None:
            raise self.attestation.refusal_error(refusal, VOLUME_KEY_PREFIX + name)
        return _answer(name, record)

    def advance(
        self,
        name: str,
        req: VolumeCounterAdvance,
        *,
        authorization: str | None,
        proof: str | None,
        path: str,
    ) -> VolumeCounter:
        """Compare-and-swap volume ``name``'s counter from ``req.expected`` to ``req.new``.

        Raises:
            KmsAuthError: no/expired/forged token, or no valid proof by its key (401).
            KmsForbidden: the token's policies do not release ``volume.<name>`` (403).
            VolumeCounterConflict: the KMS holds another counter or another volume id (409).
        """
        auth = self._authorize(
            name, authorization=authorization, proof=proof, method="POST", path=path
        )
        tc = auth.claims
        details: dict[str, object] = {
            **auth.details,
            "workload": tc.claims.get("workload"),
            "volume_id": req.volume_id,
            "old": req.expected,
            "new": req.new,
        }
        with self.store.transaction() as tx:
            refusal = self.attestation.admit(tx, auth, VOLUME_KEY_PREFIX + name, kind=AUDIT_KIND)
            if refusal is not None:
                held = None
            else:
                held = self._swap(tx, name, req, details, actor=tc.subject)
        if refusal is not None:
            raise self.attestation.refusal_error(refusal, VOLUME_KEY_PREFIX + name)
        if held is not None:
            raise _conflict(name, req, held)
        return VolumeCounter(name=name, volume_id=req.volume_id, counter=req.new)

    def _swap(
        self,
        tx: Tx,
        name: str,
        req: VolumeCounterAdvance,
        details: dict[str, object],
        *,
        actor: str,
    ) -> CounterRecord | None:
        """Compare-and-swap in ``tx`` and audit the outcome; the record held on a refusal."""
        held = swap_counter(
            tx,
            name=name,
            volume_id=req.volume_id,
            expected=req.expected,
            new=req.new,
            now_ms=to_ms(self.state.clock()),
        )
        if held is not None:
            details.update(
                codes=["volume_rollback"],
                stored_volume_id=held.volume_id,
                stored_counter=held.counter,
            )
        self.state.audit(
            tx,
            kind=AUDIT_KIND,
            actor=actor,
            subject=name,
            outcome="ok" if held is None else "refused",
            details=details,
        )
        return held


def _answer(name: str, record: CounterRecord | None) -> VolumeCounter:
    if record is None:
        return VolumeCounter(name=name, volume_id=None, counter=0)
    return VolumeCounter(name=name, volume_id=record.volume_id, counter=record.counter)


def _conflict(name: str, req: VolumeCounterAdvance, held: CounterRecord) -> VolumeCounterConflict:
    if held.volume_id is not None and held.volume_id != req.volume_id:
        why = (
            f"volume {name!r} is registered as volume {held.volume_id} at counter "
            f"{held.counter}, not as {req.volume_id} (a replaced or foreign volume)"
        )
    elif held.volume_id is None:
        why = (
            f"volume {name!r} has no counter in the KMS (0), expected {req.expected} "
            "(the KMS never saw this volume move)"
        )
    else:
        why = (
            f"volume {name!r} is at counter {held.counter} in the KMS, expected {req.expected} "
            "(an older copy of the volume, or the volume used twice at once)"
        )
    return VolumeCounterConflict(why, volume_id=held.volume_id, counter=held.counter)
