"""The catalog: ready confidential pods for common software (``sealpod catalog``).

Each entry is a :class:`~sealpod.catalog.model.Recipe` (Debian packages, the service account,
parameters) that renders into a pod spec, files for the rootfs and a sample release policy
(:mod:`sealpod.catalog.spec`). :mod:`sealpod.catalog.rootfs` builds the rootfs (mmdebstrap,
cached) or imports a user's image archive; :mod:`sealpod.catalog.build` writes it all out.
See docs/catalog.md.
"""
