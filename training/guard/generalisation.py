"""Leave-one-source-out evaluation of injection-classifier recipes.

A recipe is a set of source families to train on, a configuration and a threshold. For
every family the recipe trains on, a model is fitted on the recipe's other families and
scores the held-out one; every other family (evaluation-only sources, the validation
split, sources the recipe leaves out) is scored by the model fitted on all of the
recipe's families. Scores follow the shipped scanner: the full head's highest window,
floored by strong rules (and by the document rules for rows that arrive as documents or
tool output), with the fast path's n-gram head deciding alone where it is sure.
`bench/guard_generalisation.py` prints the result.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from keel.guard.embedding import WindowEncoder
from keel.guard.features import ngram_counts
from keel.guard.heuristics import scan_document_rules
from keel.guard.normalize import normalize
from training.guard.sources import V2_FAMILIES, Row
from training.guard.train import (
    EMBEDDING_CACHE,
    Design,
    Item,
    confusion,
    embed,
    item_scores,
    prepare,
)

ATTACK_KINDS = ("direct", "jailbreak", "indirect")
BENIGN_KINDS = ("benign", "benign-hard")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Recipe:
    name: str
    families: frozenset[str]
    config: dict[str, float]
    threshold: float
    skip_below: float
    seed: int = 13


V2 = Recipe(
    "injection-v2 recipe",
    frozenset(V2_FAMILIES),
    {"C": 8.0, "word_scale": 1.5, "emb_scale": 0.5},
    threshold=0.465,
    skip_below=0.21,
)


@dataclass
class Prepared:
    """Features of every row, computed once for all recipes."""

    rows: list[Row]
    items: list[Item]
    design: Design
    document_floor: npt.NDArray[np.float64]
    suspicious: npt.NDArray[np.bool_]
    families: list[str] = field(default_factory=list)


def prepare_rows(rows: list[Row]) -> Prepared:
    items = [Item(r.text, r.label, r.family) for r in rows]
    prepare(items)
    log(f"prepared {len(items)} rows; embedding (cached under {EMBEDDING_CACHE})")
    vectors, owner = embed(WindowEncoder(), [it.canonical for it in items])
    counts = ngram_counts([it.canonical for it in items])
    design = Design(items, counts, vectors, owner)
    floor = np.zeros(len(rows))
    for i, row in enumerate(rows):
        if row.role in ("document", "tool"):
            hits = [h for v in normalize(row.text).views for h in scan_document_rules(v.text)]
            floor[i] = max((h.weight for h in hits), default=0.0)
    suspicious = np.asarray([it.suspicious for it in items]) | (floor > 0)
    families = sorted({r.family for r in rows})
    return Prepared(rows, items, design, floor, suspicious, families)


def _scores(
    p: Prepared, recipe: Recipe, train: npt.NDArray[np.int64], test: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(full, cascade) scores of `test` from heads fitted on `train`."""
    full, fast = item_scores(p.design, train, test, recipe.config, recipe.seed)
    full = np.maximum(full, p.document_floor[test])
    fast = np.maximum(fast, p.document_floor[test])
    skip = ~p.suspicious[test] & (fast < recipe.skip_below)
    return full, np.where(skip, fast, full)


def loso_scores(
    p: Prepared, recipe: Recipe, only: Iterable[str] | None = None
) -> dict[str, npt.NDArray[np.float64]]:
    """Cascade scores per family; held out when the recipe trains on that family."""
    trainable = np.asarray(
        [r.trainable and r.family in recipe.families for r in p.rows], dtype=bool
    )
    family = np.asarray([r.family for r in p.rows])
    wanted = set(only) if only is not None else set(p.families)
    out: dict[str, npt.NDArray[np.float64]] = {}
    rest = [f for f in p.families if f in wanted and f not in recipe.families]
    if rest:
        test = np.nonzero(np.isin(family, rest))[0]
        _, cascade = _scores(p, recipe, np.nonzero(trainable)[0], test)
        for f in rest:
            out[f] = cascade[family[test] == f]
        log(f"  {recipe.name}: scored {len(rest)} families it never trains on")
    for f in sorted(wanted & recipe.families):
        test = np.nonzero(family == f)[0]
        train = np.nonzero(trainable & (family != f))[0]
        _, out[f] = _scores(p, recipe, train, test)
        log(f"  {recipe.name}: held out {f}")
    return out


def report(
    p: Prepared, recipe: Recipe, scores: dict[str, npt.NDArray[np.float64]], threshold: float
) -> dict[str, Any]:
    """Per family and per kind: precision, recall, F1, FPR; the acceptance summary."""
    family = np.asarray([r.family for r in p.rows])
    labels = np.asarray([r.label for r in p.rows])
    kinds = np.asarray([r.kind for r in p.rows])
    by_family: dict[str, Any] = {}
    pooled_scores = np.zeros(len(p.rows))
    scored = np.zeros(len(p.rows), dtype=bool)
    for f, s in sorted(scores.items()):
        idx = np.nonzero(family == f)[0]
        pooled_scores[idx], scored[idx] = s, True
        m: dict[str, Any] = dict(confusion(labels[idx], s >= threshold))
        m["held_out"] = "left out of training" if f in recipe.families else "never trained on"
        m["kinds"] = sorted(set(kinds[idx].tolist()))
        by_family[f] = m
    by_kind = {}
    for k in (*ATTACK_KINDS, *BENIGN_KINDS):
        idx = np.nonzero(scored & (kinds == k))[0]
        if len(idx):
            by_kind[k] = confusion(labels[idx], pooled_scores[idx] >= threshold)
    attack_families = [f for f, m in by_family.items() if m["positives"]]
    benign_families = [f for f, m in by_family.items() if m["tn"] + m["fp"]]
    benign_hard = np.nonzero(scored & (kinds == "benign-hard"))[0]
    return {
        "recipe": recipe.name,
        "trains_on": sorted(recipe.families),
        "config": recipe.config,
        "threshold": threshold,
        "summary": {
            "mean_f1_attack_families": round(
                float(np.mean([by_family[f]["f1"] for f in attack_families])), 4
            ),
            "min_recall_attack_family": min(
                ((by_family[f]["recall"], f) for f in attack_families), default=None
            ),
            "max_fpr_benign_family": max(
                ((by_family[f]["fpr"], f) for f in benign_families), default=None
            ),
            "over_defence_benign_hard": round(
                float(np.mean(pooled_scores[benign_hard] >= threshold)), 4
            )
            if len(benign_hard)
            else None,
        },
        "by_kind": by_kind,
        "by_family": by_family,
    }


def choose_threshold(
    p: Prepared,
    scores: dict[str, npt.NDArray[np.float64]],
    families: Sequence[str],
    max_fpr: float = 0.02,
) -> float:
    """The threshold with the best mean F1 over the held-out attack families whose pooled
    held-out false-positive rate stays <= max_fpr."""
    family = np.asarray([r.family for r in p.rows])
    labels = np.asarray([r.label for r in p.rows])
    best = (-1.0, 0.5)
    for t in np.arange(0.05, 0.951, 0.01):
        f1s: list[float] = []
        fp, neg = 0.0, 0.0
        for f in families:
            idx = np.nonzero(family == f)[0]
            m = confusion(labels[idx], scores[f] >= t)
            if m["positives"]:
                f1s.append(m["f1"])
            fp, neg = fp + m["fp"], neg + m["fp"] + m["tn"]
        if neg and fp / neg <= max_fpr and f1s and float(np.mean(f1s)) > best[0]:
            best = (float(np.mean(f1s)), round(float(t), 3))
    return best[1]
