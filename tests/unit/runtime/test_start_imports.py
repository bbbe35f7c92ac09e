"""What a `sealpod run` start imports before its phases: a structural check of sys.modules in a
fresh interpreter (bench/run_bench.py measures the time). Each entry below was on the start path
once and cost tens of milliseconds of every container start."""

from __future__ import annotations

from conftest import modules_after

#: Loaded only by the code that needs them, never by the runtime's import or its KMS client.
NOT_AT_START = (
    "httpcore",  # httpx's default transport; imports trio when the fuse extra is installed
    "trio",
    "anyio",
    "sealpod.kms.models",  # the KMS server's pydantic models
    "sealpod.kms.tokens",  # joserfc JWS: only for reads after the attestation
    "pydantic_settings",  # SEALPOD_HOME is one variable
    "sealpod.verify.amd",  # the verifier's X.509 stack: only for an SNP auxblob
    "asn1crypto",
    "sealpod.tee.sim",  # the simulator: only with --tee sim
    "sealpod.kms.serverinfo",  # a local KMS is looked up only when no URL is given
)


def test_the_runtime_and_its_kms_client_load_nothing_they_do_not_use() -> None:
    loaded = modules_after(
        "from sealpod.cli.main import build_app, modules_for\n"
        "build_app(modules_for(['run', 'b']))\n"
        "import sealpod.runtime.run\n"
        "from sealpod.kms.client import KmsClient\n"
        "KmsClient('https://127.0.0.1:1', verify=False).close()"
    )
    early = sorted(m for m in NOT_AT_START if m in loaded)
    assert early == [], f"imported at start: {early}"
