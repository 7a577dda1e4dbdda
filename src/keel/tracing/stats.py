"""Time-bucketed request aggregates over the traces table, computed in SQL.

PostgreSQL has `percentile_cont`; SQLite has none, so there the same interpolated
percentile is picked by rank with window functions. Both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from sqlalchemy import text

from keel.store.db import Database

GroupBy = Literal["none", "route", "model", "key", "prompt"]
GROUPS: dict[str, str] = {
    "none": "'all'",
    "route": "route",
    "model": "target",
    "key": "key_id",
    "prompt": "prompt_name || '@' || CAST(prompt_version AS VARCHAR(12))",
}
# Scores the online evaluator writes (keel.evals.online): source `evaluator`, author
# `online:ROUTE`; groundedness and API scores with the same source are not online scores.
ONLINE_AUTHOR = "online:%"
PERCENTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
_WHERE = "project_id = :project AND start_us >= :since AND start_us < :until"
_SUMS = (
    "COUNT(*) AS requests, SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors, "
    "SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, SUM(cost) AS cost, "
    "SUM(CASE WHEN cache IS NOT NULL THEN 1 ELSE 0 END) AS cache_lookups, "
    "SUM(CASE WHEN cache LIKE 'hit%' THEN 1 ELSE 0 END) AS cache_hits, "
    "SUM(saved_cost) AS saved_cost, SUM(saved_ms) AS saved_ms, "
    "SUM(CASE WHEN guard_action = 'block' THEN 1 ELSE 0 END) AS guard_blocks, "
    "SUM(CASE WHEN guard_action = 'flag' THEN 1 ELSE 0 END) AS guard_flags"
)


def _bucket(start: str, postgres: bool) -> str:
    """The SQL start of the time bucket that `start` (microseconds) falls in."""
    if postgres:  # PostgreSQL types untyped parameters itself; integer division needs BIGINT
        return (
            f"({start} - CAST(:origin AS BIGINT)) / CAST(:bucket AS BIGINT) "
            "* CAST(:bucket AS BIGINT) + CAST(:origin AS BIGINT)"
        )
    return f"({start} - :origin) / :bucket * :bucket + :origin"


def _postgres_sql(group: str) -> str:
    percentiles = ", ".join(
        f"percentile_cont({p}) WITHIN GROUP (ORDER BY {column}) AS {prefix}_{name}"
        for prefix, column in (("latency", "duration_ms"), ("ttft", "ttft_ms"))
        for name, p in PERCENTILES
    )
    return (
        f"SELECT {_bucket('start_us', postgres=True)} AS bucket, "
        f"{group} AS grp, {_SUMS}, {percentiles} FROM traces WHERE {_WHERE} "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    )


def _ranked_percentile(p: float) -> str:
    """percentile_cont(p) over the ranked rows of one group (rn 1..n), as SQL."""
    position = f"{p} * (n - 1)"
    low = f"CAST({position} AS INTEGER) + 1"
    at_low = f"MAX(CASE WHEN rn = {low} THEN v END)"
    at_high = f"COALESCE(MAX(CASE WHEN rn = {low} + 1 THEN v END), {at_low})"
    fraction = f"(MAX({position}) - MAX(CAST({position} AS INTEGER)))"
    return f"{at_low} + {fraction} * ({at_high} - {at_low})"


def _sqlite_sql(group: str) -> str:
    def ranked(column: str, prefix: str) -> str:
        picks = ", ".join(f"{_ranked_percentile(p)} AS {prefix}_{name}" for name, p in PERCENTILES)
        return (
            f"{prefix}_ranked AS (SELECT bucket, grp, {column} AS v, "
            f"ROW_NUMBER() OVER (PARTITION BY bucket, grp ORDER BY {column}) AS rn, "
            f"COUNT(*) OVER (PARTITION BY bucket, grp) AS n "
            f"FROM base WHERE {column} IS NOT NULL), "
            f"{prefix}_p AS (SELECT bucket, grp, {picks} FROM {prefix}_ranked GROUP BY bucket, grp)"
        )

    columns = ", ".join(
        f"{prefix}_p.{prefix}_{name}" for prefix in ("latency", "ttft") for name, _ in PERCENTILES
    )
    return (
        f"WITH base AS (SELECT {_bucket('start_us', postgres=False)} AS bucket, "
        f"{group} AS grp, status, duration_ms, ttft_ms, input_tokens, output_tokens, cost, "
        "cache, saved_cost, saved_ms, guard_action "
        f"FROM traces WHERE {_WHERE}), "
        f"agg AS (SELECT bucket, grp, {_SUMS} FROM base GROUP BY bucket, grp), "
        f"{ranked('duration_ms', 'latency')}, {ranked('ttft_ms', 'ttft')} "
        f"SELECT agg.*, {columns} FROM agg "
        "LEFT JOIN latency_p ON latency_p.bucket = agg.bucket AND latency_p.grp IS agg.grp "
        "LEFT JOIN ttft_p ON ttft_p.bucket = agg.bucket AND ttft_p.grp IS agg.grp "
        "ORDER BY agg.bucket, agg.grp"
    )


def _failures_sql(group: str, group_by: str, postgres: bool) -> str:
    """Failed upstream attempts per (bucket, group). By model, the group is the target that
    failed, not the one that answered; otherwise the attempt counts where its trace does."""
    bucket = _bucket("f.start_us", postgres)
    where = "f.project_id = :project AND f.start_us >= :since AND f.start_us < :until"
    if group_by == "model":
        return (
            f"SELECT {bucket} AS bucket, f.target AS grp, COUNT(*) AS failed "
            f"FROM trace_attempt_failures f WHERE {where} GROUP BY 1, 2"
        )
    return (
        f"SELECT {bucket} AS bucket, {group} AS grp, COUNT(*) AS failed "
        "FROM trace_attempt_failures f JOIN traces t ON t.trace_id = f.trace_id "
        f"WHERE {where} GROUP BY 1, 2"
    )


def _online_sql(group: str, postgres: bool) -> str:
    """Online evaluation's scores per (bucket, group, scorer), over the traces they score:
    how many, their mean, and how many passed the scorer's threshold (of those that carry
    a verdict)."""
    bucket = _bucket("t.start_us", postgres)
    # Scores first, then each one's trace by its key: SQLite takes a CROSS JOIN's order as
    # written, and would otherwise read every trace row in the window to find the few
    # scored (5x slower over 50,000 traces, a tenth of them scored). A score is written
    # after its trace started, so none created before the window can belong in it.
    return (
        f"SELECT {bucket} AS bucket, {group} AS grp, s.name AS name, COUNT(*) AS n, "
        "AVG(s.number) AS mean, SUM(CASE WHEN s.flag THEN 1 ELSE 0 END) AS passed, "
        "SUM(CASE WHEN s.flag IS NULL THEN 0 ELSE 1 END) AS verdicts "
        "FROM trace_scores s CROSS JOIN traces t "
        "WHERE s.project_id = :project AND s.created_us >= :since "
        "AND s.source = 'evaluator' AND s.author LIKE :online AND s.number IS NOT NULL "
        "AND t.trace_id = s.trace_id AND t.project_id = :project "
        "AND t.start_us >= :since AND t.start_us < :until "
        "GROUP BY 1, 2, 3"
    )


def stats(
    database: Database,
    project_id: str,
    *,
    since_us: int,
    until_us: int,
    bucket_s: int,
    group_by: GroupBy = "none",
) -> list[dict[str, Any]]:
    """One row per (time bucket, group): counts, error rate, percentiles, tokens, cost,
    and the online evaluation scores of its traces per scorer (`online_scores`).

    Buckets start at multiples of `bucket_s` since the epoch (whole hours, days, …);
    `bucket_s=0` makes the whole range one bucket, starting at `since_us`.
    """
    group = GROUPS[group_by]
    postgres = database.backend == "postgresql"
    sql = _postgres_sql(group) if postgres else _sqlite_sql(group)
    failures_sql = _failures_sql(group, group_by, postgres)
    online_sql = _online_sql(group, postgres)
    bucket_us, origin = bucket_s * 1_000_000, 0
    if bucket_s == 0:
        bucket_us, origin = max(1, until_us - since_us), since_us
    params = {"project": project_id, "since": since_us, "until": until_us,
              "bucket": bucket_us, "origin": origin, "online": ONLINE_AUTHOR}  # fmt: skip
    with database.engine.connect() as connection:
        rows = connection.execute(text(sql), params).mappings().all()
        failures = {
            (int(row["bucket"]), row["grp"]): int(row["failed"])
            for row in connection.execute(text(failures_sql), params).mappings()
        }
        online: dict[tuple[int, Any], dict[str, dict[str, Any]]] = {}
        for row in connection.execute(text(online_sql), params).mappings():
            scores = online.setdefault((int(row["bucket"]), row["grp"]), {})
            scores[str(row["name"])] = _online(row)
    result = [_item(row, failures.pop((int(row["bucket"]), row["grp"]), 0)) for row in rows]
    for item in result:
        item["online_scores"] = dict(sorted(online.get((item["bucket_start_us"],
                                                        item["group"]), {}).items()))  # fmt: skip
    # A target that failed every attempt answered no request: it still gets a row.
    if failures:
        result.extend(
            _item({"bucket": bucket, "grp": group, "requests": 0}, failed)
            for (bucket, group), failed in failures.items()
        )
        result.sort(key=lambda item: (item["bucket_start_us"], str(item["group"] or "")))
    return result


def _online(row: Mapping[Any, Any]) -> dict[str, Any]:
    verdicts, passed = int(row["verdicts"] or 0), int(row["passed"] or 0)
    return {
        "count": int(row["n"]),
        "mean": None if row["mean"] is None else float(row["mean"]),
        "passed": passed,
        "verdicts": verdicts,
        "pass_rate": passed / verdicts if verdicts else None,
    }


def _item(row: Mapping[Any, Any], failed_attempts: int) -> dict[str, Any]:
    """One stats row from the query's columns (a column left out reads as none)."""
    requests = int(row["requests"])
    errors = int(row.get("errors") or 0)
    lookups, hits = int(row.get("cache_lookups") or 0), int(row.get("cache_hits") or 0)
    item: dict[str, Any] = {
        "bucket_start_us": int(row["bucket"]),
        "group": row["grp"],
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests else 0.0,
        "input_tokens": int(row.get("input_tokens") or 0),
        "output_tokens": int(row.get("output_tokens") or 0),
        "cost": float(row.get("cost") or 0.0),
        "cache_lookups": lookups,
        "cache_hits": hits,
        "cache_hit_rate": hits / lookups if lookups else 0.0,
        "saved_cost": float(row.get("saved_cost") or 0.0),
        "saved_ms": float(row.get("saved_ms") or 0.0),
        "guard_blocks": int(row.get("guard_blocks") or 0),
        "guard_flags": int(row.get("guard_flags") or 0),
        "failed_attempts": failed_attempts,
        "online_scores": {},
    }
    for prefix in ("latency", "ttft"):
        for name, _ in PERCENTILES:
            value = row.get(f"{prefix}_{name}")
            item[f"{prefix}_{name}_ms"] = None if value is None else float(value)
    return item
