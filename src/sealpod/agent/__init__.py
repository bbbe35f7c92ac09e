"""sealpod.agent: ``sealpod agent serve``, a per-host process that starts pods warm.

A ``sealpod run`` pays for importing sealpod's Python stack before its first phase; the agent
imports it once and forks one child per start (:mod:`.server`). ``sealpod run`` finds it
through its socket (:mod:`.client`, standard library only) and hands it the command line;
:mod:`.protocol` is the wire between the two. docs/agent.md says what it changes and what not.
"""
