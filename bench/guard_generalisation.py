"""How the injection classifier does on kinds of text it never saw: leave-one-source-out.

    .venv/bin/python -m bench.guard_generalisation [--recipes v2,v3] [--shipped]
                                                   [--json-out loso.json]

For each recipe (v2: the data `injection-v2` was trained on; v3: plus the extra sources
and the generated indirect injections), every source family it trains on is held out in
turn and scored by a model fitted on the rest; families it never trains on (Tensor Trust,
TheBigPromptLibrary, NotInject, the generator's held-out half, ...) are scored by the
model fitted on all of it. Prints JSON: precision, recall, F1 and FPR per family and per
kind, the over-defence rate on benign-hard rows, and the acceptance summary (mean F1 over
attack families, lowest recall, highest benign FPR). `--shipped` also scans the
evaluation-only families through the shipped scanner, each row in the role it arrives as.
Takes 10-20 minutes on 2 busy cores (MiniLM embeddings are cached in ~/.cache/keel).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.guard.generalisation import (
    V2,
    Prepared,
    Recipe,
    choose_threshold,
    loso_scores,
    prepare_rows,
    report,
)
from training.guard.sources import EVALUATION_ONLY, V3_FAMILIES, load


def v3(threshold: float = 0.5, skip_below: float = 0.21) -> Recipe:
    return Recipe(
        "v3 recipe (v2 + extra sources + generated indirect)",
        frozenset(V3_FAMILIES),
        {"C": 8.0, "word_scale": 1.5, "emb_scale": 0.5},
        threshold=threshold,
        skip_below=skip_below,
    )


def shipped(p: Prepared) -> dict[str, Any]:
    """The shipped scanner (default threshold) on families no shipped model trains on."""
    from keel.guard.base import ScanContext
    from keel.guard.injection import InjectionScanner

    scanner = InjectionScanner()
    out: dict[str, Any] = {"model": scanner.model.version, "threshold": scanner.decision.threshold}
    for family in sorted(EVALUATION_ONLY | {"bipia-text", "greshake"}):
        rows = [r for r in p.rows if r.family == family]
        flagged = np.asarray(
            [scanner.scan(r.text, ScanContext(role=r.role)).blocked for r in rows]  # type: ignore[arg-type]
        )
        labels = np.asarray([r.label for r in rows])
        pos, neg = labels == 1, labels == 0
        out[family] = {
            "n": len(rows),
            "recall": round(float(flagged[pos].mean()), 4) if pos.any() else None,
            "fpr": round(float(flagged[neg].mean()), 4) if neg.any() else None,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipes", default="v2,v3")
    parser.add_argument("--shipped", action="store_true", help="also scan with the shipped model")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--v3-threshold",
        type=float,
        help="score v3 at this threshold (the artifact's) instead of choosing one on the "
        "held-out scores",
    )
    parser.add_argument("--scores-out", type=Path, help="save every held-out score (.npz)")
    args = parser.parse_args()
    started = time.monotonic()
    p = prepare_rows(load())
    results: dict[str, Any] = {"bench": "injection leave-one-source-out", "recipes": {}}
    for name in filter(None, args.recipes.split(",")):
        if name == "v2":
            recipe = V2
            scores = loso_scores(p, recipe)
            threshold = recipe.threshold
        elif name == "v3":
            recipe = v3()
            scores = loso_scores(p, recipe)
            # Unless given, the threshold is chosen on the held-out scores of the families
            # it trains on.
            threshold = args.v3_threshold or choose_threshold(p, scores, sorted(recipe.families))
            results["v3_threshold"] = threshold
        if args.scores_out:
            saved: dict[str, Any] = dict(scores)
            np.savez(args.scores_out.with_suffix(f".{name}.npz"), **saved)
        else:
            print(f"unknown recipe {name!r} (known: v2, v3)", file=sys.stderr)
            return 2
        results["recipes"][name] = report(p, recipe, scores, threshold)
    if args.shipped:
        results["shipped_scanner"] = shipped(p)
    results["seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(results, indent=2)
    if args.json_out:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
