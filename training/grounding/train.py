"""Train the groundedness scorer's two logistic models and report cross-validated figures.

    .venv/bin/python -m training.grounding.train
        [--data ../shared/data/groundedness/scifact_claims_train.jsonl] [--folds 5]
        [--write] [--cache /tmp/grounding-vectors.npz] [--select 3]

Features come from keel.knowledge.grounding, one row per (claim, context): the word checks
alone (the first stage, WORD_FEATURES) and MiniLM alignment with the checks (the second,
FEATURES). Folds are grouped by claim, so a claim never sits on both sides. In each outer
fold, everything the scorer decides with is chosen on that fold's training rows only, from
out-of-fold predictions of an inner cross-validation: each stage's threshold (maximising
balanced accuracy) and the band of first-stage probabilities sent on to the second stage
(around the threshold, wide enough to hold the ASKED share of those rows).
So no reported figure saw its own threshold or band. `--write` fits on every row and writes
src/keel/knowledge/models/grounding.json with thresholds and band chosen the same way over
all rows. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
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
    WORD_FEATURES,
    Context,
    alignment_features,
    select,
    word_features,
)
from keel.knowledge.index import words

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "groundedness" / "scifact_claims_train.jsonl"
C = 1.0
# The share of sentences (those the word checks are least sure of) sent to the second stage.
# At 0.4 the cascade's cross-validated balanced accuracy equalled the second stage's alone;
# below 0.3 it fell (docs/knowledge.md has the curve).
ASKED = 0.4


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.open() if line.strip()]


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


async def embed_rows(
    rows: list[dict[str, Any]], cached: dict[str, np.ndarray], k: int
) -> dict[str, np.ndarray]:
    """Vectors (text digest -> vector) of every claim and of the `k` context sentences the
    scorer would align it with; those already in `cached` are not embedded again."""
    wanted: dict[str, None] = {}
    for row in rows:
        context = Context.of(row["context"])
        wanted[row["claim"]] = None
        for position in select(set(words(row["claim"])), context.sentence_words, k):
            wanted[context.sentences[position]] = None
    missing = [text for text in wanted if _digest(text) not in cached]
    if missing:
        embedder = LocalEmbedder("all-minilm-l6-v2", minilm_dir())
        started = time.perf_counter()
        vectors = (await embedder.embed_approximate(missing)).vectors
        embedder.close()
        print(f"embedded {len(missing)} texts in {time.perf_counter() - started:.0f}s", flush=True)
        cached = {**cached, **dict(zip((_digest(t) for t in missing), vectors, strict=True))}
    return cached


def featurise(
    rows: list[dict[str, Any]], vectors: dict[str, np.ndarray], k: int = SELECT
) -> tuple[np.ndarray, np.ndarray]:
    """(second-stage rows, first-stage rows) as the scorer computes them: only the `k`
    context sentences sharing the most words with the claim are aligned."""
    full, first = [], []
    for row in rows:
        claim, context = row["claim"], Context.of(row["context"])
        positions = select(set(words(claim)), context.sentence_words, k)
        selected = np.stack([vectors[_digest(context.sentences[p])] for p in positions])
        claim_vector = vectors[_digest(claim)]
        full.append(
            alignment_features(claim, claim_vector, context, context.sentences, selected, positions)
        )
        first.append(word_features(claim, context)[0])
    return np.stack(full), np.stack(first)


def best_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    candidates = np.unique(np.round(probabilities, 3))
    scored = [
        (balanced_accuracy_score(labels, probabilities >= t), -abs(t - 0.5), float(t))
        for t in candidates
    ]
    return max(scored)[2]


def shifted(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Probabilities with the logit moved so that `threshold` becomes 0.5."""
    p = np.clip(probabilities, 1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p)) - _logit(threshold)
    return np.asarray(1 / (1 + np.exp(-logit)))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def fit(features: np.ndarray, labels: np.ndarray) -> tuple[StandardScaler, LogisticRegression]:
    scaler = StandardScaler().fit(features)
    model = LogisticRegression(C=C, max_iter=2000, class_weight="balanced")
    model.fit(scaler.transform(features), labels)
    return scaler, model


def predict(trained: tuple[StandardScaler, LogisticRegression], features: np.ndarray) -> Any:
    scaler, model = trained
    return model.predict_proba(scaler.transform(features))[:, 1]


def out_of_fold(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int
) -> np.ndarray:
    predictions = np.zeros(len(labels))
    for train, test in GroupKFold(n_splits=folds).split(features, labels, groups):
        predictions[test] = predict(fit(features[train], labels[train]), features[test])
    return predictions


def cascade(first: np.ndarray, second: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """The scorer's probabilities: the first stage's outside `band`, else the second's."""
    ask = (first > band[0]) & (first < band[1])
    return np.where(ask, second, first)


def choose(
    labels: np.ndarray,
    groups: np.ndarray,
    full: np.ndarray,
    first: np.ndarray,
    folds: int,
    asked: float = ASKED,
) -> dict[str, Any]:
    """Thresholds and band from out-of-fold predictions over these rows only."""
    inner_full = out_of_fold(full, labels, groups, folds)
    inner_first = out_of_fold(first, labels, groups, folds)
    threshold_full = best_threshold(labels, inner_full)
    threshold_first = best_threshold(labels, inner_first)
    # The band reads the first stage only: how sure it is, not whether it is right.
    p_first = shifted(inner_first, threshold_first)
    radius = float(np.quantile(np.abs(p_first - 0.5), asked)) if asked > 0 else 0.0
    band = (round(0.5 - radius, 4), round(0.5 + radius, 4))
    return {"threshold_full": threshold_full, "threshold_first": threshold_first, "band": band}


def cross_validate(
    full: np.ndarray,
    first: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    folds: int,
    share: float = ASKED,
) -> dict[str, Any]:
    n = len(labels)
    scores = {name: np.zeros(n) for name in ("cascade", "full", "first")}
    decisions = {name: np.zeros(n, dtype=bool) for name in scores}
    asked = np.zeros(n, dtype=bool)
    per_fold: dict[str, list[float]] = {"balanced_accuracy": [], "roc_auc": [], "asked": []}
    bands = []
    for train, test in GroupKFold(n_splits=folds).split(full, labels, groups):
        chosen = choose(labels[train], groups[train], full[train], first[train], folds, share)
        p_full = shifted(
            predict(fit(full[train], labels[train]), full[test]), chosen["threshold_full"]
        )
        p_first = shifted(
            predict(fit(first[train], labels[train]), first[test]), chosen["threshold_first"]
        )
        band = chosen["band"]
        p = cascade(p_first, p_full, band)
        for name, values in (("cascade", p), ("full", p_full), ("first", p_first)):
            scores[name][test] = values
            decisions[name][test] = values >= 0.5
        asked[test] = (p_first > band[0]) & (p_first < band[1])
        bands.append(band)
        per_fold["balanced_accuracy"].append(balanced_accuracy_score(labels[test], p >= 0.5))
        per_fold["roc_auc"].append(roc_auc_score(labels[test], p))
        per_fold["asked"].append(float(asked[test].mean()))
    report: dict[str, Any] = {
        name: {
            "balanced_accuracy": round(float(balanced_accuracy_score(labels, decisions[name])), 4),
            "roc_auc": round(float(roc_auc_score(labels, scores[name])), 4),
        }
        for name in scores
    }
    report["cascade"]["share_sent_to_second_stage"] = round(float(asked.mean()), 3)
    report["cascade"]["per_fold"] = {
        key: [round(float(v), 3) for v in values] for key, values in per_fold.items()
    }
    report["cascade"]["bands"] = bands
    return report


def model_json(
    trained: tuple[StandardScaler, LogisticRegression], names: tuple[str, ...], threshold: float
) -> dict[str, Any]:
    scaler, model = trained
    return {
        "features": list(names),
        "mean": [float(v) for v in scaler.mean_],
        "scale": [float(v) for v in scaler.scale_],
        "coef": [float(v) for v in model.coef_[0]],
        # Shifted so that the chosen threshold reads as 0.5.
        "intercept": float(model.intercept_[0]) - _logit(threshold),
        "threshold_before_shift": threshold,
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
    parser.add_argument("--asked", type=float, default=ASKED, help="share sent to stage two")
    args = parser.parse_args()
    rows = load(args.data)
    labels = np.asarray([int(row["label"]) for row in rows])
    groups = np.asarray([row["claim_id"] for row in rows])
    cached: dict[str, np.ndarray] = {}
    if args.cache is not None and args.cache.exists():
        stored = np.load(args.cache)
        cached = dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))
    vectors = await embed_rows(rows, cached, args.select)
    if args.cache is not None and len(vectors) > len(cached):
        np.savez(
            args.cache, keys=np.asarray(list(vectors)), vectors=np.stack(list(vectors.values()))
        )
    full, first = featurise(rows, vectors, args.select)
    report: dict[str, Any] = {
        "data": str(args.data.name),
        "rows": len(rows),
        "positives": int(labels.sum()),
        "baseline_max_cosine": {"roc_auc": round(float(roc_auc_score(labels, full[:, 0])), 4)},
        "cross_validated": cross_validate(full, first, labels, groups, args.folds, args.asked),
        "feature_roc_auc": {
            name: round(float(roc_auc_score(labels, full[:, i])), 3)
            for i, name in enumerate(FEATURES)
        },
    }
    if args.write:
        chosen = choose(labels, groups, full, first, args.folds, args.asked)
        MODEL_FILE.parent.mkdir(parents=True, exist_ok=True)
        MODEL_FILE.write_text(
            json.dumps(
                {
                    "words": model_json(
                        fit(first, labels), WORD_FEATURES, chosen["threshold_first"]
                    ),
                    "full": model_json(fit(full, labels), FEATURES, chosen["threshold_full"]),
                    "band": list(chosen["band"]),
                    "trained_on": f"{args.data.name} ({len(rows)} rows), C={C}, "
                    f"select={args.select}, asked={args.asked}",
                },
                indent=1,
            )
            + "\n"
        )
        report["written"] = {"file": str(MODEL_FILE.relative_to(REPO)), **chosen}
    report["mean_fold_balanced_accuracy"] = round(
        statistics.fmean(report["cross_validated"]["cascade"]["per_fold"]["balanced_accuracy"]), 4
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
