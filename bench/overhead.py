"""Measure what Keel adds over calling its upstream directly, with stub, Keel and load apart.

`python bench/overhead.py` prints JSON on stdout and a Markdown table on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from load import API_KEY_ENV, LoadResult

BENCH_DIR = Path(__file__).resolve().parent
GOAL_ADDED_P50_MS = 2.0
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 5.0
_PR_SET_PDEATHSIG = 1

Target = Literal["direct", "keel", "keel-untraced", "keel-limits", "keel-limits-redis"]
# Limits high enough never to refuse: what is measured is the cost of checking them.
BENCH_LIMITS = {"rpm": 2**31, "tpm": 2**31, "concurrency": 2**20,
                "budget": {"amount": 1e12, "period": "month"}}  # fmt: skip
Tracing = Literal["on", "off", "both"]
Mode = Literal["non-streaming", "streaming"]
MODES: tuple[Mode, ...] = ("non-streaming", "streaming")


class BenchError(RuntimeError):
    """The benchmark could not run; the message says which step failed and why."""


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float
    warmup_s: float
    concurrency: tuple[int, ...]
    modes: tuple[Mode, ...]
    stub_delay_ms: float
    json_out: Path | None
    tracing: Tracing = "on"
    limits: str = "off"


@dataclass(frozen=True, slots=True)
class Row:
    """One measurement: a target, a mode and a concurrency."""

    target: Target
    mode: Mode
    concurrency: int
    result: LoadResult
    cpu_ms_per_request: float | None = None  # Keel's process CPU time, all threads

    def as_json(self) -> dict[str, Any]:
        measured = asdict(self.result)
        for key in ("url", "concurrency", "stream"):
            measured.pop(key)
        head = {"target": self.target, "mode": self.mode, "concurrency": self.concurrency}
        return head | measured | {"cpu_ms_per_request": self.cpu_ms_per_request}


@dataclass(frozen=True, slots=True)
class Overhead:
    """Keel against direct for one mode and concurrency, from the same run."""

    mode: Mode
    concurrency: int
    added_p50_ms: float
    added_p99_ms: float
    added_ttfb_p50_ms: float | None
    throughput_ratio: float

    @classmethod
    def between(cls, direct: Row, keel: Row) -> Overhead:
        d, k = direct.result, keel.result
        ttfb = None
        if d.ttfb_p50_ms is not None and k.ttfb_p50_ms is not None:
            ttfb = round(k.ttfb_p50_ms - d.ttfb_p50_ms, 3)
        return cls(
            mode=direct.mode,
            concurrency=direct.concurrency,
            added_p50_ms=round(k.p50_ms - d.p50_ms, 3),
            added_p99_ms=round(k.p99_ms - d.p99_ms, 3),
            added_ttfb_p50_ms=ttfb,
            throughput_ratio=round(k.rps / d.rps, 3) if d.rps else 0.0,
        )


# -- child processes ---------------------------------------------------------------------


def _die_with_parent() -> None:
    # Runs in the child before exec: the kernel stops it even if this script is SIGKILLed.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_kwargs() -> dict[str, Any]:
    # A session of its own keeps Ctrl-C away from the children; we stop them in order instead.
    preexec = _die_with_parent if sys.platform == "linux" else None
    return {"start_new_session": True, "preexec_fn": preexec}


class Children:
    """The processes this run started; all are stopped (TERM, then KILL) on exit."""

    def __init__(self, log_dir: Path):
        self._log_dir = log_dir
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self.cleanups: list[Callable[[], None]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with (self._log_dir / f"{name}.log").open("wb") as log:
            self._running[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, **_child_kwargs()
            )

    def pid(self, name: str) -> int:
        return self._running[name].pid

    def check_alive(self, name: str) -> None:
        code = self._running[name].poll()
        if code is not None:
            tail = _tail(self._log_dir / f"{name}.log")
            raise BenchError(
                f"{name} exited with code {code} while starting; its log ends:\n{tail}"
            )

    def stop_all(self) -> None:
        for process in self._running.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for process in self._running.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        self._running.clear()
        for cleanup in self.cleanups:
            cleanup()
        self.cleanups.clear()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The child leads its own process group, so this reaches anything it spawned too.
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


@contextmanager
def children(log_dir: Path) -> Iterator[Children]:
    running = Children(log_dir)
    try:
        yield running
    finally:
        running.stop_all()


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    # SIGTERM takes the same way out as Ctrl-C, through every cleanup block.
    raise KeyboardInterrupt


# -- starting stub and Keel --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _http_ok(url: str) -> bool:
    # No proxy: an http_proxy in the environment must not capture loopback probes.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_ready(running: Children, name: str, url: str, also: Path | None = None) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        running.check_alive(name)
        if _http_ok(url) and (also is None or also.exists()):
            return
        time.sleep(0.1)
    raise BenchError(f"{name} was not ready at {url} after {_START_TIMEOUT_S:.0f}s")


def start_stub(running: Children, delay_ms: float) -> str:
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "stub.py"), "--port", str(port)]
    running.start("stub", [*argv, "--delay-ms", str(delay_ms)])
    base_url = f"http://127.0.0.1:{port}/v1"
    wait_until_ready(running, "stub", f"{base_url}/models")
    return base_url


def _keel_executable() -> Path:
    keel = Path(sys.executable).with_name("keel")
    if not keel.exists():
        raise BenchError(
            f"no 'keel' next to {sys.executable}; run this with the project venv "
            "(.venv/bin/python bench/overhead.py)"
        )
    return keel


def start_keel(
    running: Children,
    data_dir: Path,
    stub_url: str,
    *,
    tracing: bool = True,
    name: str | None = None,
    extra_config: str = "",
) -> tuple[str, str]:
    """Start Keel in front of the stub; return its base URL and the admin key."""
    name = name or ("keel" if tracing else "keel-untraced")
    data_dir = data_dir / name
    data_dir.mkdir()
    config = data_dir / "keel.yaml"
    config.write_text(
        f"upstreams:\n  - name: stub\n    base_url: {stub_url}\n    models: [stub]\n"
        f"tracing: {'true' if tracing else 'false'}\n{extra_config}"
    )
    port = free_port()
    argv = [str(_keel_executable()), "serve", "--no-local-model", "--no-embeddings"]
    argv += ["--port", str(port), "--data-dir", str(data_dir), "--config", str(config)]
    argv += ["--log-level", "warning"]
    # Only the flags and keel.yaml above may configure this Keel, not the caller's KEEL_*.
    env = {key: value for key, value in os.environ.items() if not key.startswith("KEEL_")}
    running.start(name, argv, env)
    key_file = data_dir / "admin.key"
    wait_until_ready(running, name, f"http://127.0.0.1:{port}/healthz", also=key_file)
    return f"http://127.0.0.1:{port}/v1", key_file.read_text().strip()


def _drop_redis_prefix(prefix: str) -> None:
    import redis  # only when the Redis variant ran

    client = redis.Redis(host="127.0.0.1", port=6379)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def limited_key(base_url: str, admin_key: str) -> str:
    """An app key with rate limits and a budget, so every request is admitted and settled."""
    body = json.dumps({"name": "bench", "role": "app", "limits": BENCH_LIMITS}).encode()
    request = urllib.request.Request(
        base_url.removesuffix("/v1") + "/api/keys",
        data=body,
        headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        key: str = json.loads(response.read())["key"]
        return key


# -- measuring ---------------------------------------------------------------------------


def measure(
    url: str, concurrency: int, mode: Mode, options: Options, api_key: str | None
) -> LoadResult:
    argv = [sys.executable, str(BENCH_DIR / "load.py"), "--url", f"{url}/chat/completions"]
    argv += ["--concurrency", str(concurrency), "--duration", str(options.duration_s)]
    argv += ["--warmup", str(options.warmup_s)]
    if mode == "streaming":
        argv.append("--stream")
    env = {key: value for key, value in os.environ.items() if key != API_KEY_ENV}
    if api_key:
        env[API_KEY_ENV] = api_key
    limit = options.warmup_s + options.duration_s + 60
    # subprocess.run kills the load generator if this process is interrupted.
    done = subprocess.run(
        argv, env=env, capture_output=True, timeout=limit, check=False, **_child_kwargs()
    )
    if done.returncode != 0:
        raise BenchError(
            f"load generator failed (exit {done.returncode}) against {url}:\n"
            f"{done.stderr.decode(errors='replace')[-2000:]}"
        )
    return LoadResult.from_json(done.stdout)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_all(
    options: Options,
    direct_url: str,
    keels: list[tuple[Target, str, str]],
    pids: dict[str, int] | None = None,
) -> list[Row]:
    targets: list[tuple[Target, str, str | None]] = [("direct", direct_url, None), *keels]
    pids = pids or {}
    rows: list[Row] = []
    # Direct and Keel back to back for each case, so both see the same machine state.
    for concurrency in options.concurrency:
        for mode in options.modes:
            for target, url, key in targets:
                pid = pids.get(target)
                before = cpu_seconds(pid) if pid else 0.0
                result = measure(url, concurrency, mode, options, key)
                cpu = None
                if pid and result.requests:
                    # The load ran warm-up + duration; `requests` counts the measured part.
                    served = result.requests * (options.warmup_s + options.duration_s)
                    served /= options.duration_s
                    cpu = round((cpu_seconds(pid) - before) * 1000 / served, 4)
                rows.append(Row(target, mode, concurrency, result, cpu))
                _progress(
                    f"{target:13} {mode:13} c={concurrency:<3} {result.rps:8.1f} req/s  "
                    f"p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms  "
                    f"errors {result.errors}"
                )
                if result.error_sample:
                    _progress(f"  first error: {result.error_sample}")
    return rows


def overheads(rows: list[Row], target: Target = "keel") -> list[Overhead]:
    direct = {(r.mode, r.concurrency): r for r in rows if r.target == "direct"}
    return [
        Overhead.between(direct[(r.mode, r.concurrency)], r) for r in rows if r.target == target
    ]


def tracing_cost(rows: list[Row]) -> list[dict[str, Any]]:
    """What tracing adds to Keel's own overhead: Keel traced against Keel untraced."""
    traced = {(o.mode, o.concurrency): o for o in overheads(rows, "keel")}
    cpu = {(r.target, r.mode, r.concurrency): r.cpu_ms_per_request for r in rows}
    found = []
    for off in overheads(rows, "keel-untraced"):
        on = traced.get((off.mode, off.concurrency))
        if on is None:
            continue
        found.append({
            "mode": off.mode, "concurrency": off.concurrency,
            "added_p50_ms_untraced": off.added_p50_ms, "added_p50_ms_traced": on.added_p50_ms,
            "tracing_p50_ms": round(on.added_p50_ms - off.added_p50_ms, 3),
            "tracing_share_of_overhead": round(
                (on.added_p50_ms - off.added_p50_ms) / off.added_p50_ms, 3
            ) if off.added_p50_ms > 0 else None,
            "cpu_ms_per_request_untraced": cpu.get(("keel-untraced", off.mode, off.concurrency)),
            "cpu_ms_per_request_traced": cpu.get(("keel", off.mode, off.concurrency)),
            "throughput_traced_over_untraced": round(
                on.throughput_ratio / off.throughput_ratio, 3
            ) if off.throughput_ratio else None,
        })  # fmt: skip
    return found


# -- reporting ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "revision": revision(),
    }


def revision() -> str | None:
    """The measured checkout as `git describe` names it ('-dirty' with local changes)."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def goal(found: list[Overhead]) -> dict[str, Any]:
    at_c1 = [o for o in found if o.mode == "non-streaming" and o.concurrency == 1]
    added = at_c1[0].added_p50_ms if at_c1 else None
    return {
        "added_p50_ms_at_c1_below": GOAL_ADDED_P50_MS,
        "measured_added_p50_ms": added,
        "met": added is not None and added < GOAL_ADDED_P50_MS,
    }


def report(options: Options, rows: list[Row], found: list[Overhead]) -> dict[str, Any]:
    settings = asdict(options)
    settings["json_out"] = str(options.json_out) if options.json_out else None
    return {
        "machine": machine(),
        "settings": settings,
        "results": [row.as_json() for row in rows],
        "overhead": [asdict(o) for o in found],
        "goal": goal(found),
        "tracing": tracing_cost(rows),
        "limits": {
            variant: [asdict(o) for o in overheads(rows, variant)]
            for variant in ("keel-limits", "keel-limits-redis")
            if any(r.target == variant for r in rows)
        },
    }


def markdown(rows: list[Row], found: list[Overhead], target: Target = "keel") -> str:
    keel = {(r.mode, r.concurrency): r.result for r in rows if r.target == target}
    direct = {(r.mode, r.concurrency): r.result for r in rows if r.target == "direct"}
    lines = [
        "| mode | c | direct req/s | Keel req/s | ratio | direct p50 | Keel p50 | added p50 "
        "| direct p99 | Keel p99 | added p99 | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for o in found:
        d, k = direct[(o.mode, o.concurrency)], keel[(o.mode, o.concurrency)]
        lines.append(
            f"| {o.mode} | {o.concurrency} | {d.rps:.0f} | {k.rps:.0f} | {o.throughput_ratio:.2f} "
            f"| {d.p50_ms:.2f} | {k.p50_ms:.2f} | {o.added_p50_ms:+.2f} "
            f"| {d.p99_ms:.2f} | {k.p99_ms:.2f} | {o.added_p99_ms:+.2f} "
            f"| {d.errors + k.errors} |"
        )
    return "\n".join(lines) + "\n\nLatencies in ms. ratio = Keel req/s / direct req/s.\n"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- entry point -------------------------------------------------------------------------


def _parse_args() -> Options:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="Measured seconds per run.")
    parser.add_argument("--warmup", type=float, default=1.0, help="Unmeasured seconds per run.")
    parser.add_argument("--concurrency", default="1,32", help="Comma-separated worker counts.")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="non-streaming, streaming, or both."
    )
    parser.add_argument("--stub-delay-ms", type=float, default=0.0, help="Stub answer delay.")
    parser.add_argument("--json-out", type=Path, default=None, help="Also write the JSON here.")
    parser.add_argument(
        "--limits",
        choices=["off", "memory", "redis", "all"],
        default="off",
        help="Also measure Keel with a key that has rate limits and a budget: in-process, "
        "with the Redis backend (127.0.0.1:6379), or both.",
    )
    parser.add_argument(
        "--tracing",
        choices=["on", "off", "both"],
        default="on",
        help="Keel with tracing on (default), off, or both back to back.",
    )
    args = parser.parse_args()
    concurrency, modes = parse_cases(parser, args.concurrency, args.modes)
    return Options(
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=concurrency,
        modes=modes,
        stub_delay_ms=args.stub_delay_ms,
        json_out=args.json_out,
        tracing=args.tracing,
        limits=args.limits,
    )


def bench(options: Options) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp, children(Path(tmp)) as running:
        _progress("starting stub and Keel ...")
        stub_url = start_stub(running, options.stub_delay_ms)
        keels: list[tuple[Target, str, str]] = []
        if options.tracing in ("on", "both"):
            keels.append(("keel", *start_keel(running, Path(tmp), stub_url)))
        if options.tracing in ("off", "both"):
            url, key = start_keel(running, Path(tmp), stub_url, tracing=False)
            keels.append(("keel-untraced", url, key))
        if options.limits in ("memory", "all"):
            url, admin = start_keel(running, Path(tmp), stub_url, name="keel-limits")
            keels.append(("keel-limits", url, limited_key(url, admin)))
        if options.limits in ("redis", "all"):
            prefix = f"keel-bench-{os.getpid()}:"
            redis = f"redis_url: redis://127.0.0.1:6379/0\nredis_prefix: '{prefix}'\n"
            url, admin = start_keel(running, Path(tmp), stub_url, name="keel-limits-redis",
                                    extra_config=redis)  # fmt: skip
            keels.append(("keel-limits-redis", url, limited_key(url, admin)))
            running.cleanups.append(lambda: _drop_redis_prefix(prefix))
        pids = {name: running.pid(name) for name, _, _ in keels}
        rows = run_all(options, stub_url, keels, pids)
    primary: Target = "keel-untraced" if options.tracing == "off" else "keel"
    found = overheads(rows, primary)
    _progress("\n" + markdown(rows, found, primary))
    if options.tracing == "both":
        _progress("untraced Keel:\n" + markdown(rows, overheads(rows, "keel-untraced"),
                                                 "keel-untraced"))  # fmt: skip
        for cost in tracing_cost(rows):
            _progress(
                f"tracing, {cost['mode']} c={cost['concurrency']}: added p50 "
                f"{cost['added_p50_ms_untraced']:.3f} -> {cost['added_p50_ms_traced']:.3f} ms "
                f"({cost['tracing_share_of_overhead']:+.1%} of Keel's overhead), throughput "
                f"x{cost['throughput_traced_over_untraced']}, Keel CPU per request "
                f"{cost['cpu_ms_per_request_untraced']} -> {cost['cpu_ms_per_request_traced']} ms"
            )
    for variant in ("keel-limits", "keel-limits-redis"):
        if any(r.target == variant for r in rows):
            _progress(f"{variant}:\n" + markdown(rows, overheads(rows, variant), variant))  # type: ignore[arg-type]
    return report(options, rows, found)


def parse_cases(
    parser: argparse.ArgumentParser, concurrency_text: str, modes_text: str
) -> tuple[tuple[int, ...], tuple[Mode, ...]]:
    """--concurrency and --modes as every bench takes them; a parser error when malformed."""
    try:
        concurrency = tuple(int(c) for c in concurrency_text.split(","))
    except ValueError:
        parser.error(f"--concurrency takes numbers like 1,32 (got {concurrency_text!r})")
    requested = {m.strip() for m in modes_text.split(",")}
    modes = tuple(m for m in MODES if m in requested)
    if requested - set(modes) or min(concurrency) < 1:
        parser.error(f"--modes takes {', '.join(MODES)}; --concurrency takes numbers >= 1")
    return concurrency, modes


def run_main(
    run: Callable[[], dict[str, Any]], json_out: Path | None, what: str = "benchmark"
) -> dict[str, Any] | None:
    """Run a bench with SIGTERM handled; print its JSON (and write it to json_out).

    None when it failed (the reason is on stderr); Ctrl-C exits with 130.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run()
    except BenchError as exc:
        _progress(f"{what} failed: {exc}")
        return None
    except KeyboardInterrupt:
        _progress("interrupted; child processes stopped")
        raise SystemExit(130) from None
    text = json.dumps(result, indent=2)
    if json_out:
        json_out.write_text(text + "\n")
    print(text)
    return result


def main() -> int:
    options = _parse_args()
    return 0 if run_main(lambda: bench(options), options.json_out) is not None else 1


if __name__ == "__main__":
    sys.exit(main())
