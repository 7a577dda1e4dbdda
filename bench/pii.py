"""How well the PII scanner finds and hides personal data, and what it costs.

    .venv/bin/python bench/pii.py                  # dev file and the held-out set
    .venv/bin/python bench/pii.py --runs 300 --chars 1000 --variants patterns,tagger+cues
    .venv/bin/python bench/pii.py --runtime torch   # the tagger on PyTorch int8, as before
    .venv/bin/python bench/pii.py --forward --threads 1   # the network alone, per runtime

For each data set and variant it prints JSON: per-entity precision and recall (a
prediction counts when it overlaps a labelled span of the same entity), the same for
direct identifiers as a whole (there a prediction of any entity counts: hidden is
hidden), and the share of texts that still leak a direct identifier after anonymization
(`leak_verbatim`: a labelled value still appears word for word, the definition of
issue 27; `leak_half`: half or more of a value's letters and digits are still visible).
Latency is the anonymizing scanner on one prompt of `--chars` characters, after warm-up.

Variants: `patterns` (recognizers only, as before the tagger), `tagger` (the tagger for
names, addresses and organisations, patterns for everything else), `tagger+cues` (the
tagger and the name/address cue patterns together: what the scanner ships with). The
tagger skips sentences that cannot hold a name or an address unless `--read-all` is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "data" / "pii" / "synth_pii_dev.json"
HELDOUT = REPO / "bench" / "data" / "pii_heldout.json"

# The data's entity names (presidio-research) for Keel's.
DATA_NAME = {
    "EMAIL": "EMAIL_ADDRESS",
    "PHONE": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN": "IBAN_CODE",
    "IP_ADDRESS": "IP_ADDRESS",
    "US_SSN": "US_SSN",
    "UK_NINO": "UK_NINO",
    "DRIVER_LICENSE": "US_DRIVER_LICENSE",
    "PERSON": "PERSON",
    "STREET_ADDRESS": "STREET_ADDRESS",
    "ORGANIZATION": "ORGANIZATION",
}
# Direct identifiers, as issue 27 counts them: names, addresses, phones, e-mails, cards,
# bank and government numbers, driver's licences.
DIRECT = frozenset(
    {
        "PERSON",
        "STREET_ADDRESS",
        "PHONE_NUMBER",
        "EMAIL_ADDRESS",
        "CREDIT_CARD",
        "IBAN_CODE",
        "US_SSN",
        "UK_NINO",
        "IP_ADDRESS",
        "US_DRIVER_LICENSE",
    }
)
ENTITIES_MEASURED = (
    "PERSON",
    "STREET_ADDRESS",
    "ORGANIZATION",
    "PHONE",
    "EMAIL",
    "CREDIT_CARD",
    "IBAN",
    "US_SSN",
    "IP_ADDRESS",
    "DRIVER_LICENSE",
)

Detector = Callable[[str], list[Any]]


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def detector(variant: str, tagger: Any) -> Detector:
    from keel.guard.pii import KNOWN_ENTITIES, detect

    if variant == "patterns":
        return lambda text: detect(text, KNOWN_ENTITIES)
    if variant == "tagger":
        return lambda text: detect(text, KNOWN_ENTITIES, tagger=tagger, cues=False)
    if variant == "tagger+cues":
        return lambda text: detect(text, KNOWN_ENTITIES, tagger=tagger)
    raise SystemExit(f"unknown variant {variant!r} (known: patterns, tagger, tagger+cues)")


def evaluate(records: list[dict[str, Any]], detect: Detector) -> dict[str, Any]:
    from keel.guard.anonymize import Anonymizer, Vault
    from keel.guard.pii import ENTITIES

    per = {e: {"gold": 0, "predicted": 0, "found": 0, "correct": 0} for e in ENTITIES_MEASURED}
    direct = {"gold": 0, "found": 0, "predicted": 0, "correct": 0}
    leak_verbatim = leak_half = 0
    examples: list[dict[str, Any]] = []
    for record in records:
        text = record["full_text"]
        matches = detect(text)
        spans = record["spans"]
        for entity in ENTITIES_MEASURED:
            gold = [
                (s["start_position"], s["end_position"])
                for s in spans
                if s["entity_type"] == DATA_NAME[entity]
            ]
            pred = [(m.start, m.end) for m in matches if m.entity == entity]
            c = per[entity]
            c["gold"] += len(gold)
            c["predicted"] += len(pred)
            c["found"] += sum(1 for g in gold if any(_overlaps(g, p) for p in pred))
            c["correct"] += sum(1 for p in pred if any(_overlaps(g, p) for g in gold))
        gold_direct = [
            (s["start_position"], s["end_position"]) for s in spans if s["entity_type"] in DIRECT
        ]
        # What the default scanner hides: ORGANIZATION is opt-in, so it hides nothing here.
        hidden = [m for m in matches if m.entity in ENTITIES]
        pred_direct = [(m.start, m.end) for m in hidden]
        direct["gold"] += len(gold_direct)
        direct["predicted"] += len(pred_direct)
        direct["found"] += sum(1 for g in gold_direct if any(_overlaps(g, p) for p in pred_direct))
        direct["correct"] += sum(
            1 for p in pred_direct if any(_overlaps(g, p) for g in gold_direct)
        )
        redacted = Anonymizer(Vault()).anonymize(text, hidden)
        verbatim = [
            s["entity_value"]
            for s in spans
            if s["entity_type"] in DIRECT and s["entity_value"].strip() in redacted
        ]
        half = False
        for s in spans:
            if s["entity_type"] not in DIRECT:
                continue
            chars = [i for i in range(s["start_position"], s["end_position"]) if text[i].isalnum()]
            covered = sum(1 for i in chars if any(m.start <= i < m.end for m in hidden))
            if chars and covered < len(chars) / 2:
                half = True
        leak_verbatim += bool(verbatim)
        leak_half += half
        if verbatim and len(examples) < 15:
            examples.append({"text": text[:200], "leaked": verbatim})

    def pr(c: dict[str, int]) -> dict[str, Any]:
        return {
            "gold": c["gold"],
            "predicted": c["predicted"],
            "precision": round(c["correct"] / c["predicted"], 3) if c["predicted"] else None,
            "recall": round(c["found"] / c["gold"], 3) if c["gold"] else None,
        }

    return {
        "texts": len(records),
        "entities": {e: pr(c) for e, c in per.items() if c["gold"] or c["predicted"]},
        "direct_identifiers": pr(direct),
        "leak_verbatim": {"texts": leak_verbatim, "share": round(leak_verbatim / len(records), 4)},
        "leak_half": {"texts": leak_half, "share": round(leak_half / len(records), 4)},
        "leak_examples": examples,
    }


PROMPT = (
    "Hi, this is Marta Kowalczyk from the Lisbon office. Could you help me rewrite the "
    "following note to our landlord? 'Dear Mr. Henrik Solberg, the heating at Rua das "
    "Flores 27, 1200-195 Lisboa has been broken since Monday and nobody answered at "
    "+351 912 345 678. My colleague Joaquim Ferreira Lopes already wrote to "
    "facilities@example.pt twice.' Please keep it short and polite, mention that we pay "
    "on time every month, and suggest two dates next week for a technician to visit. "
    "Also add a line that the invoice for October was sent to the wrong address, "
    "Avenida da Liberdade 110, and ask them to correct it. Thanks a lot for the help with "
    "this, the team is getting cold and the weather is turning. "
)


def latency(runs: int, warmup: int, chars: int, tagger: Any) -> dict[str, float]:
    """Wall and CPU milliseconds of one anonymizing scan of a `chars`-long prompt."""
    from keel.guard.base import ScanContext
    from keel.guard.pii import PiiScanner

    text = prompt(chars)
    scanner = PiiScanner(mode="anonymize", model=tagger is not None, tagger=tagger)
    scanner.warm_up()
    for _ in range(warmup):
        scanner.scan(text, ScanContext())
    times = []
    cpu = []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        scanner.scan(text, ScanContext())
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    # CPU time (all of this process's threads) says what a scan costs whatever else runs on
    # the machine; wall time says what a request waited.
    return _percentiles(times) | {"cpu_p50_ms": round(statistics.median(cpu), 2)}


def prompt(chars: int) -> str:
    """The bench prompt repeated or cut to `chars` characters."""
    return (PROMPT * (chars // len(PROMPT) + 1))[:chars]


def _percentiles(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
        "p99_ms": round(times[int(0.99 * (len(times) - 1))], 2),
    }


def forward_pass(runs: int, warmup: int, chars: int, threads: int, tagger: Any) -> dict[str, Any]:
    """Milliseconds of the tagger's network alone on the windows of a `chars`-long prompt,
    on each runtime in turn (interleaved, so the machine's load falls on all alike), and
    how far each one's probabilities are from PyTorch int8's (what the thresholds were
    chosen on)."""
    import numpy as np

    from keel.guard.pii_network import onnx_forward, torch_forward

    inputs = tagger.inputs(prompt(chars))
    net = tagger.float_network()
    runtimes = {
        "torch_int8": torch_forward(net, quantize=True),
        "torch_fp32": torch_forward(net, quantize=False),
        "onnx_fp32": onnx_forward(net, quantize=False, threads=threads),
        "onnx_int8": onnx_forward(net, quantize=True, threads=threads),
    }
    read = inputs[2].astype(bool)
    reference = runtimes["torch_int8"](*inputs)
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    for i in range(warmup + runs):
        for name, forward in runtimes.items():
            started = time.perf_counter()
            forward(*inputs)
            if i >= warmup:
                times[name].append((time.perf_counter() - started) * 1000)
    return {
        "windows": list(inputs[0].shape),
        "runtimes": {
            name: _percentiles(times[name])
            | {"max_prob_diff": round(float(np.abs(forward(*inputs) - reference)[read].max()), 3)}
            for name, forward in runtimes.items()
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dev", type=Path, default=DEV)
    parser.add_argument("--heldout", type=Path, default=HELDOUT)
    parser.add_argument("--variants", default="patterns,tagger,tagger+cues")
    parser.add_argument("--runs", type=int, default=300, help="timed scans (0: no latency)")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--chars", type=int, default=1000)
    parser.add_argument(
        "--threads", type=int, default=2, help="threads of the tagger's runtime (and of torch)"
    )
    parser.add_argument(
        "--runtime", default="onnx", help="the tagger's runtime: onnx (the default) or torch"
    )
    parser.add_argument("--examples", action="store_true", help="print leaked texts to stderr")
    parser.add_argument("--artifact", type=Path, help="folder of a tagger artifact to measure")
    parser.add_argument(
        "--read-all", action="store_true", help="run the tagger on every sentence (no skipping)"
    )
    parser.add_argument(
        "--forward",
        action="store_true",
        help="time only the tagger's network, on PyTorch and ONNX Runtime, int8 and float32",
    )
    parser.add_argument(
        "--table-rows",
        type=int,
        default=0,
        help="also time one scan of a pasted CSV table of this many rows (a long input)",
    )
    args = parser.parse_args(argv)

    import torch

    from keel.guard.pii_tagger import NameTagger

    torch.set_num_threads(args.threads)
    tagger = NameTagger(
        folder=args.artifact,
        skip_plain=not args.read_all,
        runtime=args.runtime,
        threads=args.threads,
    )
    tagger.load()
    if args.forward:
        timed = forward_pass(args.runs, args.warmup, args.chars, args.threads, tagger)
        print(json.dumps({"chars": args.chars, "threads": args.threads} | timed, indent=1))
        return
    sets = {}
    for name, path in (("dev", args.dev), ("heldout", args.heldout)):
        if not path.is_file():
            print(f"{path} not found; skipping the {name} set", file=sys.stderr)
            continue
        sets[name] = json.loads(path.read_text(encoding="utf-8"))
    result: dict[str, Any] = {
        "tagger": tagger.version,
        "layers": tagger.card.get("layers"),
        "runtime": tagger.runtime,  # torch where the ONNX export failed
        "thresholds": tagger.thresholds,
        "skips_plain_sentences": tagger.skip_plain,
        "sets": {},
    }
    for name, records in sets.items():
        result["sets"][name] = {}
        for variant in args.variants.split(","):
            scores = evaluate(records, detector(variant, tagger))
            examples = scores.pop("leak_examples")
            if args.examples:
                for ex in examples:
                    print(
                        f"[{name} {variant}] {json.dumps(ex, ensure_ascii=False)}", file=sys.stderr
                    )
            result["sets"][name][variant] = scores
    if args.runs:
        result["latency"] = {
            "chars": args.chars,
            "threads": args.threads,
            "runs": args.runs,
            "patterns": latency(args.runs, args.warmup, args.chars, None),
            "tagger+cues": latency(args.runs, args.warmup, args.chars, tagger),
        }
    if args.table_rows:
        result["table"] = table_scan(args.table_rows, tagger)
    print(json.dumps(result, indent=1))


def table_scan(rows: int, tagger: Any) -> dict[str, Any]:
    """Seconds of one anonymizing scan of a CSV table with a name, a town and a company in
    each row: thousands of spans in one text."""
    from faker import Faker

    from keel.guard.base import ScanContext
    from keel.guard.pii import PiiScanner

    fake = Faker("en_US")
    fake.seed_instance(1)
    lines = ["id,name,city,company,joined"]
    lines += [
        f"{i},{fake.name()},{fake.city()},{fake.company()},{fake.date()}" for i in range(rows)
    ]
    text = "\n".join(lines)
    scanner = PiiScanner(mode="anonymize", tagger=tagger)
    scanner.warm_up()
    started, started_cpu = time.perf_counter(), time.process_time()
    verdict = scanner.scan(text, ScanContext())
    return {
        "rows": rows,
        "chars": len(text),
        "findings": len(verdict.findings),
        "seconds": round(time.perf_counter() - started, 3),
        "cpu_seconds": round(time.process_time() - started_cpu, 3),
    }


if __name__ == "__main__":
    main()
