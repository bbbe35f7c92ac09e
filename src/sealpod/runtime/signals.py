"""The signals ``sealpod run`` forwards to its workload (and the agent's client relays to the
pod's process): one list, in a module light enough for the client to import."""

from __future__ import annotations

import signal

FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
