"""The bundled SmolLM2 GGUF and the generated task data, shared by the fine-tuning tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keel.deploy.bundled import smollm2_gguf
from keel.finetune.data import Example, parse_examples
from keel.finetune.scan import default_scanners
from keel.registry.service import RegistryService
from keel.registry.specs import ModelVersionSpec, ProviderSpec
from training.finetune.generate import generate


def add_bundled_base(registry: RegistryService, actor: str = "test") -> None:
    """smollm2@1 in the default project, served from the bundled GGUF: the base jobs tune."""
    registry.put_provider(
        "default",
        ProviderSpec(name="local", kind="local", config={"model_path": "bundled:smollm2"}),
        actor,
    )
    registry.add_model_version(
        "default",
        ModelVersionSpec(name="smollm2", provider="local", upstream_model="smollm2"),
        actor,
    )


@pytest.fixture(scope="session")
def base_gguf() -> Path:
    return smollm2_gguf()


def task_examples(n: int, seed: int = 7) -> list[Example]:
    import json

    train, _ = generate(n, 0, seed)
    return parse_examples("".join(json.dumps(r) + "\n" for r in train).encode())


def task_file(n: int, seed: int = 7) -> bytes:
    import json

    train, _ = generate(n, 0, seed)
    return "".join(json.dumps(r) + "\n" for r in train).encode()


@pytest.fixture(scope="session")
def scanners() -> Any:
    """The guard's scanners, loaded once: every job scans with them (the models load slowly)."""
    return default_scanners()


@pytest.fixture(scope="session")
def base_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Converted once per session: reading the GGUF through transformers is the slow part."""
    return tmp_path_factory.mktemp("bases")
