"""Slow clients against a real `keel serve` on 127.0.0.1: uploads that stall and headers
that never end are cut off at their deadlines, and the server goes on answering.

The deadlines are set to 1 s here; the test waits for every connection to be closed (with
a wide margin for a loaded machine) and asserts that they were, not how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import httpx
import pytest

from tests.support.keel_process import KeelProcess, start_keel

DEADLINE_S = 1
WAIT_S = 30  # how long the test waits for a closure before calling it a failure
UPLOADS = 90  # connections per kind below are a third of this
STALLED_HEADERS = 30


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    data_dir = tmp_path_factory.mktemp("slow-clients") / "data"
    timeouts = {"KEEL_REQUEST_BODY_TIMEOUT": str(DEADLINE_S),
                "KEEL_REQUEST_HEADER_TIMEOUT": str(DEADLINE_S)}  # fmt: skip
    process = start_keel(data_dir, "--no-local-model", "--no-embeddings", env=timeouts)
    try:
        yield process
    finally:
        process.stop()


async def healthz(keel: KeelProcess) -> int:
    async with httpx.AsyncClient(base_url=keel.base_url, timeout=10) as client:
        return (await client.get("/healthz")).status_code


def port_of(keel: KeelProcess) -> int:
    return int(keel.base_url.rsplit(":", 1)[1])


async def stall(port: int, head: bytes) -> bytes:
    """Send `head` and then nothing; return all the server sent until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(WAIT_S):
            return await reader.read()  # up to EOF: the server closed the connection
    except ConnectionResetError:
        return b"(reset)"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def upload(path: str, key: str, chunked: bool = False) -> bytes:
    """Headers of a JSON upload and the first few bytes of its body, the rest never sent."""
    framing = b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: 1000\r\n"
    body = b'a\r\n{"model": \r\n' if chunked else b'{"model": '
    return (
        f"{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + framing
        + b"\r\n"
        + body
    )


async def test_stalled_uploads_get_408_and_are_closed(keel: KeelProcess) -> None:
    port, key = port_of(keel), keel.api_key
    heads = [
        upload("POST /v1/chat/completions", key),  # a hot route, outside FastAPI's routing
        upload("PUT /api/routes/slow", key),  # an admin route, through FastAPI
        upload("POST /v1/chat/completions", key, chunked=True),  # read by the middleware
    ]
    answers = await asyncio.gather(*(stall(port, heads[n % 3]) for n in range(UPLOADS)))
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:60] for a in answers}
    assert all(b"request_body_timeout" in a for a in answers)
    assert all(b"connection: close" in a.lower() for a in answers)
    assert await healthz(keel) == 200


async def test_connections_that_never_finish_their_headers_are_closed(keel: KeelProcess) -> None:
    port = port_of(keel)
    partial = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    answers = await asyncio.gather(
        *(stall(port, partial if n % 2 else b"") for n in range(STALLED_HEADERS))
    )
    # Closed without an answer: nothing was asked yet. (A failure here is a TimeoutError.)
    assert set(answers) <= {b"", b"(reset)"}
    assert await healthz(keel) == 200
