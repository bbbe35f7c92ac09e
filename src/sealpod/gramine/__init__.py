"""Intel SGX through Gramine: manifests, SIGSTRUCTs and the signing step (docs/sgx.md).

* :mod:`sealpod.gramine.manifest` — a Gramine manifest from a bundle (pure);
* :mod:`sealpod.gramine.manifest_check` — key names and types from Gramine's manifest syntax (pure);
* :mod:`sealpod.gramine.sigstruct` — the SIGSTRUCT codec, its RSA-3072 check and MRSIGNER (pure);
* :mod:`sealpod.gramine.pipeline` — writing the manifest, running ``gramine-sgx-sign``, recording
  MRENCLAVE/MRSIGNER and a release policy that pins them.
"""
