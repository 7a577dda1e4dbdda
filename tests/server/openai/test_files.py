"""/v1/files and bad batch input: each refusal is a 4xx naming the line and the fix, and a
refused upload or batch leaves nothing behind."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from keel.server.openai import files as files_module

Gateway = tuple[httpx.AsyncClient, str]


def line(i: int, **override: Any) -> dict[str, Any]:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": f"hi {i}"}]}
    return {
        "custom_id": f"r{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body,
        **override,
    }


def jsonl(*lines: Any) -> bytes:
    return b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)


async def upload(gateway: Gateway, content: bytes, purpose: str = "batch") -> httpx.Response:
    client, key = gateway
    return await client.post(
        "/v1/files",
        files={"file": ("in.jsonl", content)},
        data={"purpose": purpose},
        headers={"Authorization": f"Bearer {key}"},
    )


async def get(gateway: Gateway, path: str) -> httpx.Response:
    client, key = gateway
    return await client.get(path, headers={"Authorization": f"Bearer {key}"})


async def create_batch(gateway: Gateway, file_id: str, **body: Any) -> httpx.Response:
    client, key = gateway
    return await client.post(
        "/v1/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            **body,
        },
        headers={"Authorization": f"Bearer {key}"},
    )


def message(response: httpx.Response) -> str:
    return str(response.json()["error"]["message"])


async def test_a_file_uploads_lists_reads_back_and_deletes(gateway: Gateway) -> None:
    content = jsonl(line(0), line(1))
    created = await upload(gateway, content)
    assert created.status_code == 200
    file = created.json()
    assert (file["object"], file["purpose"], file["bytes"]) == ("file", "batch", len(content))
    listed = (await get(gateway, "/v1/files")).json()
    assert [f["id"] for f in listed["data"]] == [file["id"]]
    assert (await get(gateway, f"/v1/files/{file['id']}/content")).content == content
    client, key = gateway
    gone = await client.delete(
        f"/v1/files/{file['id']}", headers={"Authorization": f"Bearer {key}"}
    )
    assert gone.json() == {"id": file["id"], "object": "file", "deleted": True}
    assert (await get(gateway, f"/v1/files/{file['id']}")).status_code == 404


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (jsonl(line(0), b"{not json"), "line 2: not valid JSON"),
        (jsonl(line(0), [1, 2]), "line 2: a JSON list, not an object"),
        (jsonl(line(0), line(1, custom_id="r0")), "line 2: custom_id 'r0' is also on line 1"),
        (jsonl(line(0, url="/v1/images")), "line 1: url '/v1/images' is not a batch endpoint"),
        (jsonl(line(0, body={"messages": []})), "line 1: body.model is missing"),
        (jsonl(line(0, body={"model": "fake-model"})), "line 1: 'messages' is required"),
        (jsonl(line(0, body={**line(0)["body"], "stream": True})), "line 1: stream: true"),
        (b"", "the file has no requests"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
async def test_a_bad_line_is_refused_with_its_number_and_nothing_is_stored(
    gateway: Gateway, content: bytes, expected: str
) -> None:
    refused = await upload(gateway, content)
    assert refused.status_code == 400
    assert expected in message(refused)
    assert (await get(gateway, "/v1/files")).json()["data"] == []


async def test_a_line_over_the_size_limit_is_named(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "MAX_LINE_BYTES", 300)
    long = line(
        1, body={"model": "fake-model", "messages": [{"role": "user", "content": "x" * 400}]}
    )
    refused = await upload(gateway, jsonl(line(0), long))
    assert refused.status_code == 400
    assert "line 2:" in message(refused)
    assert "over the limit of 300 per line" in message(refused)


async def test_a_file_over_the_body_limit_is_413(gateway: Gateway) -> None:
    refused = await upload(gateway, jsonl(*(line(i) for i in range(2000))))  # over 64 KiB
    assert refused.status_code == 413


async def test_a_purpose_keel_does_not_take_is_refused(gateway: Gateway) -> None:
    refused = await upload(gateway, jsonl(line(0)), purpose="assistants")
    assert refused.status_code == 400
    assert "upload batch input with purpose=batch" in message(refused)


async def test_batch_lines_uploaded_as_training_data_name_the_line(gateway: Gateway) -> None:
    refused = await upload(gateway, jsonl(line(0)), purpose="fine-tune")
    assert refused.status_code == 400
    assert message(refused).startswith("line 1: no 'messages' list")


async def test_an_unknown_model_names_its_line_and_no_batch_is_created(gateway: Gateway) -> None:
    file = (
        await upload(
            gateway,
            jsonl(
                line(0),
                line(1, body={"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]}),
            ),
        )
    ).json()
    refused = await create_batch(gateway, file["id"])
    assert refused.status_code == 404
    assert "line 2: unknown model 'gpt-5'" in message(refused)
    assert "fake-model" in message(refused)  # the known ones, to pick from
    assert (await get(gateway, "/v1/batches")).json()["data"] == []


async def test_a_batch_of_a_file_that_is_not_batch_input_is_refused(gateway: Gateway) -> None:
    refused = await create_batch(gateway, "file_nope")
    assert refused.status_code == 404
    assert "upload it with POST /v1/files" in message(refused)
    file = (await upload(gateway, jsonl(line(0)))).json()
    wrong_endpoint = await create_batch(gateway, file["id"], endpoint="/v1/embeddings")
    assert wrong_endpoint.status_code == 400
    assert "line 1: url /v1/chat/completions differs" in message(wrong_endpoint)
    window = await create_batch(gateway, file["id"], completion_window="1h")
    assert window.status_code == 400
    assert "use 24h" in message(window)
    assert (await get(gateway, "/v1/batches")).json()["data"] == []


async def test_an_output_file_cannot_be_the_input_of_a_batch(gateway: Gateway) -> None:
    client, _ = gateway
    services = client._transport.app.state.services  # type: ignore[attr-defined]
    system = files_module.job_system(services)
    output = system.files.create("default", "k", "batch_output", "out.jsonl", b"{}\n", 1)
    refused = await create_batch(gateway, output.id)
    assert refused.status_code == 400
    assert "has purpose 'batch_output'" in message(refused)
    assert "purpose=batch" in message(refused)
