"""Apply YAML documents: each top-level key goes to its section handler; all are checked
(files, then server state) before the first change is made.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

from keel.gitops.api import KeelAPI
from keel.gitops.base import ApplyOptions, Handler, HandlerFactory, Outcome, Pruner
from keel.gitops.prompts import PromptsHandler
from keel.gitops.registry import (
    DeploymentsHandler,
    ModelsHandler,
    ProvidersHandler,
    RoutesHandler,
)
from keel.gitops.source import ApplyError, Document, Located, Problem, read_documents
from keel.gitops.workflows import AgentsHandler, WorkflowsHandler
from keel.settings import DECLARATION_SECTIONS, Settings

__all__ = ["SECTIONS", "ApplyError", "ApplyOptions", "Outcome", "apply_paths"]


# Top-level YAML key → handler, applied in this order (routes name models, models name
# providers); --prune removes in the reverse order. keel.yaml may also hold settings: those
# keys are read by `keel serve`, and skipped here.
SECTIONS: Mapping[str, HandlerFactory] = MappingProxyType(
    {
        "providers": ProvidersHandler,
        "models": ModelsHandler,
        "routes": RoutesHandler,
        "deployments": DeploymentsHandler,
        "prompts": PromptsHandler,
        "workflows": WorkflowsHandler,  # after prompts: their llm steps name prompts
        "agents": AgentsHandler,
    }
)


def shorthand_section(document: Document) -> str | None:
    """A file holding one prompt (top-level `messages:`) stands for `prompts: [it]`."""
    if isinstance(document.data, dict) and "messages" in document.data:
        return "prompts"
    return None


def _entries(
    document: Document, known: Mapping[str, Handler], problems: list[Problem]
) -> Iterable[tuple[str, Located]]:
    short = shorthand_section(document)
    if short is not None and short in known:
        handler = known[short]
        if isinstance(handler, Pruner):
            handler.declare(Located(document, (), document.data))
        yield short, Located(document, (), document.data)
        return
    if not isinstance(document.data, dict):
        problems.append(
            Problem(document.path, document.line(()), "", "expected a mapping of sections")
        )
        return
    for key, value in document.data.items():
        where = Located(document, (str(key),), value)
        if key in Settings.model_fields:
            continue  # a setting of keel.yaml: `keel serve` reads it
        if key not in known:
            names = ", ".join(sorted(known))
            close = difflib.get_close_matches(str(key), [*known, *Settings.model_fields], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                where.problem(
                    f"unknown section (known: {names}; or a setting, listed by "
                    f"'keel config show'){hint} Rename or remove it"
                )
            )
            continue
        if value is None:
            value = []  # `providers:` with nothing under it: an empty section
        if not isinstance(value, list):
            problems.append(where.problem("must be a list of entries"))
            continue
        handler = known[key]
        if isinstance(handler, Pruner):
            handler.declare(where)
        for index, item in enumerate(value):
            yield str(key), Located(document, (str(key), index), item)


async def apply_paths(
    paths: Iterable[Path],
    api: KeelAPI,
    *,
    dry_run: bool = False,
    options: ApplyOptions | None = None,
    sections: Mapping[str, HandlerFactory] | None = None,
) -> list[Outcome]:
    """Validate every file, then apply them; ApplyError (nothing changed) on any problem."""
    options = options or ApplyOptions()
    handlers = {key: make(options) for key, make in (sections or SECTIONS).items()}
    documents = read_documents(paths)
    problems: list[Problem] = []
    for document in documents:
        for section, entry in _entries(document, handlers, problems):
            problems += handlers[section].load(entry)
    if problems:
        raise ApplyError(problems)
    for handler in handlers.values():
        problems += await handler.plan(api)
    if problems:
        raise ApplyError(problems)
    pruners = [h for h in reversed(handlers.values()) if isinstance(h, Pruner)]
    if options.prune:
        for pruner in pruners:
            problems += await pruner.plan_removals(api)
        if problems:
            raise ApplyError(problems)
    outcomes: list[Outcome] = []
    for handler in handlers.values():
        outcomes += await handler.apply(api, dry_run=dry_run)
    if options.prune:
        for pruner in pruners:
            outcomes += await pruner.remove(api, dry_run=dry_run)
    return outcomes


def declaration_sections() -> tuple[str, ...]:
    """The section names, as settings knows them (a test keeps the two lists equal)."""
    return DECLARATION_SECTIONS
