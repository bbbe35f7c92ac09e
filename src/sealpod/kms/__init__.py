"""sealpod.kms — the key broker: attested secret release, release policies, an
envelope-encrypted store (SQLite or PostgreSQL), users and roles, a hash-chained audit log.

Modules: ``models`` (wire protocol), ``keys`` (master key, envelope encryption), ``shamir``,
``tokens`` (ES256 tokens, DPoP-style proofs), ``jwe``, ``audit``, ``release`` (release
policies), ``store`` (SQLAlchemy + Alembic), ``state`` (init, seal/unseal), ``service``
(challenge/attest/release), ``admin``, ``kbs`` (Trustee KBS protocol), ``verifier``, ``app``
(``create_app``), ``server`` (uvicorn), ``client`` / ``admin_client`` (httpx), ``fakes``,
``demo``. See docs/kms.md.
"""
