"""What verification costs a semantic candidate: keel.cache.verify.why_not timed per pair.

    .venv/bin/python bench/cache_verify_cost.py [--pairs bench/data/cache_real_pairs.jsonl]
        [--rounds 5]

Side by side with another version of the code: extract it and put it first on the path,
e.g. `git archive COMMIT src/keel | tar -x -C /tmp/previous` and run this file with
`PYTHONPATH=/tmp/previous/src`; alternate the two runs on the same machine.

Each round clears the memoised readings, then times every pair once with nothing read
("first": the cost for the first candidate of a lookup, whose question is new) and once
more ("memoised": the next candidates, the question already read). Prints JSON with the
p50/p90/p99 in milliseconds and where keel was imported from.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import keel
from keel.cache import reading, verify

PAIRS = Path(__file__).resolve().parent / "data" / "cache_real_pairs.jsonl"


def _clear() -> None:
    for module in (reading, verify):
        for value in vars(module).values():
            clear = getattr(value, "cache_clear", None)
            if callable(clear):
                clear()


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {f"p{q}": round(ordered[min(len(ordered) - 1, len(ordered) * q // 100)] * 1e3, 4)
            for q in (50, 90, 99)}  # fmt: skip


def run(path: Path, rounds: int) -> dict[str, Any]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    pairs = [(row["query"], row["cached"]) for row in rows]
    first: list[float] = []
    memoised: list[float] = []
    for _ in range(rounds):
        _clear()
        for samples in (first, memoised):
            for query, cached in pairs:
                started = time.perf_counter()
                verify.why_not(query, cached)
                samples.append(time.perf_counter() - started)
    return {
        "bench": "cache_verify_cost",
        "keel": str(Path(keel.__file__).parent),
        "pairs": len(pairs),
        "rounds": rounds,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "first_ms": _percentiles(first),
        "memoised_ms": _percentiles(memoised),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=Path, default=PAIRS)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(run(args.pairs, args.rounds)))


if __name__ == "__main__":
    main()
