"""RA-TLS: TLS certificates carrying TEE evidence bound to their key (docs/ratls.md).

* :mod:`sealpod.ratls.evidence` — the interoperable CBOR evidence (2.23.133.5.4.9) (pure);
* :mod:`sealpod.ratls.certificate` — reading certificates and their evidence extensions (pure);
* :mod:`sealpod.ratls.verify` — inspection, key binding, verification and policy (pure);
* :mod:`sealpod.ratls.issue` — :func:`issue_ratls_certificate` (key + evidence + certificate);
* :mod:`sealpod.ratls.client` — verified ``ssl`` sockets and an ``httpx`` transport.
"""
