"""A check every /api request passes before its handler: no NUL character (U+0000) in any
text it sends.

PostgreSQL cannot hold U+0000 in text (the whole statement fails: a 500), and SQLite
stores it silently, so two names that print alike differ. One check over the path, the
query and the parsed JSON body covers every string field of every control-plane model,
those added later included, and refuses before anything is written.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from keel.errors import InvalidRequest
from keel.server.deps import PrincipalDep

_NUL = "\x00"


async def refuse_nul(request: Request, _principal: PrincipalDep) -> None:
    """400 naming the first field that holds a NUL; authenticated first, so a caller without
    a key learns nothing but that it needs one."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and _NUL in value:
            raise _refused(name)
    for name, value in request.query_params.multi_items():
        if _NUL in name or _NUL in value:
            raise _refused(_printable(name))
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    # Valid JSON can only carry a NUL escaped, so most bodies are cleared without parsing.
    body = await request.body()
    if b"\\u0000" not in body:
        return
    try:
        data = await request.json()
    except (ValueError, RecursionError):
        return  # not JSON: the route says what is wrong with it
    where = find_nul(data)
    if where is not None:
        raise _refused(where)


def find_nul(data: Any) -> str | None:
    """The path (`a.b[0].c`) of the first string or key in `data` that holds a NUL."""
    todo: list[tuple[str, Any]] = [("", data)]
    while todo:  # a stack, not recursion: the body may nest as deep as the parser allowed
        where, value = todo.pop()
        if isinstance(value, str):
            if _NUL in value:
                return where or "body"
        elif isinstance(value, dict):
            items = []
            for key, item in value.items():
                here = f"{where}.{_printable(key)}" if where else _printable(key)
                if _NUL in key:
                    return here
                items.append((here, item))
            todo.extend(reversed(items))
        elif isinstance(value, list):
            todo.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(value))))
    return None


def _printable(text: str) -> str:
    return text.replace(_NUL, "\\u0000")


def _refused(where: str) -> InvalidRequest:
    return InvalidRequest(
        f"'{where}' contains a NUL character (U+0000), which Keel does not store; "
        "remove it (it is often a stray \\u0000 from a C string or a binary paste)",
        param=where,
    )
