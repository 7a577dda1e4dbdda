"""Read YAML files while keeping every value's line, so errors can say file:line: field.

Files are composed to node trees (which carry marks) and constructed to plain data; a
validation error's location path is walked back through the tree to find its line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

Loc = tuple[str | int, ...]
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        field = f" {self.field}:" if self.field else ""
        return f"{self.path}:{self.line}:{field} {self.message}"


class ApplyError(Exception):
    """The files cannot be applied; nothing was changed. `problems` lists each one."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Document:
    path: Path
    root: yaml.Node
    data: Any

    def node(self, loc: Loc) -> yaml.Node:
        """The deepest node along `loc` (it stops where the path leaves the tree)."""
        node = self.root
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                match = [v for k, v in node.value if getattr(k, "value", None) == str(part)]
                if not match:
                    return node
                node = match[-1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    return node
                node = node.value[part]
            else:
                return node
        return node

    def line(self, loc: Loc) -> int:
        return self.node(loc).start_mark.line + 1


@dataclass(frozen=True)
class Located:
    """A value in a document, with its path there (for lines and field names)."""

    document: Document
    loc: Loc
    value: Any

    def problem(self, message: str, loc: Loc = (), *, line: int | None = None) -> Problem:
        full = (*self.loc, *loc)
        return Problem(
            self.document.path,
            line if line is not None else self.document.line(full),
            field_name(full),
            message,
        )

    def validation_problems(self, error: ValidationError) -> list[Problem]:
        problems = []
        for item in error.errors():
            loc = tuple(p for p in item["loc"] if isinstance(p, int) or _is_field(str(p)))
            message = str(item["msg"]).removeprefix("Value error, ")
            if item["type"] == "missing":
                message = "is required"
            elif item["type"] == "extra_forbidden":
                message = "is not a known field"
            problems.append(self.problem(message, loc))
        return problems


def _is_field(part: str) -> bool:
    # Union members show up in pydantic locations as type names ('str', 'list[str]').
    return part not in {"str", "int", "float", "bool", "none", "dict"} and not any(
        c in part for c in "[]-("
    )


def field_name(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def yaml_files(paths: Iterable[Path]) -> list[Path]:
    """The files named, with folders expanded to their *.yaml / *.yml files (sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
        else:
            found.append(path)
    return found


def read_documents(paths: Iterable[Path]) -> list[Document]:
    """Every YAML document in the files; unreadable or malformed files are problems."""
    documents: list[Document] = []
    problems: list[Problem] = []
    files = yaml_files(paths)
    for path in files:
        try:
            text = path.read_text()
        except OSError as exc:
            problems.append(Problem(path, 0, "", f"cannot read the file: {exc.strerror}"))
            continue
        try:
            documents += _parse(path, text, problems)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 0
            problems.append(Problem(path, line, "", f"invalid YAML: {exc.problem or exc}"))
        except yaml.YAMLError as exc:
            problems.append(Problem(path, 0, "", f"invalid YAML: {exc}"))
    if not files and not problems:
        names = ", ".join(str(p) for p in paths)
        problems.append(Problem(Path(names or "."), 0, "", "no .yaml or .yml files found"))
    if problems:
        raise ApplyError(problems)
    return documents


def _parse(path: Path, text: str, problems: list[Problem]) -> list[Document]:
    loader = yaml.SafeLoader(text)
    documents = []
    try:
        while loader.check_node():
            root = loader.get_node()
            if root is None:
                continue
            _duplicate_keys(path, root, problems)
            documents.append(Document(path, root, loader.construct_document(root)))
    finally:
        loader.dispose()
    return documents


def _duplicate_keys(path: Path, node: yaml.Node, problems: list[Problem]) -> None:
    # PyYAML keeps the last of two equal keys silently; in a config file that hides a typo.
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = getattr(key, "value", None)
            if isinstance(name, str):
                if name in seen:
                    line = key.start_mark.line + 1
                    problems.append(Problem(path, line, name, "appears twice in this mapping"))
                seen.add(name)
            _duplicate_keys(path, value, problems)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _duplicate_keys(path, item, problems)
