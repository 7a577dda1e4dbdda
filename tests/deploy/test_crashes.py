"""How long the supervisor waits before a restart, and when a server counts as crashlooping."""

from __future__ import annotations

import signal

from keel.deploy.crashes import Crash, CrashHistory, RestartPolicy, describe_exit

POLICY = RestartPolicy(backoff=0.5, backoff_max=10.0, crashloop_crashes=5, crashloop_window=60)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def crash(code: int = -signal.SIGSEGV) -> Crash:
    return Crash(describe_exit(code), "serving", code, "llama.log", ("last line",))


def test_restarts_back_off_exponentially_then_retry_at_the_cap_forever() -> None:
    clock = Clock()
    history = CrashHistory(POLICY, clock)
    delays = []
    for _ in range(8):
        delays.append(history.record(crash()))
        clock.now += 1
    assert delays == [0.5, 1.0, 2.0, 4.0, 10.0, 10.0, 10.0, 10.0]
    assert history.crashlooping
    assert history.total == 8


def test_crashlooping_lasts_until_a_start_passes_its_self_test() -> None:
    clock = Clock()
    history = CrashHistory(POLICY, clock)
    for _ in range(5):
        history.record(crash())
    clock.now += 3600  # slow failures at the cap thin the window; still crashlooping
    assert history.record(crash()) == 10.0
    assert history.crashlooping
    history.recovered()
    assert not history.crashlooping
    clock.now += 3600  # a crash long after the last ones starts the backoff over
    assert history.record(crash()) == 0.5
    assert not history.crashlooping


def test_the_cause_names_the_signal_or_the_exit_code() -> None:
    segv = crash(-signal.SIGSEGV)
    assert segv.cause == "killed by SIGSEGV (exit code -11)"
    assert segv.signal == "SIGSEGV"
    assert segv.as_dict()["log_tail"] == ["last line"]
    assert describe_exit(1) == "exited with code 1"
    assert crash(1).signal is None
