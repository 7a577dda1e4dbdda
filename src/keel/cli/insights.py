"""`keel insights topics|anomalies|drift|similar`: what the traffic is about, what is unlike
it, whether its mix shifted, and the past requests most like one."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from keel.cli.client import Api, ConfigOption, KeyOption, UrlOption

app = typer.Typer(
    help="Insights: topics, anomalies, drift, similar requests.", no_args_is_help=True
)
out = Console()

HoursOption = Annotated[float, typer.Option(help="The window: the last N hours.")]
RouteOption = Annotated[str | None, typer.Option(help="Only requests of this route (model).")]
UntilOption = Annotated[
    float | None, typer.Option(help="End of the window, epoch seconds (default: now).")
]


def _spark(counts: list[int]) -> str:
    bars = " ▁▂▃▄▅▆▇█"
    top = max(counts) or 1
    return "".join(bars[round(c / top * 8)] for c in counts)


POLL_SECONDS = 0.5


@app.command("topics")
def topics(
    hours: HoursOption = 24,
    route: RouteOption = None,
    until: UntilOption = None,
    show: Annotated[
        bool, typer.Option("--show", help="Show the newest stored topics; start no job.")
    ] = False,
    job: Annotated[str | None, typer.Option(help="Show this topics job's result.")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Start a topics job over the window, follow it, and print its topics: label, requests,
    share, cost, latency, errors, feedback and trend (`--show`: the stored ones)."""
    api = Api(url, key, config)
    if not (show or job):
        started = api.call(
            "POST", "/api/insights/topics", {"hours": hours, "until": until, "route": route}
        )
        job = str(started["id"])
        out.print(f"topics job {job} started")
    found = api.call("GET", "/api/insights/topics", job_id=job, route=route)
    if job is not None:
        with out.status("clustering the window's requests…") as status:
            while found["job"]["state"] not in ("succeeded", "failed", "cancelled"):
                progress = found["job"]["progress"]
                status.update(f"clustering… {progress['done']}/{progress['total']} items")
                time.sleep(POLL_SECONDS)
                found = api.call("GET", "/api/insights/topics", job_id=job)
    state = found["job"]["state"] if found["job"] else None
    if found["result"] is None:
        detail = found["job"]["error"] if found["job"] else None
        raise typer.Exit(_fail(f"topics job {job or found['job']['id']} {state}: {detail}"))
    _print_topics(found["result"])


def _fail(message: str) -> int:
    out.print(Text(message, style="red"))
    return 1


def _print_topics(found: dict[str, Any]) -> None:
    table = Table(
        "#",
        "topic",
        "requests",
        "share",
        "cost",
        "p50 ms",
        "errors",
        "feedback",
        "trend",
        "example",
        title=f"{len(found['topics'])} topics in {found['requests']:,} requests "
        f"(job {found.get('job_id')}; {found.get('new_requests', 0):,} newer requests assigned)",
    )
    for topic in found["topics"]:
        example = topic["examples"][0]["text"] if topic["examples"] else ""
        feedback = topic.get("feedback") or {}
        table.add_row(
            str(topic["topic"]),
            topic["label"],
            f"{topic['requests']:,}",
            f"{topic['share']:.1%}",
            "-" if topic["cost"] is None else f"${topic['cost']:.4f}",
            f"{topic['latency_ms_p50']:,.0f}",
            f"{topic['error_rate']:.0%}",
            "-"
            if feedback.get("mean") is None
            else f"{feedback['mean']:.2f} ({feedback['scores']})",
            _spark(topic["trend"]),
            example[:60],
        )
    out.print(table)


@app.command("anomalies")
def anomalies(
    hours: HoursOption = 24,
    reference_hours: Annotated[float, typer.Option(help="Reference window before it.")] = 168,
    threshold: Annotated[float | None, typer.Option(help="Override the project's.")] = None,
    route: RouteOption = None,
    until: UntilOption = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Requests of the window unlike the reference window, highest score first."""
    found = Api(url, key, config).call(
        "GET",
        "/api/insights/anomalies",
        hours=str(hours),
        reference_hours=str(reference_hours),
        threshold=None if threshold is None else str(threshold),
        route=route,
        until=None if until is None else str(until),
    )
    out.print(
        f"{found['flagged']} of {found['scored']} requests over the threshold "
        f"{found['threshold']} (reference: {found['reference_requests']} requests)"
    )
    table = Table("score", "trace", "request", title="Anomalies")
    for item in found["anomalies"]:
        table.add_row(f"{item['score']:.3f}", item["trace_id"], item["text"][:100])
    out.print(table)


@app.command("drift")
def drift(
    hours: HoursOption = 24,
    reference_hours: Annotated[float, typer.Option(help="Reference window before it.")] = 168,
    route: RouteOption = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Compare the window's topic mix with the reference window (alerts when it shifted)."""
    found: dict[str, Any] = Api(url, key, config).call(
        "POST",
        "/api/insights/drift",
        {"recent_hours": hours, "reference_hours": reference_hours, "route": route},
    )
    verdict = Text("shifted", style="red") if found["shifted"] else Text("no shift", style="green")
    out.print(verdict, f"p={found['p_value']:.3g} (alpha {found['alpha']}); {found['test']}")
    table = Table("topic", "reference share", "recent share", title="Largest movers")
    for mover in found["movers"]:
        table.add_row(
            mover["label"], f"{mover['reference_share']:.1%}", f"{mover['recent_share']:.1%}"
        )
    out.print(table)


@app.command("similar")
def similar(
    trace_id: Annotated[str | None, typer.Option(help="A trace whose request to match.")] = None,
    text: Annotated[str | None, typer.Option(help="A text to match.")] = None,
    limit: Annotated[int, typer.Option(help="How many.")] = 10,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """The past requests most like a trace's or a text, with their answers."""
    found = Api(url, key, config).call(
        "GET", "/api/insights/similar", trace_id=trace_id, text=text, limit=str(limit)
    )
    table = Table("similarity", "trace", "request", "answer", title="Similar requests")
    for item in found["similar"]:
        table.add_row(
            f"{item['similarity']:.3f}",
            item["trace_id"],
            item["text"][:80],
            (item["answer"] or "")[:60],
        )
    out.print(table)
