"""Per-entity thresholds for the PII tagger, chosen on fresh text from the training generator.

    python -m training.pii.thresholds     # --n 2000 --seed 8 --folder src/keel/guard/models

Draws `--n` texts from `training/pii/generate.py` with a seed training did not use and
with Faker locales that neither training nor the held-out set use (names and streets the
tagger never saw: on names it was trained on it looks surer than it is). It runs the tagger
once, and for each of PERSON and STREET_ADDRESS picks the threshold on the entity's B+I
probability with the best F2 (recall counts twice: a name that reaches the model costs more
than a word hidden by mistake). ORGANIZATION keeps 0.5. The thresholds go into the
tagger's card. Neither the held-out set nor the dev file is read.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keel.guard.pii_network import TAGGED
from keel.guard.pii_tagger import DEFAULT_VERSION, NameTagger, artifact_dir
from training.pii.generate import fixed_hash_seed, generate

GRID = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
VALIDATION_LOCALES = (
    "en_CA", "en_PK", "en_KE", "en_NG", "fr_CA", "fr_BE", "de_LU", "it_CH", "es_VE",
    "de_LI", "sq_AL", "bs_BA", "mt_MT", "lb_LU", "uz_UZ", "zu_ZA",
)  # fmt: skip


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def scores(
    tagger: NameTagger, records: Sequence[Any], entity: str, thresholds: tuple[float, ...]
) -> dict[str, float]:
    tagger.thresholds = thresholds
    gold_n = pred_n = found = correct = 0
    for record in records:
        gold = [(s, e) for s, e, t in record.spans if t == entity]
        pred = [(t.start, t.end) for t in tagger.tag(record.text) if t.entity == entity]
        gold_n += len(gold)
        pred_n += len(pred)
        found += sum(1 for g in gold if any(_overlaps(g, p) for p in pred))
        correct += sum(1 for p in pred if any(_overlaps(g, p) for g in gold))
    precision = correct / pred_n if pred_n else 0.0
    recall = found / gold_n if gold_n else 0.0
    f2 = 5 * precision * recall / (4 * precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f2": round(f2, 4)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=8, help="not the training seed")
    parser.add_argument("--folder", type=Path, default=artifact_dir())
    parser.add_argument("--version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    fixed_hash_seed()

    import torch

    torch.set_num_threads(1)
    card_path = args.folder / f"{args.version}.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    if args.seed == card.get("trained", {}).get("seed"):
        raise SystemExit(f"seed {args.seed} is the training seed; choose another")
    records = generate(args.n, args.seed, locales=VALIDATION_LOCALES)
    tagger = NameTagger(version=args.version, folder=args.folder)
    tagger.load()
    # Each forward pass is the same whatever the thresholds: run it once per text.
    memo: dict[tuple[int, ...], Any] = {}
    raw = tagger._probs

    def cached(ids: list[int], cases: list[int]) -> Any:
        key = (*ids, -1, *cases)
        if key not in memo:
            memo[key] = raw(ids, cases)
        return memo[key]

    tagger._probs = cached  # type: ignore[method-assign]
    chosen = dict.fromkeys(TAGGED, 0.5)
    report: dict[str, Any] = {}
    for entity in ("PERSON", "STREET_ADDRESS"):
        rows = {}
        for value in GRID:
            trial = {**chosen, entity: value}
            rows[value] = scores(tagger, records, entity, tuple(trial[e] for e in TAGGED))
        best = max(GRID, key=lambda v: (rows[v]["f2"], v))
        chosen[entity] = best
        report[entity] = {"chosen": best, "grid": {str(v): r for v, r in rows.items()}}
        print(json.dumps({entity: report[entity]}), flush=True)
    card["thresholds"] = chosen
    card["thresholds_chosen_on"] = {
        "generator": "training/pii/generate.py",
        "texts": args.n,
        "seed": args.seed,
        "locales": list(VALIDATION_LOCALES),
        "rule": "best F2 per entity on a grid; ORGANIZATION fixed at 0.5",
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"thresholds": chosen, "card": str(card_path)}))


if __name__ == "__main__":
    main()
