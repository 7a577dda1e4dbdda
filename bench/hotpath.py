"""Profile Keel's hot path under load with py-spy and rank where its CPU goes.

`python bench/hotpath.py` starts the stub and Keel (app key with in-process limits, a
route over two targets, tracing to SQLite), drives it with bench/load.py at concurrency
32 (non-streaming), samples Keel with `py-spy record` for `--seconds`, and prints JSON:
the top functions by self time in Keel's own code, the Keel function each sample is
charged to (the innermost Keel frame on the stack, so library work counts to its caller),
and the share of samples per package of the innermost frame. Needs py-spy in the venv
(`.venv/bin/pip install py-spy`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from load import API_KEY_ENV
from overhead import BENCH_DIR, BenchError, _child_kwargs, _progress, children, machine, start_stub
from systems import start_keel

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*)\)$")


def _package(path: str) -> str:
    """'…/site-packages/starlette/routing.py' → 'starlette'; '…/src/keel/x.py' → 'keel'."""
    if "/keel/" in path and "site-packages" not in path:
        return "keel"
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/lib/python" in path:
        return "stdlib:" + path.rsplit("/lib/python", 1)[1].split("/", 2)[1].removesuffix(".py")
    return path or "?"


def _keel_name(path: str, func: str) -> str:
    return f"{path.rsplit('/keel/', 1)[-1]}:{func}"


def rank(raw: str, top: int) -> dict[str, Any]:
    """Aggregate py-spy's collapsed stacks ('a (f.py);b (g.py) N' per line)."""
    total = 0
    self_keel: Counter[str] = Counter()
    charged: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [m.groupdict() for f in stack.split(";") if (m := _FRAME.match(f))]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        packages[_package(leaf["file"])] += count
        if _package(leaf["file"]) == "keel":
            self_keel[_keel_name(leaf["file"], leaf["func"])] += count
        for frame in reversed(frames):
            if _package(frame["file"]) == "keel":
                charged[_keel_name(frame["file"], frame["func"])] += count
                break
        else:
            charged["(no Keel frame: server, event loop, libraries)"] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"name": name, "samples": n, "share": round(n / total, 4)}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "self_in_keel": share(self_keel),
        "charged_to_keel_function": share(charged),
        "leaf_package": share(packages),
        "keel_self_share": round(sum(self_keel.values()) / total, 4) if total else 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="Seconds py-spy samples.")
    parser.add_argument("--concurrency", type=int, default=32, help="Load generator workers.")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second.")
    parser.add_argument("--top", type=int, default=25, help="Rows per ranking.")
    parser.add_argument("--raw-out", type=Path, default=None, help="Keep py-spy's raw stacks.")
    parser.add_argument("--stream", action="store_true", help="Profile streamed requests.")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        _progress("py-spy not found; install it with .venv/bin/pip install py-spy")
        return 1
    try:
        with (
            tempfile.TemporaryDirectory(prefix="keel-profile-") as tmp,
            children(Path(tmp)) as running,
        ):
            stub = start_stub(running, 0.0)
            keel = start_keel(running, Path(tmp), stub, "keel", tracing=True, limits=True)
            argv = [
                sys.executable,
                str(BENCH_DIR / "load.py"),
                "--url",
                f"{keel.url}/chat/completions",
                "--model",
                "stub",
                "--concurrency",
                str(args.concurrency),
                "--warmup",
                "3",
                "--duration",
                str(args.seconds + 4),
                *(["--stream"] if args.stream else []),
            ]
            env = os.environ | {API_KEY_ENV: keel.api_key or ""}
            load = subprocess.Popen(
                argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **_child_kwargs()
            )
            time.sleep(4)
            raw_path = Path(tmp) / "profile.txt"
            spy = [
                py_spy,
                "record",
                "--pid",
                str(keel.pid),
                "--duration",
                str(int(args.seconds)),
                "--rate",
                str(args.rate),
                "--format",
                "raw",
                "--nolineno",
                "--full-filenames",
                "--gil",
                "--output",
                str(raw_path),
            ]
            done = subprocess.run(spy, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise BenchError(f"py-spy failed: {done.stderr[-1500:]}")
            out, _err = load.communicate(timeout=args.seconds + 60)
            raw = raw_path.read_text()
            if args.raw_out:
                args.raw_out.write_text(raw)
    except BenchError as exc:
        _progress(f"profile failed: {exc}")
        return 1
    load_result = json.loads(out) if out else None
    result = {
        "machine": machine(),
        "system": keel.description,
        "concurrency": args.concurrency,
        "stream": args.stream,
        "load": load_result,
        **rank(raw, args.top),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
