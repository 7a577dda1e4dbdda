"""`keel kb create|list|ingest|search|delete`: knowledge bases on a running Keel.

`ingest` walks files and folders, skips files whose content the base already holds (by
SHA-256, before uploading), stages the rest (each checked by the server as it arrives),
then starts one ingestion job on the server and follows it with a progress bar; stopped
half-way, the same command picks up where it left off.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from keel.cli.client import (
    ConfigOption,
    KeyOption,
    UrlOption,
    connection_hint,
    describe_http_error,
    fail,
    resolve_target_and_source,
)

app = typer.Typer(
    help="Knowledge bases: create, list, ingest documents, search, delete.",
    no_args_is_help=True,
)
out = Console(highlight=False, soft_wrap=True)

EXTENSIONS = {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".jsonl",
              ".csv"}  # fmt: skip
KbOption = Annotated[str, typer.Option("--kb", help="Knowledge base name.")]


class _Client:
    def __init__(self, url: str | None, key: str | None, config: Path | None):
        self.base, token, self.key_source = resolve_target_and_source(url, key, config)
        self.http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=600)

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        root: str = "/api/kbs",
    ) -> Any:
        response = self.send(method, path, json_body=json_body, content=content, params=params,
                             root=root)  # fmt: skip
        if response.status_code >= 400:
            raise fail(escape(describe_http_error(response, self.key_source)))
        return response.json() if response.content else None

    def send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        root: str = "/api/kbs",
    ) -> httpx.Response:
        try:
            return self.http.request(
                method,
                f"{self.base}{root}{path}",
                json=json_body,
                content=content,
                params={k: v for k, v in (params or {}).items() if v is not None} or None,
                headers={"Content-Type": "application/octet-stream"}
                if content is not None
                else None,
            )
        except httpx.HTTPError as exc:
            raise fail(connection_hint(self.base, exc)) from exc


def _kb(name: str) -> str:
    return "/" + quote(name, safe="")


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Knowledge base name, e.g. handbook.")],
    description: Annotated[str, typer.Option(help="What the base holds.")] = "",
    chunk_tokens: Annotated[
        int | None, typer.Option(help="Chunk size in model tokens (default 200).")
    ] = None,
    overlap_tokens: Annotated[
        int | None, typer.Option(help="Tokens shared at each cut (default 40).")
    ] = None,
    fusion: Annotated[
        str | None,
        typer.Option(help="How the vector and BM25 lists merge: convex (default) or rrf."),
    ] = None,
    dense_weight: Annotated[
        float | None, typer.Option(help="Convex fusion: the vector list's share (default 0.5).")
    ] = None,
    document_weight: Annotated[
        float | None,
        typer.Option(help="A chunk's score's share from its document's best chunks (default 0)."),
    ] = None,
    feedback: Annotated[
        int | None,
        typer.Option(help="Pseudo-relevance feedback: chunks the query moves toward (default 0)."),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a knowledge base in your project. Options left out take the server's defaults;
    the server checks every value and says which one is out of range."""
    chosen = {"method": fusion, "dense_weight": dense_weight,
              "document_weight": document_weight, "feedback": feedback}  # fmt: skip
    given = {"name": name, "description": description, "chunk_tokens": chunk_tokens,
             "overlap_tokens": overlap_tokens}  # fmt: skip
    body: dict[str, Any] = {field: value for field, value in given.items() if value is not None}
    if merge := {field: value for field, value in chosen.items() if value is not None}:
        body["fusion"] = merge
    created = _Client(url, key, config).call("POST", "", json_body=body)
    settings, stored = created["config"], created["config"]["fusion"]
    out.print(
        f"created knowledge base {created['name']} (embeddings: {created['embedding_model']}; "
        f"chunks of {settings['chunk_tokens']} tokens, {settings['overlap_tokens']} shared; "
        f"fusion {stored['method']}, dense weight {stored['dense_weight']}, "
        f"document weight {stored['document_weight']})"
    )


@app.command("list")
def list_bases(url: UrlOption = None, key: KeyOption = None, config: ConfigOption = None) -> None:
    """Knowledge bases of your project, with their sizes."""
    found = _Client(url, key, config).call("GET", "")["data"]
    table = Table("name", "documents", "chunks", "embedding model", "description")
    for kb in found:
        table.add_row(
            kb["name"], f"{kb['documents']:,}", f"{kb['chunks']:,}", kb["embedding_model"],
            kb["description"],
        )  # fmt: skip
    out.print(table)


def _files(paths: list[Path]) -> list[tuple[Path, str]]:
    """(file, source name) for every supported file; a folder's files are named relative to it."""
    found: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if file.suffix.lower() in EXTENSIONS and not file.name.startswith("."):
                    found.append((file, file.relative_to(path).as_posix()))
        elif path.is_file():
            found.append((path, path.name))
        else:
            raise fail(f"{path} does not exist")
    return found


def _known(client: _Client, kb: str) -> dict[str, str]:
    known: dict[str, str] = {}
    after: str | None = None
    while True:
        page = client.call("GET", f"{_kb(kb)}/documents", params={"limit": 1000, "after": after})
        known.update({doc["source"]: doc["content_hash"] for doc in page["data"]})
        if not page["has_more"] or not page["data"]:
            return known
        after = page["data"][-1]["source"]


@app.command("ingest")
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to ingest.")],
    kb: KbOption,
    metadata: Annotated[
        str | None, typer.Option(help='JSON metadata for every document, e.g. {"team": "hr"}.')
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Ingest files and folders; unchanged files are skipped, so a re-run resumes."""
    client = _Client(url, key, config)
    files = _files(paths)
    if not files:
        raise fail(f"no supported files found (extensions: {', '.join(sorted(EXTENSIONS))})")
    if metadata is not None:
        try:
            json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise fail(f"--metadata is not JSON ({exc.msg})") from exc
    extra = json.loads(metadata) if metadata is not None else None
    known = _known(client, kb)
    counts = {"created": 0, "updated": 0, "unchanged": 0, "chunks": 0, "failed_files": 0}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}"),
    )
    refused: list[str] = []
    with Progress(*columns, console=out, transient=False) as progress:
        staged = _stage(client, kb, files, known, extra, progress, counts, refused)
        job = _follow(client, kb, staged, progress) if staged else None
    for line in refused:
        out.print(f"[red]refused[/red] {line}")
    if job is not None:
        for key in counts:
            counts[key] += int(job["result"].get(key, 0))
    out.print(
        f"{counts['created']} created, {counts['updated']} updated, "
        f"{counts['unchanged']} unchanged; {counts['chunks']} chunks embedded"
        + (f" (job {job['id']})" if job is not None else "")
    )
    if counts["failed_files"] or refused:
        failed = counts["failed_files"] + len(refused)
        raise fail(f"{failed} file(s) not ingested; the rest is stored (a re-run retries them)")


def _stage(
    client: _Client,
    kb: str,
    files: list[tuple[Path, str]],
    known: dict[str, str],
    metadata: dict[str, Any] | None,
    progress: Progress,
    counts: dict[str, int],
    refused: list[str],
) -> list[dict[str, Any]]:
    """Upload the files whose content the base lacks; returns the staged ones."""
    task = progress.add_task(f"uploading to {kb}", total=len(files), current="")
    staged: list[dict[str, Any]] = []
    for file, source in files:
        progress.update(task, current=escape(source))
        data = file.read_bytes()
        if known.get(source) == hashlib.sha256(data).hexdigest():
            counts["unchanged"] += 1
        else:
            response = client.send("POST", f"{_kb(kb)}/files", content=data,
                                   params={"source": source})  # fmt: skip
            if 400 <= response.status_code < 500 and response.status_code not in (401, 403, 404):
                refused.append(f"{source}: {describe_http_error(response, client.key_source)}")
            elif response.status_code >= 400:
                raise fail(escape(describe_http_error(response, client.key_source)))
            else:
                staged.append({"file_id": response.json()["id"], "metadata": metadata})
        progress.advance(task)
    progress.update(task, current="")
    return staged


def _follow(
    client: _Client, kb: str, staged: list[dict[str, Any]], progress: Progress
) -> dict[str, Any]:
    """Start the ingestion job and follow it to its end (Ctrl-C leaves it running)."""
    job: dict[str, Any] = client.call("POST", f"{_kb(kb)}/ingest", json_body={"files": staged})
    task = progress.add_task(f"ingesting into {kb}", total=len(staged), current=job["id"])
    while job["state"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.3)
        job = client.call("GET", f"/{job['id']}", root="/api/jobs")
        done = job["progress"]["done"] + job["progress"]["failed"]
        progress.update(task, completed=done)
    progress.update(task, current="")
    if job["state"] != "succeeded":
        raise fail(f"ingestion job {job['id']} {job['state']}: {job.get('error') or ''}")
    return job


@app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    kb: KbOption,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many chunks.")] = 5,
    mode: Annotated[str, typer.Option(help="hybrid, dense or lexical.")] = "hybrid",
    where: Annotated[
        str | None, typer.Option("--filter", help='JSON metadata filter, e.g. {"team": "hr"}.')
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Search a knowledge base; the best-matching sentence of each chunk is highlighted."""
    filters = None
    if where is not None:
        try:
            filters = json.loads(where)
        except json.JSONDecodeError as exc:
            raise fail(f"--filter is not JSON ({exc.msg})") from exc
    body = {"query": query, "top_k": top_k, "mode": mode, "filters": filters}
    result = _Client(url, key, config).call("POST", f"{_kb(kb)}/search", json_body=body)
    for rank, hit in enumerate(result["data"], start=1):
        lead = hit["highlight_start"] - hit["start"]
        tail = hit["highlight_end"] - hit["start"]
        text = hit["text"]
        shown = (
            escape(text[:lead]) + "[bold yellow]" + escape(text[lead:tail]) + "[/]"
            + escape(text[tail:])
        )  # fmt: skip
        where_in = " > ".join(hit["heading_path"])
        out.print(
            f"[bold]{rank}. {escape(hit['source'])}[/] [dim]{escape(where_in)} "
            f"chars {hit['start']}-{hit['end']} score {hit['score']:.3f}[/]"
        )
        out.print(shown)
        out.print()
    out.print(f"[dim]{len(result['data'])} chunks, {result['mode']}, {result['took_ms']} ms[/]")


@app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="Knowledge base name.")],
    document: Annotated[
        str | None, typer.Option(help="Delete only this document (its source name).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete a knowledge base (or one document of it)."""
    client = _Client(url, key, config)
    if document is not None:
        found = client.call("GET", f"{_kb(name)}/documents", params={"source": document})["data"]
        if not found:
            raise fail(f"no document {document!r} in knowledge base {name!r}")
        client.call("DELETE", f"{_kb(name)}/documents/{found[0]['id']}")
        out.print(f"deleted {document} from {name}")
        return
    if not yes:
        typer.confirm(f"Delete knowledge base {name} and all its documents?", abort=True)
    client.call("DELETE", _kb(name))
    out.print(f"deleted knowledge base {name}")
