"""Evaluation at scale against a real `keel serve`: a dataset of N items built from N traces
in one call, and an M-item experiment with offline scorers against the counting stub (or,
with --real, against the bundled SmolLM2); --judge measures an LLM judge's stability.

    python bench/evals.py                      # 1,000 traces -> dataset; 500-item experiment
    python bench/evals.py --real 100           # the experiment on the bundled model
    python bench/evals.py --judge 20 --runs 5  # the bundled model as judge, 5 runs

Prints JSON: seconds for each step, items/s, and for the judge the share of items whose
verdict was the same in every run and the number of parse failures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch import MODEL, free_port, start, wait_http

ROOT = Path(__file__).resolve().parents[1]
OFFLINE_SCORERS = [
    {"type": "exact", "name": "accuracy"},
    {"type": "contains", "value": "item"},
    {"type": "regex", "pattern": r"item-\d+"},
    {"type": "json"},
    {"type": "numeric", "tolerance": 0.5},
    {"type": "rouge"},
    {"type": "bleu"},
    {"type": "latency"},
    {"type": "pii"},
    {"type": "secrets"},
]


def api(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    response = client.request(method, path, **kwargs)
    if response.status_code >= 400:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
    return response.json()


def wait_runs(client: httpx.Client, run_ids: list[str]) -> list[dict[str, Any]]:
    while True:
        runs = [api(client, "GET", f"/api/experiments/{r}") for r in run_ids]
        if all(r["state"] in ("succeeded", "failed", "cancelled") for r in runs):
            return runs
        time.sleep(0.2)


def traces_to_dataset(client: httpx.Client, n: int) -> dict[str, Any]:
    """N live calls (their traces), then one call that makes them a dataset version."""
    for i in range(n):
        api(
            client,
            "POST",
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": f"trace-{i}"}]},
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the recorder writes traces in the background
        page = api(client, "GET", "/api/traces", params={"q": f"trace-{n - 1}", "limit": 1})
        if page["data"]:
            break
        time.sleep(0.5)
    started = time.perf_counter()
    version = api(client, "POST", "/api/datasets/from-traces/from-traces",
                  json={"q": "trace-", "limit": n})  # fmt: skip
    seconds = time.perf_counter() - started
    return {"traces": n, "items": version["items"], "seconds": round(seconds, 3)}


def experiment(client: httpx.Client, n: int, model: str, scorers: list[dict[str, Any]],
               name: str) -> dict[str, Any]:  # fmt: skip
    items = [{"input": f"item-{i}", "expected": f"item-{i}" if i % 5 else "other"}
             for i in range(n)]  # fmt: skip
    api(client, "POST", "/api/datasets", json={"name": name, "items": items})
    spec = {"name": name, "dataset": name, "subjects": [{"model": model,
            "params": {"temperature": 0, "max_tokens": 16}}], "scorers": scorers}  # fmt: skip
    started = time.perf_counter()
    (run,) = api(client, "POST", "/api/experiments", json=spec)["data"]
    (done,) = wait_runs(client, [run["id"]])
    seconds = time.perf_counter() - started
    summary = done["summary"]
    return {"items": n, "model": model, "scorers": len(scorers), "state": done["state"],
            "seconds": round(seconds, 2), "items_per_s": round(n / seconds, 1),
            "errors": summary["errors"],
            "accuracy": summary["metrics"].get("accuracy", {}).get("mean")}  # fmt: skip


JUDGE_ITEMS = [
    ("What is the capital of France?", "Paris"), ("What is 2 + 2?", "4"),
    ("What colour is the sky on a clear day?", "Blue"), ("How many legs has a spider?", "8"),
    ("What is the capital of Japan?", "Tokyo"), ("What is the boiling point of water in C?",
    "100"), ("Who wrote Hamlet?", "Shakespeare"), ("What is the largest planet?", "Jupiter"),
]  # fmt: skip


def judge_stability(client: httpx.Client, n: int, runs: int) -> dict[str, Any]:
    """The bundled model answers N questions, then judges them `runs` times at temperature 0."""
    rows = [JUDGE_ITEMS[i % len(JUDGE_ITEMS)] for i in range(n)]
    items = [{"input": q, "expected": a, "metadata": {"n": i}} for i, (q, a) in enumerate(rows)]
    api(client, "POST", "/api/datasets", json={"name": "judge", "items": items})
    scorer = {"type": "judge", "route": "smollm2", "rubric": "Is the answer correct and "
              "consistent with the reference answer?", "scale": "pass-fail"}  # fmt: skip
    spec = {
        "name": "judge",
        "dataset": "judge",
        "scorers": [scorer],
        "subjects": [{"model": "smollm2", "params": {"temperature": 0, "max_tokens": 24}}],
    }
    started = time.perf_counter()
    verdicts: dict[int, set[Any]] = {}
    parse_failures = 0
    for _ in range(runs):
        (run,) = api(client, "POST", "/api/experiments", json=spec)["data"]
        wait_runs(client, [run["id"]])
        for item in api(client, "GET", f"/api/experiments/{run['id']}/items")["data"]:
            value = item["scores"].get("judge")
            parse_failures += value is None
            verdicts.setdefault(item["item_id"], set()).add(value)
    same = sum(1 for v in verdicts.values() if len(v) == 1)
    return {"items": n, "runs": runs, "same_verdict_share": round(same / n, 4),
            "parse_failures": parse_failures, "seconds": round(time.perf_counter() - started,
                                                               1)}  # fmt: skip


def start_real(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "KEEL_CONFIG": "/dev/null", "HF_HUB_OFFLINE": "1"}
    log = (data_dir.parent / "serve.log").open("wb")
    keel = subprocess.Popen([sys.executable, "-m", "keel", "serve", "--port", str(port),
                             "--data-dir", str(data_dir), "--no-embeddings"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/readyz", timeout=300)
    return keel, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=1000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--real", type=int, default=0, help="items on the bundled model")
    parser.add_argument("--judge", type=int, default=0, help="items judged by the model")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        procs: list[subprocess.Popen[bytes]] = []
        try:
            if args.real or args.judge:
                keel, base = start_real(data_dir)
                procs.append(keel)
            else:
                stub, keel, base = start(data_dir, free_port(), 32)
                procs += [keel, stub]
            key = (data_dir / "admin.key").read_text().strip()
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
                if args.judge:
                    result["judge"] = judge_stability(client, args.judge, args.runs)
                elif args.real:
                    result["experiment_real"] = experiment(
                        client, args.real, "smollm2", OFFLINE_SCORERS, "real"
                    )
                else:
                    result["dataset_from_traces"] = traces_to_dataset(client, args.traces)
                    result["experiment_stub"] = experiment(
                        client, args.items, MODEL, OFFLINE_SCORERS, "stub"
                    )
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(30)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
