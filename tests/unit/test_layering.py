"""The pure layers (codecs, models, verification, policy, volume format) do no I/O, read no
clock, and import nothing from the I/O layers. This walks their AST to keep that honest."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "sealpod"

# Modules (or packages) that make up layers 0-2.
PURE = [
    "errors.py",
    "_binary.py",
    "evidence",
    "verify",
    "policy",
    "spec/model.py",
    "spec/canonical.py",
    "collateral/models.py",
    "volume/format.py",
    "build/manifest.py",
    "runtime/plan.py",
    "runtime/users.py",
    "runtime/sandbox.py",
    "gramine/sigstruct.py",
    "gramine/manifest_check.py",
    "ratls/evidence.py",
    "ratls/certificate.py",
    "ratls/verify.py",
    "crypto/pem.py",
]
FORBIDDEN_MODULES = {
    "httpx", "sqlalchemy", "fastapi", "uvicorn", "alembic", "socket", "subprocess",
    "pyfuse3", "trio", "requests", "urllib.request", "shutil", "tempfile",
}  # fmt: skip
# Pure code may import these sealpod packages only.
ALLOWED_SEALPOD = (
    "sealpod.errors", "sealpod._binary", "sealpod.evidence", "sealpod.verify", "sealpod.policy",
    "sealpod.spec.model", "sealpod.spec.canonical", "sealpod.collateral.models", "sealpod.crypto",
    "sealpod.volume.format", "sealpod.build.manifest", "sealpod.runtime.plan",
    "sealpod.runtime.users", "sealpod.gramine.sigstruct", "sealpod.ratls.evidence",
    "sealpod.ratls.certificate",
)  # fmt: skip
FORBIDDEN_CALLS = {
    "now", "utcnow", "today", "time", "time_ns", "monotonic", "perf_counter",
    "read_bytes", "read_text", "write_bytes", "write_text", "getenv", "urandom",
}  # fmt: skip


def _pure_files() -> list[Path]:
    files: list[Path] = []
    for entry in PURE:
        p = SRC / entry
        if p.is_dir():
            files.extend(sorted(p.rglob("*.py")))
        elif p.is_file():
            files.append(p)
    return files


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_pure_module_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    problems: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            for name in names:
                if name.split(".")[0] in FORBIDDEN_MODULES or name in FORBIDDEN_MODULES:
                    problems.append(f"line {node.lineno}: imports {name}")
                if name.startswith("sealpod") and not name.startswith(ALLOWED_SEALPOD):
                    problems.append(f"line {node.lineno}: imports I/O layer {name}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "open":
                problems.append(f"line {node.lineno}: calls open()")
            if isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_CALLS:
                problems.append(f"line {node.lineno}: calls .{func.attr}()")
    assert not problems, f"{path.relative_to(SRC)} breaks the layering rule:\n" + "\n".join(
        problems
    )


def test_pure_layers_exist() -> None:
    assert len(_pure_files()) >= 3
