"""The Ray executor's settings: off unless KEEL_RAY_ADDRESS is set, its actors call back this
Keel by default, and an address nothing answers at fails at once with the fix."""

from __future__ import annotations

import pytest

from keel.jobs.ray_executor import RayUnreachable, check_reachable
from keel.jobs.system import ray_options
from keel.settings import Settings


def test_jobs_run_in_process_unless_a_ray_address_is_set() -> None:
    assert ray_options(Settings()) is None
    options = ray_options(Settings(ray_address="auto", host="0.0.0.0", port=8123))
    assert options is not None
    assert options.callback_url == "http://127.0.0.1:8123"  # this Keel, reached locally
    behind = ray_options(Settings(ray_address="auto", ray_callback_url="http://lb:8000"))
    assert behind is not None
    assert behind.callback_url == "http://lb:8000"


def test_an_address_nothing_answers_at_fails_at_once_naming_the_fix() -> None:
    with pytest.raises(RayUnreachable) as refused:
        check_reachable("127.0.0.1:1")
    message = str(refused.value)
    assert "KEEL_RAY_ADDRESS=127.0.0.1:1" in message
    assert "ray start --head" in message
