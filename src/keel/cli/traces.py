"""`keel traces tail|show|prune` and `keel stats`: watch requests, read one trace, delete
old ones, aggregate."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption

app = typer.Typer(help="Traces of gateway requests.", no_args_is_help=True)
out = Console()

# Attributes shown next to a span's name in `keel traces show` (the rest: --attributes).
_HEADLINE = (
    "gen_ai.request.model", "gen_ai.response.model", "gen_ai.provider.name",
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "keel.target", "keel.route",
    "keel.prompt.name", "keel.prompt.version", "keel.cost", "keel.ttft_ms", "error.type",
)  # fmt: skip


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _time(trace: dict[str, Any]) -> str:
    return datetime.fromtimestamp(trace["start_us"] / 1e6, UTC).strftime("%H:%M:%S.%f")[:-3]


def _status(trace: dict[str, Any]) -> Text:
    if trace["status"] == "ok":
        return Text(str(trace["http_status"]), style="green")
    return Text(f"{trace['http_status']} {trace.get('error_type') or ''}".strip(), style="red")


def traces_table(traces: list[dict[str, Any]], title: str = "Traces") -> Table:
    table = Table("time (UTC)", "trace id", "model", "target", "status", "ms", "ttft ms",
                  "tokens in/out", "cost", "user", title=title)  # fmt: skip
    for t in traces:
        tokens = f"{t['input_tokens'] or 0}/{t['output_tokens'] or 0}"
        table.add_row(_time(t), t["trace_id"], t["model"] or "-", t["target"] or "-",
                      _status(t), _ms(t["duration_ms"]), _ms(t["ttft_ms"]), tokens,
                      f"{t['cost'] or 0:.6f}", t["user"] or "-")  # fmt: skip
    return table


@app.command("tail")
def tail(
    model: Annotated[str | None, typer.Option(help="Only this model, route or version.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Also show requests since then: an age (15m) or ISO time.")
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between polls.", min=0.2)] = 1.0,
    rows: Annotated[int, typer.Option(help="Rows kept on screen.", min=1, max=200)] = 20,
    polls: Annotated[int, typer.Option(help="Stop after this many polls (0: never).")] = 0,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Watch requests as they are traced: a live table, newest first (Ctrl-C to stop)."""
    api = Api(url, key, config)
    since = since or datetime.now(UTC).isoformat()
    shown: list[dict[str, Any]] = []
    seen: set[str] = set()
    done = 0
    with Live(traces_table(shown), console=out, auto_refresh=False) as live:
        try:
            while polls == 0 or done < polls:
                page = api.call("GET", "/api/traces", since=since, model=model, limit="200")
                fresh = [t for t in page["data"] if t["trace_id"] not in seen]
                seen.update(t["trace_id"] for t in fresh)
                shown = (fresh + shown)[:rows]
                live.update(traces_table(shown, title=f"Traces ({len(seen)} since start)"))
                live.refresh()
                done += 1
                if polls == 0 or done < polls:
                    time.sleep(interval)
        except KeyboardInterrupt:
            pass


def _span_label(span: dict[str, Any], all_attributes: bool) -> Group | Text:
    style = "red" if span["status"] == "error" else "bold"
    label = Text.assemble((span["name"], style), f"  {span['duration_ms']:,.2f} ms")
    attributes = span["attributes"]
    keys = sorted(attributes) if all_attributes else [k for k in _HEADLINE if k in attributes]
    if not keys:
        return label
    details = Text(", ".join(f"{k}={attributes[k]}" for k in keys), style="dim")
    return Group(label, details)


def _add(tree: Tree, span: dict[str, Any], all_attributes: bool) -> None:
    branch = tree.add(_span_label(span, all_attributes))
    for child in span["children"]:
        _add(branch, child, all_attributes)


@app.command("show")
def show(
    trace_id: Annotated[str, typer.Argument(help="Trace id (the X-Keel-Trace-Id header).")],
    attributes: Annotated[bool, typer.Option(help="Show every attribute of every span.")] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one trace: its summary, its spans as a tree, its content and scores."""
    trace = Api(url, key, config).call("GET", f"/api/traces/{trace_id}")
    out.print(traces_table([trace], title=f"Trace {trace_id}"))
    tree = Tree(Text("spans", style="bold"))
    for span in trace["spans"]:
        _add(tree, span, attributes)
    out.print(tree)
    for name in ("input", "output"):
        if trace.get(name):
            out.print(Text(f"{name}: ", style="bold") + Text(str(trace[name])))
    for score in trace["scores"]:
        out.print(f"score {score['name']} = {score['value']} ({score['source']})"
                  + (f": {score['comment']}" if score["comment"] else ""))  # fmt: skip


PRUNE_CALL_LIMIT = 10_000  # traces deleted per API call; the bar moves between calls


@app.command("prune")
def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Delete traces started before: an age (30d) or ISO time."
        ),
    ],
    dry_run: Annotated[bool, typer.Option(help="Only count what would be deleted.")] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete old traces of every project now, as retention does in the background
    (needs an admin key); the store stays writable meanwhile."""
    api = Api(url, key, config)
    # The cutoff is fixed once, so a long run does not chase a moving "30 days ago".
    counted = api.call("POST", "/api/traces/prune", {"older_than": older_than, "dry_run": True})
    total, before = counted["matched"], counted["before"]
    if dry_run or not total:
        out.print(
            f"{total:,} trace(s) started before {before}" + (" would be deleted" if total else "")
        )
        return
    deleted = 0
    columns = (
        TextColumn("deleting traces"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, transient=True) as progress:
        task = progress.add_task("prune", total=total)
        more = True
        while more:
            result = api.call("POST", "/api/traces/prune", {"before_us": counted["before_us"],
                                                            "limit": PRUNE_CALL_LIMIT})  # fmt: skip
            deleted += result["deleted"]
            more = result["more"]
            progress.update(task, completed=min(deleted, total))
    out.print(f"deleted {deleted:,} trace(s) started before {before}")


def stats(
    since: Annotated[str, typer.Option(help="Start: an age (15m, 1h, 7d) or ISO time.")] = "1h",
    until: Annotated[str | None, typer.Option(help="End (default now).")] = None,
    by: Annotated[
        str,
        typer.Option(
            help="Group by: none, route, model (the model version that answered, e.g. "
            "chat@2; model_version is the same), key or prompt."
        ),
    ] = "route",
    bucket: Annotated[int | None, typer.Option(help="Bucket length in seconds.")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Requests, errors, latency and TTFT percentiles, tokens and cost per time bucket, and
    the online evaluation scores of those requests per scorer."""
    # A trace's model is the version that answered (name@N), so both names group alike.
    group = "model" if by == "model_version" else by
    params: dict[str, str | None] = {"since": since, "until": until, "by": group}
    params["bucket"] = str(bucket or 0)  # without --bucket: the whole range, one row per group
    result = Api(url, key, config).call("GET", "/api/stats", **params)
    table = Table("from (UTC)", by, "requests", "error %", "p50 ms", "p95 ms", "p99 ms",
                  "ttft p50", "ttft p95", "tokens in", "tokens out", "cost", "failed attempts",
                  title=f"Requests since {since}")  # fmt: skip
    for row in result["data"]:
        table.add_row(row["bucket_start"][:16].replace("T", " "), str(row["group"] or "-"),
                      f"{row['requests']:,}", f"{100 * row['error_rate']:.1f}",
                      _ms(row["latency_p50_ms"]), _ms(row["latency_p95_ms"]),
                      _ms(row["latency_p99_ms"]), _ms(row["ttft_p50_ms"]),
                      _ms(row["ttft_p95_ms"]), f"{row['input_tokens']:,}",
                      f"{row['output_tokens']:,}", f"{row['cost']:.6f}",
                      f"{row.get('failed_attempts', 0):,}")  # fmt: skip
    out.print(table)
    scored = Table("from (UTC)", by, "scorer", "scores", "mean", "pass %",
                   title="Online evaluation scores")  # fmt: skip
    for row in result["data"]:
        for name, score in (row.get("online_scores") or {}).items():
            rate = score["pass_rate"]
            scored.add_row(row["bucket_start"][:16].replace("T", " "), str(row["group"] or "-"),
                           name, f"{score['count']:,}", _number(score["mean"]),
                           "-" if rate is None else f"{100 * rate:.1f}")  # fmt: skip
    if scored.row_count:
        out.print(scored)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
