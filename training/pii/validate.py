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
from collections.abc import Sequence
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--variants", default="patterns,tagger,tagger+cues")
    parser.add_argument("--artifact", type=Path, help="folder of a tagger artifact to measure")
    args = parser.parse_args(argv)
    fixed_hash_seed()

    import torch

    from keel.guard.pii_tagger import NameTagger

    torch.set_num_threads(1)
    tagger = NameTagger(folder=args.artifact)
    tagger.load()
    data = records(args.n, args.seed)
    result = {}
    for variant in args.variants.split(","):
        scores = evaluate(data, detector(variant, tagger))
        scores.pop("leak_examples")
        result[variant] = scores
    print(json.dumps({"texts": len(data), "seed": args.seed, "variants": result}, indent=1))


if __name__ == "__main__":
    main()
