"""Public test fakes and builders (for sealpod's tests and for users' own): e.g. ``fake_tsm``
(a configfs-tsm tree with a thread playing the kernel), ``fake_gramine`` (a /dev/attestation
tree), ``sim_fakes`` (both served by the simulated platform). Each module documents itself."""
