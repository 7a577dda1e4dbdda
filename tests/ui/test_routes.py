"""The console's routes page shows each target's health: what an operator looks at first."""

from __future__ import annotations

import re

from keel.routing.table import Target
from tests.ui.conftest import Console, login


async def test_a_failing_target_is_shown_unhealthy_with_its_last_error(console: Console) -> None:
    breaker = console.services.router.breaker(Target("chat@1", object(), "m"))  # type: ignore[arg-type]
    for _ in range(5):  # breaker_failures: the 5th failure opens it
        breaker.record_failure("502: connection refused by 10.0.0.7")
    async with console.client() as client:
        await login(client, console.keys["viewer"])
        page = (await client.get("/ui/routes")).text
    cell = re.search(r'data-health="chat@1">(.*?)</td>', page, re.S)
    assert cell is not None
    assert cell.group(1).startswith("unhealthy (breaker open, 5 failures/min)")
    assert "last error: 502: connection refused by 10.0.0.7" in cell.group(1)


async def test_a_target_never_called_is_healthy(console: Console) -> None:
    async with console.client() as client:
        await login(client, console.keys["viewer"])
        page = (await client.get("/ui/routes")).text
    assert re.search(r'data-health="chat@1">healthy \(breaker closed\)', page)
