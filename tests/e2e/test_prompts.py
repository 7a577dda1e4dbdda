"""Prompts by name through a real `keel serve`, answered by the real bundled SmolLM2.

A recording proxy sits between Keel and llama.cpp, so the test sees exactly what reached
the model after a label move.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from openai import OpenAI

from keel.deploy.bundled import smollm2_gguf
from keel.deploy.llamacpp import LlamaCppServer, LlamaServerConfig
from tests.support.keel_process import KeelProcess, start_keel
from tests.support.recording_proxy import LoopThread, RecordingProxy

pytestmark = pytest.mark.e2e

SYSTEM_V1 = "You are a cheerful assistant for {{ product }}. Answer in one short sentence."
SYSTEM_V2 = "You are a pirate who sells {{ product }}. Answer like a pirate, in one sentence."


def prompt_file(path: Path, system: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "name": "support-reply",
                "messages": [{"role": "system", "content": system}],
                "variables": [{"name": "product", "type": "string"}],
                "config": {"model": "smollm2", "max_tokens": 24, "temperature": 0.0},
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingProxy]:
    """The real bundled model on llama.cpp, behind a proxy that records every request."""
    logs = tmp_path_factory.mktemp("llama")
    loop = LoopThread()
    server = LlamaCppServer(
        LlamaServerConfig(
            model_path=smollm2_gguf(), model_alias="smollm2", log_path=logs / "llama.log"
        )
    )
    proxy = RecordingProxy(server.base_url)
    try:
        loop.run(server.start())
        loop.run(proxy.start())
        yield proxy
    finally:
        loop.run(proxy.stop())
        loop.run(server.stop())
        loop.close()


@pytest.fixture(scope="module")
def keel(
    tmp_path_factory: pytest.TempPathFactory, recorder: RecordingProxy
) -> Iterator[KeelProcess]:
    folder = tmp_path_factory.mktemp("keel-prompts")
    config = folder / "keel.yaml"
    upstream = {"name": "recorder", "base_url": recorder.base_url, "models": ["smollm2"]}
    config.write_text(yaml.safe_dump({"upstreams": [upstream]}))
    process = start_keel(
        folder / "data", "--config", str(config), "--no-local-model", "--no-embeddings"
    )
    yield process
    process.stop()


def keel_cli(keel: KeelProcess, *args: str) -> str:
    env = {**os.environ, "KEEL_DATA_DIR": str(keel.data_dir), "KEEL_URL": keel.base_url,
           "KEEL_CONFIG": "/dev/null", "COLUMNS": "200"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "keel", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_moving_the_production_label_changes_what_reaches_the_model(
    keel: KeelProcess, recorder: RecordingProxy, tmp_path: Path
) -> None:
    v1 = prompt_file(tmp_path / "v1.yaml", SYSTEM_V1)
    v2 = prompt_file(tmp_path / "v2.yaml", SYSTEM_V2)
    assert keel_cli(keel, "prompts", "push", str(v1), "-m", "cheerful") == (
        "support-reply: created version 1\n")  # fmt: skip
    assert keel_cli(keel, "prompts", "push", str(v2), "-m", "pirate") == (
        "support-reply: created version 2\n")  # fmt: skip
    keel_cli(keel, "prompts", "label", "support-reply", "production", "1")

    # 1. By name, with the `prompt` extension field.
    answer = httpx.post(
        f"{keel.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {keel.api_key}"},
        json={
            "prompt": {"name": "support-reply", "variables": {"product": "Keel"}},
            "messages": [{"role": "user", "content": "What do you sell?"}],
        },
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-keel-prompt"] == "support-reply"
    assert answer.headers["x-keel-prompt-version"] == "1"
    sent = recorder.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": SYSTEM_V1.replace("{{ product }}", "Keel")},
        {"role": "user", "content": "What do you sell?"},
    ]
    assert "prompt" not in sent
    assert sent["max_tokens"] == 24
    text = answer.json()["choices"][0]["message"]["content"]
    assert text.strip()
    assert text == recorder.responses[-1]["choices"][0]["message"]["content"]

    keel_cli(keel, "prompts", "label", "support-reply", "production", "2")

    # 2. The same, from the official SDK with `model: prompt:NAME` (no extension field).
    client = OpenAI(base_url=f"{keel.base_url}/v1", api_key=keel.api_key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="prompt:support-reply",
        messages=[{"role": "user", "content": "What do you sell?"}],
        extra_body={"prompt_variables": {"product": "Keel"}},
    )
    assert raw.headers["x-keel-prompt-version"] == "2"
    completion = raw.parse()
    sent = recorder.requests[-1]
    assert sent["messages"][0] == {
        "role": "system",
        "content": SYSTEM_V2.replace("{{ product }}", "Keel"),
    }
    assert "prompt_variables" not in sent
    assert sent["model"] == "smollm2"
    reply = completion.choices[0].message.content
    assert reply
    assert reply == recorder.responses[-1]["choices"][0]["message"]["content"]
