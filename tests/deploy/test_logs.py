"""A model server's log is rotated at each start, never overwritten."""

from __future__ import annotations

from pathlib import Path

from keel.deploy.logs import rotate, tail


def test_each_start_keeps_the_earlier_logs_newest_first(tmp_path: Path) -> None:
    log = tmp_path / "llama-smollm2-1-0.log"
    for run in range(1, 5):
        rotate(log, keep=2)
        log.write_text(f"run {run}\n")
    assert log.read_text() == "run 4\n"
    assert (tmp_path / "llama-smollm2-1-0.log.1").read_text() == "run 3\n"
    assert (tmp_path / "llama-smollm2-1-0.log.2").read_text() == "run 2\n"
    assert not (tmp_path / "llama-smollm2-1-0.log.3").exists()


def test_an_empty_or_missing_log_is_not_rotated(tmp_path: Path) -> None:
    log = tmp_path / "llama.log"
    rotate(log, keep=3)
    log.touch()
    rotate(log, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama.log"]


def test_tail_gives_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "llama.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(log, lines=3) == ("line 97", "line 98", "line 99")
    assert tail(tmp_path / "missing.log") == ()
