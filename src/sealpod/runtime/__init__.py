"""sealpod.runtime: ``sealpod run``, a sealed pod's container runtime.

The phases, in order (:mod:`sealpod.runtime.run` strings them together):

1. *verify* — :func:`sealpod.build.bundle.load_bundle` + :func:`~sealpod.build.bundle.check_files`:
   the signature against the pinned signer, every trusted file re-hashed.
2. *attest* — :mod:`.kms`: challenge, ephemeral key, evidence over report_data, one answer with
   every secret; the KMS pinned by its key.
3. *provision* — :mod:`.provision`: env, files and volume keys, held in :mod:`.memory`.
4. *volumes* — :mod:`.volumes`: created on first start, checked against the KMS counter, served
   by FUSE in the private namespace of :mod:`.staging`.
5. *sandbox + exec* — :mod:`.sandbox` (bubblewrap's argv, pure), :mod:`.seccomp`,
   :mod:`.supervise` (start, signals, exit status).

:mod:`.plan` is the pure :class:`~sealpod.runtime.plan.RunPlan` that ``--dry-run`` prints. See
docs/runtime.md for the threat model of each backend.
"""
