"""Traffic insights quality on CLINC150's dev rows: topics, out-of-scope detection, drift and
the speed of topics at 20,000 requests. Prints JSON.

    .venv/bin/python bench/insights_quality.py [--data ../shared/data/insights/clinc150_dev.jsonl]
        [--cache /tmp/keel-insights-clinc150.npy] [--seeds 10] [--skip-baselines]

Every setting is chosen on dev rows by cross-validation and reported on rows it was not
chosen on; the sealed test split is never read.

1. Topics: three disjoint folds of the train rows shaped like CLINC150's test split (30
   requests for each of the 150 intents, 4,500 rows). The granularity of the tree cut is
   chosen on two folds and scored on the third (each in turn); the setting chosen on all
   three is then scored on the val rows (20 per intent). NMI and ARI against the intents,
   beside KMeans told k=150 (the baseline) and the other methods tried.
2. Out-of-scope: the in-scope train rows are the reference; val in-scope rows and the oos
   rows are scored. Neighbours and smoothing are chosen on one half (oos_train and every
   other val row) and reported on the other half (oos_val and the rest): AUROC, and the
   false-positive rate at 80 % and 95 % recall of oos rows.
3. Drift: a stream drawn by domain from rows the topics were not fitted on; a reference
   window of 5,000 requests, then a recent window of 1,000 tested every 100 requests
   (chi-square test of homogeneity, drift.py). Unshifted streams of 20,000 requests count
   false alarms; shifted streams (one domain from 10 % to 30 %, each domain in turn) give
   the delay from the shift to the alert, in requests.
4. Speed: topics (smoothing, the tree on 5,000, assignment of the rest, labels) for 20,000
   stored embeddings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from keel.insights import drift as drift_mod
from keel.insights.anomaly import Reference
from keel.insights.labels import top_terms
from keel.insights.topics import GRANULARITY, assign, cluster
from keel.insights.vectors import unit

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "insights" / "clinc150_dev.jsonl"
GRID = [round(0.50 + 0.01 * i, 2) for i in range(19)]  # granularities tried


def embed(texts: list[str], cache: Path) -> np.ndarray:
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache.with_name(f"{cache.stem}-{digest}.npy")
    if path.exists():
        return np.load(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from keel.deploy.bundled import minilm_dir

    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    vectors = model.encode(
        texts,
        batch_size=64,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    vectors = np.asarray(vectors, dtype=np.float32)
    np.save(path, vectors)
    return vectors


def scores(truth: list[str], labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "nmi": round(float(normalized_mutual_info_score(truth, labels)), 4),
        "ari": round(float(adjusted_rand_score(truth, labels)), 4),
        "topics": len(set(labels.tolist())),
    }


def topics_section(rows: list[dict[str, Any]], x: np.ndarray, baselines: bool) -> dict[str, Any]:
    by_intent: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if row["split"] == "train":
            by_intent[row["intent"]].append(i)
    folds = [
        np.array([i for v in by_intent.values() for i in v[30 * f : 30 * f + 30]]) for f in range(3)
    ]
    val = np.array([i for i, r in enumerate(rows) if r["split"] == "val"])
    truth = {id(f): [rows[i]["intent"] for i in f] for f in [*folds, val]}

    grid: dict[tuple[int, float], dict[str, float]] = {}
    for f, fold in enumerate(folds):
        for g in GRID:
            grid[(f, g)] = scores(truth[id(fold)], cluster(x[fold], granularity=g).labels)

    def mean_quality(fs: list[int], g: float) -> float:
        return float(np.mean([grid[(f, g)]["nmi"] + grid[(f, g)]["ari"] for f in fs]))

    held_out = []
    for f in range(3):
        others = [o for o in range(3) if o != f]
        best = max(GRID, key=lambda g: mean_quality(others, g))
        held_out.append({"fold": f, "granularity": best, **grid[(f, best)]})
    chosen = max(GRID, key=lambda g: mean_quality([0, 1, 2], g))
    started = time.perf_counter()
    val_clusters = cluster(x[val], granularity=chosen)
    val_seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "method": "Ward on MiniLM smoothed over 5 neighbours, cut per member (topics.py)",
        "cross_validated": {
            "held_out_folds": held_out,
            "mean_nmi": round(float(np.mean([h["nmi"] for h in held_out])), 4),
            "mean_ari": round(float(np.mean([h["ari"] for h in held_out])), 4),
        },
        "granularity_chosen": chosen,
        "shipped_default": GRANULARITY,
        "val": {**scores(truth[id(val)], val_clusters.labels), "seconds": round(val_seconds, 2)},
    }
    texts = [rows[i]["text"] for i in val]
    terms = top_terms(texts, val_clusters.labels.tolist(), val_clusters.count)
    examples = []
    for topic in range(0, min(val_clusters.count, 100), 10):
        members = np.flatnonzero(val_clusters.labels == topic)
        intents = Counter(truth[id(val)][i] for i in members)
        examples.append(
            {
                "topic": topic,
                "size": len(members),
                "terms": terms[topic],
                "majority_intent": intents.most_common(1)[0][0],
            }
        )
    result["labels_examples"] = examples
    if baselines:
        result["baselines"] = baselines_section(x, folds[0], val, truth, chosen)
    return result


def baselines_section(
    x: np.ndarray, fold: np.ndarray, val: np.ndarray, truth: dict[int, list[str]], chosen: float
) -> dict[str, Any]:
    from sklearn.cluster import HDBSCAN, AgglomerativeClustering, KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    from keel.insights.vectors import smooth

    out: dict[str, Any] = {}
    for name, rows in (("fold0", fold), ("val", val)):
        data = x[rows]
        t = truth[id(rows)]
        entry: dict[str, Any] = {}
        entry["kmeans_told_k150"] = scores(
            t, KMeans(150, n_init=3, random_state=0).fit_predict(data)
        )
        best_k, best_s = 0, -1.0
        for k in (75, 100, 150, 200, 250, 300):
            labels = KMeans(k, n_init=1, random_state=0).fit_predict(data)
            s = float(silhouette_score(data, labels, metric="cosine"))
            if s > best_s:
                best_k, best_s, best_labels = k, s, labels
        entry["kmeans_k_by_silhouette"] = {**scores(t, best_labels), "k": best_k}
        reduced = PCA(20, random_state=0).fit_transform(data)
        entry["hdbscan_pca20_min5"] = scores(t, HDBSCAN(min_cluster_size=5).fit_predict(reduced))
        entry["agglomerative_average_cosine_threshold0.5"] = scores(
            t,
            AgglomerativeClustering(
                None, metric="cosine", linkage="average", distance_threshold=0.5
            ).fit_predict(data),
        )
        entry["ward_unsmoothed_same_cut"] = scores(
            t, cluster(data, granularity=chosen, smoothing=0).labels
        )
        entry["ward_smoothed_told_k150"] = scores(
            t, AgglomerativeClustering(150, linkage="ward").fit_predict(smooth(data, 5))
        )
        out[name] = entry
    return out


def oos_section(rows: list[dict[str, Any]], x: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    reference_rows = [i for i, r in enumerate(rows) if r["split"] == "train"]
    val_rows = [i for i, r in enumerate(rows) if r["split"] == "val"]
    half = {
        "choose": val_rows[0::2] + [i for i, r in enumerate(rows) if r["split"] == "oos_train"],
        "report": val_rows[1::2] + [i for i, r in enumerate(rows) if r["split"] == "oos_val"],
    }

    def measure(score: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        positives = np.sort(score[truth == 1])
        negatives = score[truth == 0]
        out = {"auroc": round(float(roc_auc_score(truth, score)), 4)}
        for recall in (0.80, 0.95):
            cut = float(np.quantile(positives, 1 - recall))
            out[f"fpr_at_{int(recall * 100)}_recall"] = round(float((negatives >= cut).mean()), 4)
            out[f"threshold_at_{int(recall * 100)}_recall"] = round(cut, 4)
        return out

    references = {s: Reference.build(x[reference_rows], smoothing=s) for s in (0, 3, 5, 10)}
    results: dict[str, dict[tuple[int, int], dict[str, float]]] = {}
    for part, idx in half.items():
        truth = np.array([rows[i]["intent"] == "oos" for i in idx], dtype=int)
        results[part] = {
            (s, k): measure(ref.scores(x[idx], k), truth)
            for s, ref in references.items()
            for k in (5, 10, 20)
        }
    best = max(results["choose"], key=lambda key: results["choose"][key]["auroc"])
    return {
        "reference": f"{len(reference_rows)} in-scope train rows",
        "scored_report_half": f"{len(half['report'])} rows",
        "chosen_on_other_half": {"smoothing": best[0], "neighbours": best[1]},
        "chosen": results["report"][best],
        "baseline_knn10_unsmoothed": results["report"][(0, 10)],
        "shipped_smoothing5_knn10": results["report"][(5, 10)],
        "all_settings_report_half": {
            f"smooth{s}_k{k}": v["auroc"] for (s, k), v in results["report"].items()
        },
    }


def drift_section(rows: list[dict[str, Any]], x: np.ndarray, seeds: int) -> dict[str, Any]:
    by_intent: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if row["split"] == "train":
            by_intent[row["intent"]].append(i)
    fit = np.array([i for v in by_intent.values() for i in v[:30]])
    model = cluster(x[fit])
    groups = drift_mod.groups_of(model.centroids)
    pool: dict[str, list[int]] = defaultdict(list)  # rows the topics were not fitted on
    for i, row in enumerate(rows):
        in_pool = row["split"] == "val" or (
            row["split"] == "train" and by_intent[row["intent"]].index(i) >= 60
        )
        if row["intent"] != "oos" and in_pool:
            pool[row["domain"]].append(i)
    domains = sorted(pool)
    topic_of = np.full(len(rows), -1, dtype=np.intp)
    every = np.array([i for d in domains for i in pool[d]])
    topic_of[every] = assign(x[every], model.centroids)[0]

    def stream(rng: np.random.Generator, n: int, shares: np.ndarray) -> np.ndarray:
        picks = rng.choice(len(domains), size=n, p=shares)
        return np.array(
            [topic_of[pool[domains[d]][rng.integers(len(pool[domains[d]]))]] for d in picks]
        )

    def monitor(labels: np.ndarray, reference: np.ndarray, window: int, step: int) -> list[int]:
        alerts, quiet_until = [], 0
        for end in range(window, len(labels) + 1, step):
            if end < quiet_until:
                continue
            result = drift_mod.compare(reference, labels[end - window : end], model.count, groups)
            if result.shifted:
                alerts.append(end)
                quiet_until = end + window  # one alert per window of new traffic
        return alerts

    even = np.full(len(domains), 1 / len(domains))
    out: dict[str, Any] = {
        "test": "chi-square homogeneity, topics and topic groups, "
        f"Bonferroni, alpha={drift_mod.ALPHA}",
        "topics": model.count,
        "groups": int(groups.max()) + 1,
    }
    for window in (500, 1000):
        false_alarms, delays, missed = [], [], 0
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            reference = stream(rng, 5000, even)
            false_alarms.append(len(monitor(stream(rng, 20_000, even), reference, window, 100)))
            shifted_domain = seed % len(domains)
            shares = np.full(len(domains), 0.7 / (len(domains) - 1))
            shares[shifted_domain] = 0.3
            before, after = stream(rng, 2000, even), stream(rng, 8000, shares)
            alerts = [
                a - 2000
                for a in monitor(np.concatenate([before, after]), reference, window, 100)
                if a > 2000
            ]
            if alerts:
                delays.append(alerts[0])
            else:
                missed += 1
        out[f"window_{window}"] = {
            "false_alarms_per_20000": false_alarms,
            "false_alarms_mean": float(np.mean(false_alarms)),
            "delay_requests_median": float(np.median(delays)) if delays else None,
            "delay_requests_max": int(max(delays)) if delays else None,
            "missed": missed,
        }
    return out


def speed_section(rows: list[dict[str, Any]], x: np.ndarray) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    extra = rng.choice(len(x), 20_000 - len(x))
    vectors = unit(np.vstack([x, x[extra] + rng.normal(0, 0.01, (len(extra), x.shape[1]))]))
    texts = [r["text"] for r in rows] + [rows[i]["text"] for i in extra]
    started = time.perf_counter()
    model = cluster(vectors)
    top_terms(texts, model.labels.tolist(), model.count)
    seconds = time.perf_counter() - started
    in_scope = [i for i, r in enumerate(rows) if r["intent"] != "oos"]
    quality = scores([rows[i]["intent"] for i in in_scope], model.labels[in_scope])
    return {
        "requests": len(vectors),
        "seconds": round(seconds, 2),
        "topics": model.count,
        "quality_on_the_dev_rows_among_them": quality,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/keel-insights-clinc150.npy"))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--only", choices=["topics", "oos", "drift", "speed"], default=None)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    x = embed([r["text"] for r in rows], args.cache)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
    report: dict[str, Any] = {"machine": machine, "rows": len(rows)}
    sections = {
        "topics": lambda: topics_section(rows, x, not args.skip_baselines),
        "oos": lambda: oos_section(rows, x),
        "drift": lambda: drift_section(rows, x, args.seeds),
        "speed": lambda: speed_section(rows, x),
    }
    for name, run in sections.items():
        if args.only in (None, name):
            report[name] = run()
            print(json.dumps({name: report[name]}), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
