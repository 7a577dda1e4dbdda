"""The bundled all-MiniLM-L6-v2, loaded offline from its package."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from keel.deploy.bundled import minilm_dir
from keel.embeddings.local import LocalEmbedder


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder("all-minilm-l6-v2", minilm_dir())


async def test_paraphrase_ranks_above_an_unrelated_sentence(embedder: LocalEmbedder) -> None:
    loaded = embedder
    result = await loaded.embed(
        [
            "How do I reset my password?",
            "I forgot my password and need to change it.",
            "The recipe needs two cups of flour.",
        ]
    )
    vectors = result.vectors
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    paraphrase, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert paraphrase > unrelated + 0.3
    assert result.prompt_tokens > 20
    assert loaded.ready


async def test_loading_does_not_block_the_event_loop() -> None:
    fresh = LocalEmbedder("all-minilm-l6-v2", minilm_dir())
    fresh.start_loading()
    ticks = 0
    while not fresh.ready and fresh.error is None:
        await asyncio.sleep(0.01)
        ticks += 1
    assert fresh.ready
    assert fresh.runtime == "onnxruntime"  # ready means its runtime is chosen, not before
    assert ticks > 0  # the loop kept running while the model loaded
    fresh.close()


async def test_onnx_runtime_gives_pytorchs_vectors(embedder: LocalEmbedder) -> None:
    # embed() runs on ONNX Runtime; its vectors (padding, truncation at 256 tokens and
    # token counts included) must be those PyTorch gives, or the indexes would drift.
    texts = ["ok", "Summarise this clause about termination.", "long " * 400, "é ☃ 漢字"]
    fast = await embedder.embed(texts)
    assert embedder.runtime == "onnxruntime"
    torch_only = LocalEmbedder("all-minilm-l6-v2", minilm_dir(), onnx=False)
    try:
        exact = await torch_only.embed(texts)
        assert torch_only.runtime == "torch"
    finally:
        torch_only.close()
    assert np.min(np.sum(fast.vectors * exact.vectors, axis=1)) >= 0.99999
    assert fast.prompt_tokens == exact.prompt_tokens


async def test_a_failed_onnx_export_keeps_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("exporter refused the graph")

    monkeypatch.setattr("keel.embeddings.local.onnx_encoder", broken)
    fresh = LocalEmbedder("all-minilm-l6-v2", minilm_dir())
    try:
        result = await fresh.embed(["still answers"])
        assert fresh.runtime == "torch"
        assert result.vectors.shape == (1, 384)
    finally:
        fresh.close()


async def test_approximate_vectors_keep_their_meaning(embedder: LocalEmbedder) -> None:
    # Traffic insights embed with the faster path; its vectors must stay where the exact
    # ones are (knowledge indexes and queries use the exact ones).
    texts = ["what is the weather like in oslo", "reset my bank password", "ok", "x " * 80]
    exact = await embedder.embed(texts)
    approximate = await embedder.embed_approximate(texts)
    assert approximate.vectors.shape == exact.vectors.shape == (4, 384)
    assert np.min(np.sum(exact.vectors * approximate.vectors, axis=1)) >= 0.999
    assert approximate.prompt_tokens == exact.prompt_tokens
    # Each text's vector is its own, whatever order the batches ran in.
    alone = await embedder.embed([texts[2]])
    assert float(alone.vectors[0] @ exact.vectors[2]) > 0.9999


def _priority(thread_name: str) -> tuple[int, int]:
    """(nice, scheduling policy) of this process's thread named `thread_name`."""
    tid = next(t.native_id for t in threading.enumerate() if t.name == thread_name)
    assert tid is not None
    return os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid)


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are per thread on Linux")
async def test_background_embedding_yields_the_cpu_and_requests_do_not(
    embedder: LocalEmbedder,
) -> None:
    # Traffic insights embed on the background worker at nice 19 (the default "low"); what a
    # request waits on (embed, embed_approximate) keeps the process's priority.
    texts = ["what is the weather like in oslo", "reset my bank password"]
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    background = await embedder.embed_background(texts)
    await embedder.embed_approximate(texts)
    assert _priority("keel-embed-background_0") == (19, os.SCHED_OTHER)
    assert _priority("keel-embed_0") == (mine, os.SCHED_OTHER)
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine
    exact = await embedder.embed(texts)
    assert np.min(np.sum(exact.vectors * background.vectors, axis=1)) >= 0.999


def test_a_refused_priority_is_logged_and_work_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from keel.embeddings.local import lower_priority

    def refuse(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    monkeypatch.delattr(os, "SCHED_IDLE", raising=False)
    with caplog.at_level("WARNING", logger="keel.embeddings"):
        assert lower_priority("low") is False
        assert lower_priority("idle") is False
        assert lower_priority("normal") is True
    assert len(caplog.records) == 2
    assert "keeps normal CPU priority" in caplog.records[0].getMessage()


def _mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _leftover_graphs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("keel-embed-child-*"))


@pytest.mark.skipif(sys.platform != "linux", reason="priorities as Linux sets them")
async def test_background_embedding_in_a_child_process(
    embedder: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With background_process, traffic's batches run in a child process at nice 19 with its
    # own encoder: the same vectors, and this process's threads are left alone.
    texts = ["what is the weather like in oslo", "reset my bank password", "ok"]
    child = LocalEmbedder("all-minilm-l6-v2", minilm_dir(), background_process=True)
    graphs_before = _leftover_graphs()
    setup = child._child_setup
    set_up_on: list[str] = []

    def spy() -> object:
        set_up_on.append(threading.current_thread().name)
        return setup()

    monkeypatch.setattr(child, "_child_setup", spy)
    try:
        background = await child.embed_background(texts)
        # The graph is exported for the child on the background worker, not on the one
        # requests' embeddings wait for.
        assert set_up_on == ["keel-embed-background_0"]
        pid = child.child_pid()
        assert pid is not None
        assert pid != os.getpid()
        assert os.getpriority(os.PRIO_PROCESS, pid) == 19
        # The parent embeds on ONNX Runtime, so the child runs its exported graph with the
        # Rust tokenizer and loads no PyTorch; the graph's temporary file is gone.
        assert child.runtime == "onnxruntime"
        assert "libtorch" not in _mapped_files(pid)
        assert _leftover_graphs() == graphs_before
        exact = await embedder.embed(texts)
        assert background.vectors.shape == (3, 384)
        assert np.min(np.sum(exact.vectors * background.vectors, axis=1)) >= 0.999
        assert background.prompt_tokens == exact.prompt_tokens
        # A child that dies hands background work back to this process, which goes on.
        os.kill(pid, 9)
        again = await child.embed_background(texts)
        assert np.min(np.sum(exact.vectors * again.vectors, axis=1)) >= 0.999
        assert child.child_pid() is None
    finally:
        child.close()


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are per thread on Linux")
async def test_background_embedding_on_onnx_runtime_keeps_its_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With one thread per call (the gateway's default), ONNX Runtime computes on the thread
    # that calls it, so traffic is embedded on ONNX Runtime at nice 19 where the CPU has no
    # native bfloat16 (PyTorch's Python between operators holds the GIL the gateway needs).
    one = LocalEmbedder("all-minilm-l6-v2", minilm_dir(), threads=1)
    texts = ["what is the weather like in oslo", "reset my bank password", "ok"]
    try:
        exact = await one.embed(texts)
        assert one.runtime == "onnxruntime"
        encoder = one._onnx
        assert encoder is not None
        ran_at: list[tuple[str, int]] = []
        run = encoder.run

        def spy(features: dict[str, object]) -> np.ndarray:
            me = threading.current_thread()
            ran_at.append((me.name, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
            return run(features)

        monkeypatch.setattr(encoder, "run", spy)
        background = await one.embed_background(texts)
        assert np.min(np.sum(exact.vectors * background.vectors, axis=1)) >= 0.999
        assert background.prompt_tokens == exact.prompt_tokens
        if not one._approximate_ok:  # else bfloat16 on PyTorch, which is faster there
            assert ran_at
            assert set(ran_at) == {("keel-embed-background_0", 19)}
    finally:
        one.close()
