"""Measure the PII recognizers and the toxicity classifier on labelled data.

    python -m training.guard.evaluate pii [--data ../shared/data/pii/synth_pii_dev.json]
    python -m training.guard.evaluate toxicity

Prints JSON. A predicted span counts as correct when it overlaps a labelled span of the
same entity; precision and recall are per entity.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keel.guard.pii import ENTITIES, detect

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PII_DATA = REPO.parent / "shared" / "data" / "pii" / "synth_pii_dev.json"
TOXICITY_SAMPLE = REPO / "tests" / "guard" / "data" / "toxicity_sample.jsonl"

# The data's entity names for the ones Keel recognizes.
PRESIDIO_NAMES = {
    "EMAIL": "EMAIL_ADDRESS",
    "PHONE": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN": "IBAN_CODE",
    "IP_ADDRESS": "IP_ADDRESS",
    "US_SSN": "US_SSN",
    "UK_NINO": "UK_NINO",
    "PERSON": "PERSON",
    "STREET_ADDRESS": "STREET_ADDRESS",
}


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def evaluate_pii(records: list[dict[str, Any]], min_score: float = 0.5) -> dict[str, Any]:
    per: dict[str, dict[str, int]] = {
        e: {"gold": 0, "found": 0, "predicted": 0, "correct": 0} for e in ENTITIES
    }
    for record in records:
        text = record["full_text"]
        predictions = detect(text, ENTITIES, min_score)
        for entity in ENTITIES:
            gold = [
                (s["start_position"], s["end_position"])
                for s in record["spans"]
                if s["entity_type"] == PRESIDIO_NAMES[entity]
            ]
            pred = [(m.start, m.end) for m in predictions if m.entity == entity]
            counts = per[entity]
            counts["gold"] += len(gold)
            counts["predicted"] += len(pred)
            counts["found"] += sum(1 for g in gold if any(_overlaps(g, p) for p in pred))
            counts["correct"] += sum(1 for p in pred if any(_overlaps(g, p) for g in gold))
    report: dict[str, Any] = {}
    for entity, c in per.items():
        if not c["gold"] and not c["predicted"]:
            continue
        report[entity] = {
            "labelled": c["gold"],
            "predicted": c["predicted"],
            "precision": round(c["correct"] / c["predicted"], 3) if c["predicted"] else None,
            "recall": round(c["found"] / c["gold"], 3) if c["gold"] else None,
        }
    return report


def evaluate_toxicity(sample: Path, threshold: float) -> dict[str, Any]:
    from keel.guard.toxicity import ToxicityScanner

    rows = [json.loads(line) for line in sample.read_text(encoding="utf-8").splitlines() if line]
    scanner = ToxicityScanner(threshold=threshold)
    scores = [scanner.probability(r["text"]) for r in rows]
    tp = sum(1 for r, s in zip(rows, scores, strict=True) if r["label"] == 1 and s >= threshold)
    fp = sum(1 for r, s in zip(rows, scores, strict=True) if r["label"] == 0 and s >= threshold)
    pos = sum(r["label"] for r in rows)
    neg = len(rows) - pos
    errors = [
        {"text": r["text"], "label": r["label"], "score": round(s, 3)}
        for r, s in zip(rows, scores, strict=True)
        if (s >= threshold) != (r["label"] == 1)
    ]
    return {
        "sample": str(sample.name),
        "n": len(rows),
        "positives": pos,
        "threshold": threshold,
        "precision": round(tp / (tp + fp), 3) if tp + fp else None,
        "recall": round(tp / pos, 3) if pos else None,
        "fpr": round(fp / neg, 3) if neg else None,
        "errors": errors,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.guard.evaluate", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    pii = sub.add_parser("pii", help="per-entity precision/recall on presidio-research synth")
    pii.add_argument("--data", type=Path, default=DEFAULT_PII_DATA)
    pii.add_argument("--min-score", type=float, default=0.5)
    tox = sub.add_parser("toxicity", help="the toxicity scanner on the bundled labelled sample")
    tox.add_argument("--sample", type=Path, default=TOXICITY_SAMPLE)
    tox.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    if args.what == "pii":
        if not args.data.is_file():
            parser.error(f"{args.data} not found; point --data at synth_pii_dev.json")
        records = json.loads(args.data.read_text(encoding="utf-8"))
        result = {"data": args.data.name, "records": len(records), "min_score": args.min_score}
        result["entities"] = evaluate_pii(records, args.min_score)
    else:
        result = evaluate_toxicity(args.sample, args.threshold)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
