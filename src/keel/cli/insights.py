"""`keel insights topics|anomalies|drift|similar`: what the traffic is about, what is unlike
it, whether its mix shifted, and the past requests most like one."""

from __future__ import annotations

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


@app.command("topics")
def topics(
    hours: HoursOption = 24,
    route: RouteOption = None,
    until: UntilOption = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Topics of the window: label, requests, share, cost, latency, errors and trend."""
    with out.status("clustering the window's requests…"):
        found = Api(url, key, config).call(
            "GET",
            "/api/insights/topics",
            hours=str(hours),
            route=route,
            until=None if until is None else str(until),
        )
    table = Table(
        "#",
        "topic",
        "requests",
        "share",
        "cost",
        "p50 ms",
        "errors",
        "trend",
        "example",
        title=f"{len(found['topics'])} topics in {found['requests']:,} requests",
    )
    for topic in found["topics"]:
        example = topic["examples"][0]["text"] if topic["examples"] else ""
        table.add_row(
            str(topic["topic"]),
            topic["label"],
            f"{topic['requests']:,}",
            f"{topic['share']:.1%}",
            "-" if topic["cost"] is None else f"${topic['cost']:.4f}",
            f"{topic['latency_ms_p50']:,.0f}",
            f"{topic['error_rate']:.0%}",
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
