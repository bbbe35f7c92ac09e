"""The pod spec (``sealpod.toml``) and canonical JSON.

* :mod:`sealpod.spec.model` — the strict pydantic model (pure) and :func:`parse_spec`;
* :mod:`sealpod.spec.canonical` — :func:`canonical_json`, the bytes the measurement hashes (pure);
* :mod:`sealpod.spec.load` — :func:`load_spec` reads a file;
* :mod:`sealpod.spec.template` — the example spec and sample rootfs ``sealpod init`` writes.
"""
