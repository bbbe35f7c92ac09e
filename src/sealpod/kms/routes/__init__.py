"""The KMS's HTTP routes, one module per audience; each module's ``add_*_routes(app, ...)``
declares its routes on the app, with the services they call (:func:`sealpod.kms.app.create_app`
assembles them; routes are declared on the app itself, not through included routers, so the
router matches them directly):

* :mod:`.workload` — what an attested workload calls: challenge, attestation, secret reads,
  volume counters (the hot routes: each parses its body once and answers from the event loop
  on the embedded store);
* :mod:`.admin` — secrets, policies, users, audit and key rotation, for admin tokens;
* :mod:`.system` — health, readiness, metrics, seal state, the CA and the token keys;
* :mod:`.kbs` — the Trustee KBS protocol.

Every route has one handler; routes are thin: parse, call the service, render.
"""
