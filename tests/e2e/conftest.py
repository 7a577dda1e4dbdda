from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.keel_process import KeelProcess, start_keel


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    """A real `keel serve` with the bundled SmolLM2 and MiniLM, shared by a module's tests."""
    data_dir: Path = tmp_path_factory.mktemp("keel-e2e") / "data"
    process = start_keel(data_dir)
    yield process
    process.stop()
