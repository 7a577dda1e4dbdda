"""The layering contracts of docs/architecture.md hold, and an upward import breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(source_root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=source_root, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_the_package_keeps_every_layering_contract() -> None:
    done = lint_imports(REPO / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_provider_importing_the_server_is_caught(tmp_path: Path) -> None:
    shutil.copytree(
        REPO / "src" / "keel", tmp_path / "keel", ignore=shutil.ignore_patterns("*.pyc")
    )
    provider = tmp_path / "keel" / "providers" / "base.py"
    provider.write_text(provider.read_text() + "\nimport keel.server.app  # noqa: E402\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "Providers import nothing of Keel's above them BROKEN" in done.stdout
    assert "keel.providers.base -> keel.server.app" in done.stdout


def test_limits_importing_the_gateway_is_caught(tmp_path: Path) -> None:
    # The request type lives in keel.calls so that steps below the gateway need not reach up.
    shutil.copytree(
        REPO / "src" / "keel", tmp_path / "keel", ignore=shutil.ignore_patterns("*.pyc")
    )
    admission = tmp_path / "keel" / "limits" / "admission.py"
    admission.write_text(admission.read_text() + "\nimport keel.gateway.pipeline  # noqa: E402\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "Services below the request path never import the gateway BROKEN" in done.stdout
    assert "keel.limits.admission -> keel.gateway.pipeline" in done.stdout
