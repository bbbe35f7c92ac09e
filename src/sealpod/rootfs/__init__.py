"""Root filesystems built from distribution packages (:mod:`.debian`: ``mmdebstrap``)."""
