"""`keel eval run|list|show|compare` and the dataset commands: evaluation from the shell and
from CI. `keel eval run -f eval.yaml --gate …` exits 1 when a gate fails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from xml.etree import ElementTree

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from keel.cli.client import ConfigOption, KeyOption, UrlOption, fail, resolve_target_and_source
from keel.client import Client, KeelAPIError, Run

app = typer.Typer(help="Evaluation: datasets, experiments, comparisons, CI gates.",
                  no_args_is_help=True)  # fmt: skip
out = Console()

# Keys of eval.yaml that steer the CLI rather than describe the experiment.
_CLI_KEYS = ("gates", "baseline", "confidence", "dataset_file")
_STATE = {"succeeded": "green", "failed": "red"}


@contextmanager
def _client(url: str | None, key: str | None, config: Path | None) -> Iterator[Client]:
    base, token, _ = resolve_target_and_source(url, key, config)
    client = Client(base, token, timeout=120)
    try:
        yield client
    except KeelAPIError as error:
        raise fail(error.message if error.status == 0 else f"{error.status}: {error.message}"
                   ) from None  # fmt: skip
    finally:
        client.close()


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return str(value)


def runs_table(runs: list[Run], title: str = "Experiment runs") -> Table:
    table = Table("run", "experiment", "subject", "label", "state", "items", "pass_rate",
                  title=title)  # fmt: skip
    for run in runs:
        summary = run.summary or {}
        state = Text(run.state, style=_STATE.get(run.state, ""))
        total = f"{run.progress.get('total', 0):,}"
        table.add_row(run.id, run.experiment, run.title, run.label or "-", state, total,
                      _fmt(summary.get("pass_rate")))  # fmt: skip
    return table


def metrics_table(runs: list[Run]) -> Table:
    table = Table("metric", "range", "direction", "threshold", *(r.title for r in runs),
                  title="Scores (mean over items; pass rate)")  # fmt: skip
    scorers = (runs[0].raw.get("scorers") or []) if runs else []
    table.add_row("pass_rate", "0..1", "higher", "-",
                  *(_fmt(r.metric("pass_rate")) for r in runs))  # fmt: skip
    for scorer in scorers:
        name = scorer["name"]
        low, high = scorer["range"]
        table.add_row(
            name, f"{_fmt(low)}..{_fmt(high) if high is not None else '∞'}",
            scorer["direction"], _fmt(scorer["threshold"]),
            *(f"{_fmt(r.metric(name))} ({_fmt(r.metric(name + '.pass_rate'))})" for r in runs),
        )  # fmt: skip
    return table


def differences_table(comparison: dict[str, Any]) -> Table:
    confidence = comparison["confidence"]
    table = Table("run", "metric", "Δ mean", f"{confidence:.0%} CI", "better", "worse",
                  "sign p", title=f"Against the baseline {comparison['baseline']}")  # fmt: skip
    for run_id, metrics in comparison["differences"].items():
        for metric, d in metrics.items():
            style = "red" if d["ci_high"] < 0 else ("green" if d["ci_low"] > 0 else "")
            table.add_row(run_id, metric, Text(_fmt(d["mean"], True), style=style),
                          f"[{_fmt(d['ci_low'], True)}, {_fmt(d['ci_high'], True)}]",
                          str(d["better"]), str(d["worse"]), f"{d['p_value']:.3g}")  # fmt: skip
    return table


def _load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise fail(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise fail(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise fail(f"{path}: expected a mapping with name, dataset, subjects and scorers")
    return data


def _wait(client: Client, runs: list[Run]) -> list[Run]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=out, transient=False) as bar:
        tasks = {r.id: bar.add_task(r.title, total=r.progress.get("total") or None) for r in runs}

        def show(current: list[Run]) -> None:
            for run in current:
                p = run.progress
                bar.update(tasks[run.id], completed=p.get("done", 0) + p.get("failed", 0),
                           total=p.get("total") or None)  # fmt: skip

        return client.experiments.wait(runs, on_progress=show)


@app.command("run")
def run_eval(
    file: Annotated[
        Path,
        typer.Option(
            "--file", "-f", help="eval.yaml: name, dataset, subjects, scorers, repeat, label, gates"
        ),
    ],
    baseline: Annotated[str | None, typer.Option(help="Run id or label to compare with.")] = None,
    gate: Annotated[
        list[str] | None,
        typer.Option("--gate", help="accuracy>=0.8 or delta(accuracy)>=-0.02 (repeatable)."),
    ] = None,
    repeat: Annotated[int | None, typer.Option(help="Samples per item.")] = None,
    label: Annotated[str | None, typer.Option(help="Label these runs (a later baseline).")] = None,
    confidence: Annotated[float | None, typer.Option(help="For delta gates (0.95).")] = None,
    json_out: Annotated[Path, typer.Option("--json", help="Results as JSON.")] = Path(
        "keel-eval.json"
    ),
    junit: Annotated[Path, typer.Option(help="Gates and items as JUnit XML.")] = Path(
        "keel-eval.xml"
    ),
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Run an experiment, wait, print scores, check gates; exit 1 when a gate fails."""
    data = _load(file)
    options = {k: data.pop(k) for k in _CLI_KEYS if k in data}
    if repeat is not None:
        data["repeat"] = repeat
    if label is not None:
        data["label"] = label
    gates = [*(options.get("gates") or []), *(gate or [])]
    baseline = baseline or options.get("baseline")
    level = confidence or float(options.get("confidence", 0.95))
    with _client(url, key, config) as client:
        if options.get("dataset_file"):
            source = (file.parent / str(options["dataset_file"])).resolve()
            version = client.datasets.upload(str(data.get("dataset")), source)
            out.print(f"dataset {data.get('dataset')}: version {version.version} "
                      f"({version.items:,} items) from {source.name}")  # fmt: skip
        runs = _wait(client, client.experiments.start(data))
        out.print(metrics_table(runs))
        comparison = None
        if baseline:
            comparison = client.comparisons.compare([baseline, *(r.id for r in runs)], level)
            out.print(differences_table(comparison))
        reports = [client.experiments.gates(r.id, gates, baseline, level) for r in runs] \
            if gates else []  # fmt: skip
    failed_runs = [r for r in runs if r.state != "succeeded"]
    if reports:
        table = Table("run", "gate", "result", "observed", title="Gates")
        for report in reports:
            for g in report.gates:
                verdict = Text("pass", style="green") if g["passed"] else Text("FAIL", "bold red")
                table.add_row(report.run, g["gate"], verdict, g["message"])
        out.print(table)
    result = {
        "runs": [r.raw for r in runs],
        "comparison": comparison,
        "gates": [{"run": r.run, "passed": r.passed, "gates": r.gates} for r in reports],
        "passed": not failed_runs and all(r.passed for r in reports),
    }
    json_out.write_text(json.dumps(result, indent=2, default=str))
    if reports:
        junit.write_text(_merge(reports))
    out.print(f"results: {json_out}" + (f", JUnit: {junit}" if reports else ""))
    if failed_runs:
        raise fail(f"{len(failed_runs)} run(s) did not succeed: "
                   + ", ".join(f"{r.id} {r.state}" for r in failed_runs))  # fmt: skip
    if not result["passed"]:
        raise fail("a gate failed")


def _merge(reports: list[Any]) -> str:
    """One JUnit file for several runs: every run's suites under one root."""
    roots = [ElementTree.fromstring(r.junit.split("\n", 1)[1]) for r in reports]
    for other in roots[1:]:
        roots[0].extend(list(other))
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(
        roots[0], encoding="unicode"
    )


@app.command("list")
def list_runs(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    url: UrlOption = None, key: KeyOption = None, config: ConfigOption = None,
) -> None:  # fmt: skip
    """Experiment runs, newest first."""
    with _client(url, key, config) as client:
        out.print(runs_table(client.experiments.list(limit)))


@app.command("show")
def show_run(
    run: Annotated[str, typer.Argument(help="Run id.")],
    items: Annotated[bool, typer.Option(help="Also each item's scores.")] = False,
    url: UrlOption = None, key: KeyOption = None, config: ConfigOption = None,
) -> None:  # fmt: skip
    """A run: subject, progress and scores (and per-item results with --items)."""
    with _client(url, key, config) as client:
        found = client.experiments.get(run)
        out.print(runs_table([found], title=f"Run {found.id}"))
        out.print(metrics_table([found]))
        if items:
            table = Table("item", "passed", "scores", "output", title="Items")
            for row in client.experiments.items(run):
                scores = ", ".join(f"{k}={_fmt(v)}" for k, v in row["scores"].items())
                table.add_row(str(row["item_id"]), "yes" if row["passed"] else "no", scores,
                              (row["outputs"] or [""])[0][:80])  # fmt: skip
            out.print(table)


@app.command("compare")
def compare_runs(
    runs: Annotated[list[str], typer.Argument(help="Baseline first; run ids or labels.")],
    confidence: Annotated[float, typer.Option(help="Confidence level.")] = 0.95,
    diffs: Annotated[int, typer.Option(help="Changed items to show.")] = 20,
    url: UrlOption = None, key: KeyOption = None, config: ConfigOption = None,
) -> None:  # fmt: skip
    """Runs side by side: paired differences with confidence intervals, changed items."""
    with _client(url, key, config) as client:
        comparison = client.comparisons.compare(runs, confidence)
    out.print(differences_table(comparison))
    changed = [row for row in comparison["items"] if row["changed"]]
    title = f"Changed items ({len(changed)} of {len(comparison['items'])})"
    table = Table("item", *(r["title"] for r in comparison["runs"]), title=title)
    for row in changed[:diffs]:
        cells = []
        for run in comparison["runs"]:
            cell = row["runs"].get(run["id"]) or {}
            output = (cell.get("output") or "")[:60]
            cells.append(f"{_fmt((cell.get('scores') or {}).get('pass_rate'))} {output}")
        table.add_row(str(row["item_id"]), *cells)
    out.print(table)


@app.command("datasets")
def list_datasets(url: UrlOption = None, key: KeyOption = None,
                  config: ConfigOption = None) -> None:  # fmt: skip
    """Datasets of the project with their latest version."""
    with _client(url, key, config) as client:
        found = client.datasets.list()
    table = Table("name", "latest version", "description", title="Datasets")
    for d in found:
        table.add_row(d.name, str(d.latest_version), d.description)
    out.print(table)


@app.command("upload")
def upload(
    name: Annotated[str, typer.Argument(help="Dataset name (created when new).")],
    file: Annotated[Path, typer.Argument(help="JSONL (one item per line) or CSV.")],
    url: UrlOption = None, key: KeyOption = None, config: ConfigOption = None,
) -> None:  # fmt: skip
    """Items from a file as the dataset's next version; a bad line names itself."""
    if not file.is_file():
        raise fail(f"no file {file}")
    with _client(url, key, config) as client:
        version = client.datasets.upload(name, file)
    out.print(f"{name}: version {version.version}, {version.items:,} items")


@app.command("from-traces")
def from_traces(
    name: Annotated[str, typer.Argument(help="Dataset name (created when new).")],
    route: Annotated[str | None, typer.Option(help="Model, route or version.")] = None,
    prompt: Annotated[str | None, typer.Option(help="NAME or NAME@VERSION.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time or age: 1h, 7d.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time or age.")] = None,
    q: Annotated[str | None, typer.Option(help="Text in the request or answer.")] = None,
    score: Annotated[str | None, typer.Option(help="Feedback score NAME the trace has.")] = None,
    min_score: Annotated[float | None, typer.Option(help="Lowest value of --score.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many traces, newest first.")] = 1000,
    no_expected: Annotated[bool, typer.Option(help="Do not keep answers as expected.")] = False,
    url: UrlOption = None, key: KeyOption = None, config: ConfigOption = None,
) -> None:  # fmt: skip
    """Traces matching a filter as the dataset's next version, in one call."""
    filters: dict[str, Any] = {"route": route, "prompt": prompt, "since": since,
                               "until": until, "q": q, "score_name": score,
                               "min_score": min_score, "limit": limit,
                               "expected": "none" if no_expected else "output"}  # fmt: skip
    with _client(url, key, config) as client:
        version = client.datasets.from_traces(
            name, **{k: v for k, v in filters.items() if v is not None}
        )
    out.print(f"{name}: version {version.version}, {version.items:,} items from traces")


@app.command("scorers")
def scorers(url: UrlOption = None, key: KeyOption = None, config: ConfigOption = None) -> None:
    """Scorer types with their range, direction and default threshold."""
    with _client(url, key, config) as client:
        found = client.experiments.scorers()
    table = Table("type", "range", "direction", "threshold", "what it measures", title="Scorers")
    for s in found:
        low, high = s["range"]
        table.add_row(s["type"], f"{_fmt(low)}..{_fmt(high) if high is not None else '∞'}",
                      s["direction"], _fmt(s["default_threshold"]), s["summary"])  # fmt: skip
    out.print(table)
