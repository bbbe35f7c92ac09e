"""Evidence generation: the simulated platform, Gramine's /dev/attestation, configfs-tsm.

``base`` (Evidence, TeeBackend), ``select.open_backend``, ``detect.detect_backends``; ``sim``
(SimPlatform, SimBackend) over ``sim_platform``/``sim_pki``/``sim_collateral``/``sim_quote``;
``gramine``, ``tsm`` (+ ``snp_certs``), ``local`` (local attestation). See docs/tee.md.
"""
