"""Generation speed of llama.cpp builds side by side: the portable build against a native one.

Each build is a wheel from Keel's wheelhouse (`~/.cache/keel/wheels/<key>/`, made by
`./run`), installed into a scratch folder. Rounds alternate between the builds, each in a
fresh process that loads the bundled SmolLM2 and generates a fixed number of tokens at
temperature 0, so both see the same machine noise. Prints JSON: tokens/s per build per
round, the median, the ratio, and each build's compiled CPU features.

    python bench/llama_build.py                 # every build in the wheelhouse
    python bench/llama_build.py --rounds 5 --tokens 128
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

WHEELHOUSE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "keel" / "wheels"

# Runs inside each build's process: load the model, warm up, then time one generation.
PROBE = """
import json, sys, time
import llama_cpp
from keel.deploy.bundled import smollm2_gguf
tokens, threads = int(sys.argv[1]), int(sys.argv[2])
llm = llama_cpp.Llama(model_path=str(smollm2_gguf()), n_ctx=512, n_threads=threads,
                      verbose=False, seed=1)
prompt = "Write a long story about a lighthouse keeper."
never_stop = {llm.token_eos(): -100.0}  # a fixed number of tokens, whatever the model says
llm(prompt, max_tokens=8, temperature=0.0, logit_bias=never_stop)
started = time.perf_counter()
out = llm(prompt, max_tokens=tokens, temperature=0.0, stop=[], logit_bias=never_stop)
elapsed = time.perf_counter() - started
made = out["usage"]["completion_tokens"]
print(json.dumps({"tokens": made, "seconds": elapsed,
                  "features": llama_cpp.llama_print_system_info().decode()}))
"""


def _builds(wheelhouse: Path) -> dict[str, Path]:
    found = {}
    for folder in sorted(wheelhouse.iterdir()):
        wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
        if folder.is_dir() and not folder.name.endswith(".tmp") and wheels:
            found[folder.name] = wheels[0]
    return found


def _install(wheel: Path, target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(target), str(wheel)],
        check=True,
    )  # fmt: skip


def _probe(target: Path, tokens: int, threads: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *sys.path[1:]])}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tokens), str(threads)],
        env=env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-400:]}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def bench(options: argparse.Namespace) -> dict[str, Any]:
    builds = _builds(options.wheelhouse)
    if not builds:
        raise SystemExit(f"no wheels under {options.wheelhouse}; build them with ./run first")
    threads = options.threads or os.cpu_count() or 1
    rates: dict[str, list[float]] = {name: [] for name in builds}
    features: dict[str, str] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="keel-llama-") as scratch:
        targets = {}
        for index, (name, wheel) in enumerate(builds.items()):
            targets[name] = Path(scratch) / str(index)
            _install(wheel, targets[name])
        for round_ in range(options.rounds):
            order = list(builds) if round_ % 2 == 0 else list(reversed(builds))
            for name in order:
                result = _probe(targets[name], options.tokens, threads)
                if "error" in result:
                    errors[name] = result["error"]
                    continue
                if not result["tokens"]:
                    errors[name] = "generated no tokens"
                    continue
                rates[name].append(result["tokens"] / result["seconds"])
                features[name] = result["features"]
    medians = {name: statistics.median(r) for name, r in rates.items() if r}
    portable = next((n for n in medians if "x86-64-v3" in n), None)
    return {
        "bench": "llama_build",
        "tokens": options.tokens,
        "threads": threads,
        "rounds": options.rounds,
        "tokens_per_s": {name: [round(r, 1) for r in rs] for name, rs in rates.items()},
        "median_tokens_per_s": {name: round(m, 1) for name, m in medians.items()},
        "ratio_to_portable": (
            {name: round(m / medians[portable], 3) for name, m in medians.items()}
            if portable
            else {}
        ),
        "features": features,
        "errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheelhouse", type=Path, default=WHEELHOUSE)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="default: every core")
    result = bench(parser.parse_args())
    print(json.dumps(result, indent=2))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
