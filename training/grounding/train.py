"""Train the groundedness scorer's logistic model and report cross-validated figures.

    .venv/bin/python -m training.grounding.train
        [--data ../shared/data/groundedness/scifact_claims_train.jsonl] [--folds 5]
        [--write] [--cache /tmp/grounding-vectors.npz]

Features come from keel.knowledge.grounding (MiniLM alignment and the word, number,
negation and direction checks), one row per (claim, context). Folds are grouped by claim,
so a claim never sits on both sides. In each outer fold the threshold is the one that
maximises balanced accuracy on that fold's training rows (out-of-fold predictions of an
inner cross-validation), so the reported figures never saw their own threshold. `--write`
fits on every row and writes src/keel/knowledge/models/grounding.json with the threshold
chosen the same way over all rows. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.metrics import balanced_accuracy_score, roc_auc_score  # type: ignore[import-untyped]
from sklearn.model_selection import GroupKFold  # type: ignore[import-untyped]
from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

from keel.deploy.bundled import minilm_dir
from keel.embeddings.local import LocalEmbedder
from keel.knowledge.grounding import (
    FEATURES,
    MODEL_FILE,
    SELECT,
    alignment_features,
    select,
    sentences,
)
from keel.knowledge.index import words

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "groundedness" / "scifact_claims_train.jsonl"
C = 1.0


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.open() if line.strip()]


async def embed_rows(rows: list[dict[str, Any]], embedder: LocalEmbedder) -> dict[str, Any]:
    """Claim and context-sentence vectors of every row (what is slow; features are cheap)."""
    claims, found_all, offsets = [], [], [0]
    for row in rows:
        context = row["context"]
        found = [context[s:e] for s, e in sentences(context)]
        found_all.extend(found)
        offsets.append(offsets[-1] + len(found))
        claims.append(row["claim"])
    claim_vectors = (await embedder.embed(claims)).vectors
    sentence_vectors = (await embedder.embed(found_all)).vectors
    return {"claims": claim_vectors, "sentences": sentence_vectors, "offsets": offsets}


def featurise(rows: list[dict[str, Any]], vectors: dict[str, Any], k: int = SELECT) -> np.ndarray:
    """Feature rows as the scorer computes them: only the `k` context sentences that share
    the most words with the claim are aligned (their vectors are those of every sentence,
    cached, so one embedding pass serves every `k`)."""
    out = []
    offsets = vectors["offsets"]
    for position, row in enumerate(rows):
        context = row["context"]
        found = [context[s:e] for s, e in sentences(context)]
        sentence_vectors = vectors["sentences"][offsets[position] : offsets[position + 1]]
        assert len(found) == len(sentence_vectors)
        positions = select(set(words(row["claim"])), [set(words(s)) for s in found], k)
        claim = row["claim"]
        selected = sentence_vectors[positions]
        claim_vector = vectors["claims"][position]
        out.append(alignment_features(claim, claim_vector, context, found, selected, positions))
    return np.stack(out)


def best_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    candidates = np.unique(np.round(probabilities, 3))
    scored = [
        (balanced_accuracy_score(labels, probabilities >= t), -abs(t - 0.5), float(t))
        for t in candidates
    ]
    return max(scored)[2]


def fit(features: np.ndarray, labels: np.ndarray) -> tuple[StandardScaler, LogisticRegression]:
    scaler = StandardScaler().fit(features)
    model = LogisticRegression(C=C, max_iter=2000, class_weight="balanced")
    model.fit(scaler.transform(features), labels)
    return scaler, model


def out_of_fold(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int
) -> np.ndarray:
    predictions = np.zeros(len(labels))
    for train, test in GroupKFold(n_splits=folds).split(features, labels, groups):
        scaler, model = fit(features[train], labels[train])
        predictions[test] = model.predict_proba(scaler.transform(features[test]))[:, 1]
    return predictions


def cross_validate(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int
) -> dict[str, Any]:
    held_out_ba, held_out_auc, thresholds = [], [], []
    predictions = np.zeros(len(labels))
    decisions = np.zeros(len(labels), dtype=bool)
    for train, test in GroupKFold(n_splits=folds).split(features, labels, groups):
        inner = out_of_fold(features[train], labels[train], groups[train], folds)
        threshold = best_threshold(labels[train], inner)
        scaler, model = fit(features[train], labels[train])
        p = model.predict_proba(scaler.transform(features[test]))[:, 1]
        predictions[test] = p
        decisions[test] = p >= threshold
        thresholds.append(threshold)
        held_out_ba.append(balanced_accuracy_score(labels[test], p >= threshold))
        held_out_auc.append(roc_auc_score(labels[test], p))
    return {
        "balanced_accuracy": round(float(balanced_accuracy_score(labels, decisions)), 4),
        "roc_auc": round(float(roc_auc_score(labels, predictions)), 4),
        "per_fold_balanced_accuracy": [round(float(v), 4) for v in held_out_ba],
        "per_fold_roc_auc": [round(float(v), 4) for v in held_out_auc],
        "thresholds": [round(t, 3) for t in thresholds],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=None, help="vectors .npz to reuse")
    parser.add_argument("--write", action="store_true", help="write the shipped model")
    parser.add_argument(
        "--select", type=int, default=SELECT, help="context sentences aligned per claim"
    )
    args = parser.parse_args()
    rows = load(args.data)
    labels = np.asarray([int(row["label"]) for row in rows])
    groups = np.asarray([row["claim_id"] for row in rows])
    if args.cache is not None and args.cache.exists():
        vectors = dict(np.load(args.cache))
    else:
        embedder = LocalEmbedder("all-minilm-l6-v2", minilm_dir())
        started = time.perf_counter()
        vectors = await embed_rows(rows, embedder)
        embedder.close()
        print(f"embedded in {time.perf_counter() - started:.0f}s", flush=True)
        if args.cache is not None:
            np.savez(args.cache, **vectors)
    features = featurise(rows, vectors, args.select)
    report: dict[str, Any] = {
        "data": str(args.data.name),
        "rows": len(rows),
        "positives": int(labels.sum()),
        "baseline_max_cosine": {
            "roc_auc": round(float(roc_auc_score(labels, features[:, 0])), 4),
        },
        "cross_validated": cross_validate(features, labels, groups, args.folds),
    }
    single = {}
    for position, name in enumerate(FEATURES):
        single[name] = round(float(roc_auc_score(labels, features[:, position])), 3)
    report["feature_roc_auc"] = single
    if args.write:
        threshold = best_threshold(labels, out_of_fold(features, labels, groups, args.folds))
        scaler, model = fit(features, labels)
        MODEL_FILE.parent.mkdir(parents=True, exist_ok=True)
        MODEL_FILE.write_text(
            json.dumps(
                {
                    "features": list(FEATURES),
                    "mean": [float(v) for v in scaler.mean_],
                    "scale": [float(v) for v in scaler.scale_],
                    "coef": [float(v) for v in model.coef_[0]],
                    "intercept": float(model.intercept_[0]),
                    "threshold": threshold,
                    "trained_on": f"{args.data.name} ({len(rows)} rows), C={C}, "
                    f"select={args.select}",
                },
                indent=1,
            )
            + "\n"
        )
        report["written"] = {"file": str(MODEL_FILE.relative_to(REPO)), "threshold": threshold}
    report["mean_fold_balanced_accuracy"] = round(
        statistics.fmean(report["cross_validated"]["per_fold_balanced_accuracy"]), 4
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
