"""The PII scanner on fresh training-generator text: the set its post-processing was tuned on.

    python -m training.pii.validate      # --n 500 --seed 8

Draws `--n` texts from `training/pii/generate.py` with the thresholds' seed and unseen
Faker locales (`training.pii.thresholds.VALIDATION_LOCALES`), with phones, e-mails and
cards labelled too, and prints `bench/pii.py`'s scores for each variant. The rules in
`keel.guard.pii` that drop or join spans were chosen on this set and on the dev file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.pii import detector, evaluate
from training.pii.generate import LABELLED, fixed_hash_seed, generate
from training.pii.thresholds import VALIDATION_LOCALES

# Slots scored as presidio-research names them (bench/pii.py's entity names).
LABELS = {**LABELLED, "PHONE": "PHONE_NUMBER", "EMAIL": "EMAIL_ADDRESS", "CARD": "CREDIT_CARD"}


def records(n: int, seed: int) -> list[dict[str, Any]]:
    out = []
    for r in generate(n, seed, locales=VALIDATION_LOCALES, labelled=LABELS):
        spans = [
            {"entity_type": t, "entity_value": r.text[s:e], "start_position": s, "end_position": e}
            for s, e, t in r.spans
        ]
        out.append({"full_text": r.text, "spans": spans})
    return out


def score(data: list[dict[str, Any]], variants: str, artifact: Path | None) -> dict[str, Any]:
    """bench/pii.py's scores of `data` for each of the comma-separated `variants`."""
    import torch

    from keel.guard.pii_tagger import NameTagger

    torch.set_num_threads(1)
    tagger = NameTagger(folder=artifact)
    tagger.load()
    result = {}
    for variant in variants.split(","):
        scores = evaluate(data, detector(variant, tagger))
        scores.pop("leak_examples")
        result[variant] = scores
    return result


def run(
    argv: Sequence[str] | None,
    draw: Callable[[int, int], list[dict[str, Any]]],
    n: int,
    seed: int,
    description: str | None,
) -> None:
    """The command line of a tuning set: `draw(n, seed)` scored for each variant, as JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n", type=int, default=n)
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--variants", default="patterns,tagger,tagger+cues")
    parser.add_argument("--artifact", type=Path, help="folder of a tagger artifact to measure")
    args = parser.parse_args(argv)
    fixed_hash_seed()
    data = draw(args.n, args.seed)
    result = score(data, args.variants, args.artifact)
    print(json.dumps({"texts": len(data), "seed": args.seed, "variants": result}, indent=1))


def main(argv: Sequence[str] | None = None) -> None:
    run(argv, records, 500, 8, __doc__.splitlines()[0] if __doc__ else None)


if __name__ == "__main__":
    main()
