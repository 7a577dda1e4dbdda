"""What a prompt version holds (messages, variables schema, model config) and its text form.

The API, the service, the CLI and `keel apply` share these models, so they agree on
validation, on the content hash that decides "no changes", and on the diff text.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
LABEL_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
VARIABLE_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
DEFAULT_LABEL = "production"
LATEST = "latest"
PROMPT_MODEL_PREFIX = "prompt:"
MAX_VERSION = 2**31 - 1
MAX_TEMPLATE_CHARS = 32 * 1024

VariableType = Literal["string", "number", "integer", "boolean", "object", "array"]
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def has_type(value: Any, expected: VariableType) -> bool:
    """JSON-schema-like typing: true and false are booleans, never numbers."""
    if isinstance(value, bool) and expected != "boolean":
        return False
    return isinstance(value, _PYTHON_TYPES[expected])


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    names |= {dict: "object", list: "array", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def valid_name(name: str) -> bool:
    return re.fullmatch(NAME_PATTERN, name) is not None


def valid_label(label: str) -> bool:
    return re.fullmatch(LABEL_PATTERN, label) is not None


def _no_nul(value: Any, where: str) -> None:
    # PostgreSQL refuses NUL in text; refusing it here keeps both stores alike.
    if isinstance(value, str) and "\x00" in value:
        raise ValueError(f"{where} contains a NUL character")
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key, where)
            _no_nul(item, where)
    elif isinstance(value, list):
        for item in value:
            _no_nul(item, where)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PromptMessage(_Strict):
    role: Literal["system", "user", "assistant"] = Field(description="Who speaks.")
    content: str = Field(
        max_length=MAX_TEMPLATE_CHARS, description="Jinja template text; {{ name }} inserts."
    )


class VariableSpec(_Strict):
    name: str = Field(pattern=VARIABLE_PATTERN, description="Name used in {{ }}.")
    type: VariableType = Field("string", description="JSON type the value must have.")
    required: bool = Field(True, description="False when the variable has a default.")
    default: Any = Field(None, description="Value used when the caller sends none.")
    description: str = Field("", max_length=1000)

    @model_validator(mode="after")
    def _default_fits(self) -> VariableSpec:
        if "default" in self.model_fields_set and self.default is not None:
            if "required" not in self.model_fields_set:
                self.required = False
            elif self.required:
                raise ValueError(
                    f"variable '{self.name}' is required and has a default; drop one of them"
                )
            if not has_type(self.default, self.type):
                raise ValueError(
                    f"the default of variable '{self.name}' must be {self.type} "
                    f"(got {json_type(self.default)})"
                )
        return self


class ResponseFormatSpec(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["text", "json_object", "json_schema"]


class PromptConfig(_Strict):
    """Request fields a version supplies; a request that sets the same field wins."""

    model: str | None = Field(
        None, min_length=1, max_length=200, description="Model id or route alias to call."
    )
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=MAX_VERSION)
    response_format: ResponseFormatSpec | None = None
    stop: str | list[str] | None = Field(None, description="Up to 4 stop sequences.")

    @field_validator("temperature", mode="before")
    @classmethod
    def _float(cls, value: Any) -> Any:
        # strict mode refuses an int where a float is expected; 1 is a fine temperature.
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("stop")
    @classmethod
    def _four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return value

    def request_fields(self) -> dict[str, Any]:
        """The fields to merge into a chat request (model included), unset ones left out."""
        return self.model_dump(mode="json", exclude_none=True)


class PromptContent(_Strict):
    """Everything that makes up a version; two versions with equal content are the same."""

    messages: list[PromptMessage] = Field(min_length=1, max_length=64)
    variables: list[VariableSpec] = Field(default_factory=list, max_length=128)
    allow_extra_variables: bool = Field(
        False, description="Accept variables the schema does not declare."
    )
    config: PromptConfig = Field(default_factory=PromptConfig)

    @model_validator(mode="after")
    def _unique_variables(self) -> PromptContent:
        seen: set[str] = set()
        for spec in self.variables:
            if spec.name in seen:
                raise ValueError(f"variable '{spec.name}' is declared twice")
            seen.add(spec.name)
        _no_nul(self.model_dump(mode="json"), "the prompt")
        return self

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def content_hash(self) -> str:
        data = orjson.dumps(self.canonical(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(data).hexdigest()

    def to_yaml(self) -> str:
        """A readable, stable text form: the diff is taken between two of these."""
        return dump_yaml(self.canonical())


class _BlockDumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=100)


def diff_contents(name: str, old: tuple[int, PromptContent], new: tuple[int, PromptContent]) -> str:
    """A unified diff of two versions' messages, variables and config."""
    lines = difflib.unified_diff(
        old[1].to_yaml().splitlines(keepends=True),
        new[1].to_yaml().splitlines(keepends=True),
        fromfile=f"{name}@{old[0]}",
        tofile=f"{name}@{new[0]}",
    )
    return "".join(lines)
