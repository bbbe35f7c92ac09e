"""Building sealed bundles: a rootfs or container image in, a measured, signed bundle out.

* :mod:`sealpod.build.keys` — author keys (Ed25519, ECDSA P-384, RSA-3072 e=3), signer id;
* :mod:`sealpod.build.manifest` — the manifest model, measurement and tree comparison (pure);
* :mod:`sealpod.build.hashing` — parallel walk / copy / hash of image trees;
* :mod:`sealpod.build.sign` — ``signature.json``;
* :mod:`sealpod.build.bundle` — :func:`build_bundle`, :func:`load_bundle`, :func:`verify_bundle`;
* :mod:`sealpod.build.image`, :mod:`sealpod.build.oci` — image import and OCI layout output.
"""
