"""Keel side by side with LiteLLM's proxy and a bare reverse proxy, all in front of one stub.

`python bench/compare.py` starts the stub, the floor proxy, Keel in three configurations
and LiteLLM, drives each with bench/load.py (its own process) at several concurrencies,
streaming and not, and prints JSON on stdout and Markdown tables on stderr. Every ratio
is taken between rows of the same run. `--quick` for short runs, `--systems` to choose.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from load import LoadResult
from overhead import (
    MODES,
    BenchError,
    Children,
    Mode,
    Options,
    _progress,
    children,
    machine,
    measure,
    parse_cases,
    run_main,
    start_stub,
)
from systems import (
    LITELLM_SPEC,
    System,
    cpu_seconds,
    guard_available,
    rss_bytes,
    spec_version,
    start_floor,
    start_keel,
    start_litellm,
)

SYSTEMS = ("floor", "keel", "keel-guard", "keel-bare", "litellm")
KEELS = ("keel", "keel-guard", "keel-bare")
MAX_ERROR_RATE = 0.01
_RSS_INTERVAL_S = 0.25


@dataclass(frozen=True, slots=True)
class CompareSettings:
    systems: tuple[str, ...]
    options: Options
    litellm_workers: int
    baseline: str | None = None  # a git revision, run as `keel` for before/after ratios


@dataclass(slots=True)
class Case:
    """One load run: a system (or `direct`), a mode and a concurrency."""

    system: str
    mode: Mode
    concurrency: int
    result: LoadResult | None
    failure: str | None = None
    cpu_ms_per_request: float | None = None  # the system's process tree, all threads

    @property
    def error_rate(self) -> float | None:
        if self.result is None:
            return None
        sent = self.result.requests + self.result.errors
        return self.result.errors / sent if sent else None


@dataclass(slots=True)
class Memory:
    """Resident memory of one system's process tree: idle after start, and the peak under load."""

    idle_bytes: int = 0
    peak_bytes: int = 0


@dataclass(slots=True)
class RssSampler:
    """Samples every system's process-tree RSS in a thread while the run goes on."""

    pids: dict[str, int]
    memory: dict[str, Memory] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        for name, pid in self.pids.items():
            idle = rss_bytes(pid)
            self.memory[name] = Memory(idle, idle)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(_RSS_INTERVAL_S):
            for name, pid in self.pids.items():
                memory = self.memory[name]
                memory.peak_bytes = max(memory.peak_bytes, rss_bytes(pid))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# -- running -------------------------------------------------------------------------------


def start_systems(
    settings: CompareSettings, running: Children, tmp: Path, stub_url: str
) -> tuple[list[System], dict[str, str]]:
    """Start the chosen systems; return them and why any chosen one was skipped."""
    skipped: dict[str, str] = {}
    starters: dict[str, Callable[[], System]] = {
        "floor": lambda: start_floor(running, stub_url),
        "keel": lambda: start_keel(running, tmp, stub_url, "keel", tracing=True, limits=True),
        "keel-guard": lambda: start_keel(
            running,
            tmp,
            stub_url,
            "keel-guard",
            tracing=True,
            limits=True,
            env_extra={"KEEL_GUARD_POLICY": "default"},
        ),
        "keel-bare": lambda: start_keel(
            running, tmp, stub_url, "keel-bare", tracing=False, limits=False
        ),
        "litellm": lambda: start_litellm(running, tmp, stub_url, settings.litellm_workers),
    }
    if settings.baseline:
        rev, src = settings.baseline, _checkout(settings.baseline, tmp)
        starters[f"keel@{rev}"] = lambda: start_keel(
            running, tmp, stub_url, f"keel@{rev}", tracing=True, limits=True,
            env_extra={"PYTHONPATH": str(src)},
        )  # fmt: skip
    systems = []
    for name in (*settings.systems, *(f"keel@{r}" for r in [settings.baseline] if r)):
        if name == "keel-guard" and not guard_available():
            skipped[name] = (
                "not available: this checkout has no guard_policy setting "
                "(keel/settings.py), so KEEL_GUARD_POLICY=default would be ignored"
            )
            _progress(f"skipping {name}: {skipped[name]}")
            continue
        _progress(f"starting {name} ...")
        try:
            systems.append(starters[name]())
        except BenchError as exc:
            # One system that cannot start (say, a feature mid-change) must not void the rest.
            last = (str(exc).strip().splitlines() or ["?"])[-1]
            skipped[name] = f"failed to start: {last[:300]}"
            _progress(f"skipping {name}: {skipped[name]}")
    return systems, skipped


def _checkout(rev: str, tmp: Path) -> Path:
    """Keel's sources at `rev`, unpacked under `tmp`; its `src` goes first on PYTHONPATH."""
    into = tmp / "baseline"
    into.mkdir()
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", rev, "src"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise BenchError(f"--baseline {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def run_cases(options: Options, stub_url: str, systems: list[System]) -> list[Case]:
    targets: list[tuple[str, str, str | None]] = [("direct", stub_url, None)]
    targets += [(s.name, s.url, s.api_key) for s in systems]
    pids = {s.name: s.pid for s in systems}
    cases = []
    number = 0
    for concurrency in options.concurrency:
        for mode in options.modes:
            # Direct first, then the systems in an order that rotates from case to case, so
            # no system always runs right after the same neighbour.
            shift = number % len(systems) if systems else 0
            order = [targets[0], *targets[1:][shift:], *targets[1:][:shift]]
            number += 1
            for name, url, key in order:
                pid = pids.get(name)
                before = cpu_seconds(pid) if pid else 0.0
                try:
                    result = measure(url, concurrency, mode, options, key)
                except BenchError as exc:
                    cases.append(Case(name, mode, concurrency, None, str(exc)[-500:]))
                    _progress(f"{name:11} {mode:13} c={concurrency:<3} FAILED: {exc}")
                    continue
                case = Case(name, mode, concurrency, result)
                if pid and result.requests:
                    # CPU per request holds up when other work shares the cores, unlike
                    # latency and req/s. The load ran warm-up + duration; scale the count.
                    served = result.requests * (options.warmup_s + options.duration_s)
                    served /= options.duration_s
                    case.cpu_ms_per_request = round((cpu_seconds(pid) - before) * 1000 / served, 3)
                cases.append(case)
                ttfb = f"  ttfb {result.ttfb_p50_ms:7.2f}" if result.ttfb_p50_ms else ""
                _progress(
                    f"{name:11} {mode:13} c={concurrency:<3} {result.rps:8.1f} req/s  "
                    f"p50 {result.p50_ms:7.2f}  p99 {result.p99_ms:7.2f}{ttfb}  "
                    f"errors {result.errors}"
                )
                if result.error_sample:
                    _progress(f"  first error: {result.error_sample}")
    return cases


# -- deriving --------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    # A ratio of added latencies means nothing when the denominator is at or below zero.
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 2)


def added(cases: list[Case]) -> list[dict[str, Any]]:
    """Each system's row with what it adds over direct in the same (mode, concurrency)."""
    direct = {(c.mode, c.concurrency): c.result for c in cases if c.system == "direct"}
    rows = []
    for case in cases:
        base = direct.get((case.mode, case.concurrency))
        row: dict[str, Any] = {
            "system": case.system,
            "mode": case.mode,
            "concurrency": case.concurrency,
        }
        if case.result is None or base is None:
            rows.append(row | {"failure": case.failure or "no direct baseline"})
            continue
        r = case.result
        row |= {
            "rps": r.rps,
            "errors": r.errors,
            "error_rate": round(case.error_rate or 0.0, 4),
            "p50_ms": r.p50_ms,
            "p99_ms": r.p99_ms,
            "added_p50_ms": round(r.p50_ms - base.p50_ms, 3),
            "added_p99_ms": round(r.p99_ms - base.p99_ms, 3),
            "ttfb_p50_ms": r.ttfb_p50_ms,
            "ttfb_p99_ms": r.ttfb_p99_ms,
            "added_ttfb_p50_ms": round(r.ttfb_p50_ms - base.ttfb_p50_ms, 3)
            if r.ttfb_p50_ms is not None and base.ttfb_p50_ms is not None
            else None,
            "rps_over_direct": round(r.rps / base.rps, 3) if base.rps else None,
            "cpu_ms_per_request": case.cpu_ms_per_request,
        }
        rows.append(row)
    return rows


def summaries(rows: list[dict[str, Any]], memory: dict[str, Memory]) -> dict[str, Any]:
    """Per system: peak RSS and the best throughput kept with under 1 % errors, per mode."""
    found: dict[str, Any] = {}
    for name in dict.fromkeys(r["system"] for r in rows):
        entry: dict[str, Any] = {}
        if name in memory:
            entry["idle_rss_mb"] = round(memory[name].idle_bytes / 2**20, 1)
            entry["peak_rss_mb"] = round(memory[name].peak_bytes / 2**20, 1)
        for mode in MODES:
            ok = [
                r
                for r in rows
                if r["system"] == name
                and r["mode"] == mode
                and "rps" in r
                and r["error_rate"] < MAX_ERROR_RATE
            ]
            cpu = sorted(r["cpu_ms_per_request"] for r in ok if r.get("cpu_ms_per_request"))
            if cpu:
                entry[f"cpu_ms_per_request_median_{mode}"] = cpu[len(cpu) // 2]
            if ok:
                best = max(ok, key=lambda r: r["rps"])
                entry[f"sustained_rps_{mode}"] = best["rps"]
                entry[f"sustained_at_concurrency_{mode}"] = best["concurrency"]
        found[name] = entry
    return found


def ratios(rows: list[dict[str, Any]], summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each Keel against LiteLLM and against the floor, case by case, from the same run."""
    by_key = {(r["system"], r["mode"], r["concurrency"]): r for r in rows if "rps" in r}
    found = []
    baselines = [s for s in summary if s.startswith("keel@")]
    for keel in KEELS:
        for other in ("litellm", "floor", *baselines):
            if keel not in summary or other not in summary:
                continue
            if other in baselines and keel != "keel":  # the baseline is set up as `keel`
                continue
            pair: dict[str, Any] = {"pair": f"{keel}/{other}", "cases": []}
            for (system, mode, concurrency), k in by_key.items():
                o = by_key.get((other, mode, concurrency))
                if system != keel or o is None:
                    continue
                pair["cases"].append(
                    {
                        "mode": mode,
                        "concurrency": concurrency,
                        "added_p50": _ratio(k["added_p50_ms"], o["added_p50_ms"]),
                        "added_p99": _ratio(k["added_p99_ms"], o["added_p99_ms"]),
                        "added_ttfb_p50": _ratio(k["added_ttfb_p50_ms"], o["added_ttfb_p50_ms"]),
                        "rps": _ratio(k["rps"], o["rps"]),
                        "cpu_per_request": _ratio(k["cpu_ms_per_request"], o["cpu_ms_per_request"]),
                    }
                )
            ks, os_ = summary[keel], summary[other]
            pair["peak_rss"] = _ratio(ks.get("peak_rss_mb"), os_.get("peak_rss_mb"))
            for mode in MODES:
                key = f"sustained_rps_{mode}"
                pair[key] = _ratio(ks.get(key), os_.get(key))
            found.append(pair)
    return found


# -- reporting -------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def markdown(
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    pairs: list[dict[str, Any]],
    skipped: dict[str, str],
) -> str:
    lines = [
        "| system | mode | c | req/s | p50 | p99 | added p50 | added p99 | TTFB p50 "
        "| added TTFB p50 | CPU ms/req | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        if "rps" not in r:
            lines.append(
                f"| {r['system']} | {r['mode']} | {r['concurrency']} | failed | | | | | | | |"
            )
            continue
        lines.append(
            f"| {r['system']} | {r['mode']} | {r['concurrency']} | {r['rps']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['added_p50_ms']:+.2f} "
            f"| {r['added_p99_ms']:+.2f} | {_fmt(r['ttfb_p50_ms'])} "
            f"| {_fmt(r['added_ttfb_p50_ms'], '+.2f')} | {_fmt(r['cpu_ms_per_request'])} "
            f"| {r['error_rate']:.1%} |"
        )
    lines += [
        "",
        "| system | idle RSS MB | peak RSS MB | sustained req/s, non-streaming "
        "| sustained req/s, streaming |",
        "|---|--:|--:|--:|--:|",
    ]
    for name, s in summary.items():
        if name == "direct":
            continue
        lines.append(
            f"| {name} | {_fmt(s.get('idle_rss_mb'), '.0f')} | {_fmt(s.get('peak_rss_mb'), '.0f')} "
            f"| {_fmt(s.get('sustained_rps_non-streaming'), '.0f')} "
            f"| {_fmt(s.get('sustained_rps_streaming'), '.0f')} |"
        )
    for name, why in skipped.items():
        lines.append(f"| {name} | {why} | | | |")
    lines += [
        "",
        "| pair | mode | c | added p50 | added p99 | added TTFB p50 | req/s | CPU/req |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for pair in pairs:
        for c in pair["cases"]:
            lines.append(
                f"| {pair['pair']} | {c['mode']} | {c['concurrency']} | {_fmt(c['added_p50'])} "
                f"| {_fmt(c['added_p99'])} | {_fmt(c['added_ttfb_p50'])} | {_fmt(c['rps'])} "
                f"| {_fmt(c['cpu_per_request'])} |"
            )
        lines.append(
            f"| {pair['pair']} | peak RSS {_fmt(pair['peak_rss'])}, sustained req/s "
            f"{_fmt(pair['sustained_rps_non-streaming'])} (non-streaming), "
            f"{_fmt(pair['sustained_rps_streaming'])} (streaming) | | | | | | |"
        )
    lines.append(
        "\nLatencies in ms; added = system minus direct-to-stub in the same case. Ratios are "
        "Keel's figure over the other system's: below 1 means Keel adds less latency, above "
        "1 more; for req/s above 1 means Keel serves more."
    )
    return "\n".join(lines) + "\n"


# -- entry point -----------------------------------------------------------------------------


def _parse_args() -> CompareSettings:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"Comma-separated, from {', '.join(SYSTEMS)}."
    )
    parser.add_argument("--concurrency", default="1,16,64", help="Comma-separated workers.")
    parser.add_argument("--modes", default=",".join(MODES), help="non-streaming, streaming.")
    parser.add_argument("--duration", type=float, default=10.0, help="Measured s per run.")
    parser.add_argument("--warmup", type=float, default=2.0, help="Unmeasured s per run.")
    parser.add_argument("--quick", action="store_true", help="3 s measured, 1 s warm-up.")
    parser.add_argument("--stub-delay-ms", type=float, default=0.0, help="Stub answer delay.")
    parser.add_argument(
        "--litellm-workers",
        type=int,
        default=1,
        help="LiteLLM worker processes; 1 matches one `keel serve` process.",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="REV",
        help="Also run Keel at this git revision, set up as `keel`, for before/after ratios.",
    )
    parser.add_argument("--json-out", type=Path, default=None, help="Also write the JSON here.")
    args = parser.parse_args()
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown system(s) {', '.join(sorted(unknown))}; known: {', '.join(SYSTEMS)}")
    concurrency, modes = parse_cases(parser, args.concurrency, args.modes)
    duration, warmup = (3.0, 1.0) if args.quick else (args.duration, args.warmup)
    options = Options(
        duration_s=duration,
        warmup_s=warmup,
        concurrency=concurrency,
        modes=modes,
        stub_delay_ms=args.stub_delay_ms,
        json_out=args.json_out,
    )
    return CompareSettings(systems, options, args.litellm_workers, args.baseline)


def bench(settings: CompareSettings) -> dict[str, Any]:
    options = settings.options
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="keel-compare-") as tmp, children(Path(tmp)) as running:
        _progress("starting stub ...")
        stub_url = start_stub(running, options.stub_delay_ms)
        systems, skipped = start_systems(settings, running, Path(tmp), stub_url)
        sampler = RssSampler({s.name: s.pid for s in systems})
        sampler.start()
        try:
            cases = run_cases(options, stub_url, systems)
        finally:
            sampler.stop()
    rows = added(cases)
    summary = summaries(rows, sampler.memory)
    pairs = ratios(rows, summary)
    _progress("\n" + markdown(rows, summary, pairs, skipped))
    run_settings = asdict(options) | {
        "json_out": str(options.json_out) if options.json_out else None,
        "litellm_workers": settings.litellm_workers,
        "baseline": settings.baseline,
        "litellm": spec_version(LITELLM_SPEC),
    }
    return {
        "machine": machine(),
        "settings": run_settings,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": round(time.time() - started, 1),
        "systems": {s.name: s.description for s in systems}
        | {name: why for name, why in skipped.items()},
        "skipped": skipped,
        "results": rows,
        "summary": summary,
        "ratios": pairs,
    }


def main() -> int:
    settings = _parse_args()
    result = run_main(lambda: bench(settings), settings.options.json_out)
    if result is None:
        return 1
    failed = [name for name, why in result["skipped"].items() if why.startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
