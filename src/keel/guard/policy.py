"""Guard policies: named, ordered scanners for a request's input and its model output.

A policy is declared as data (a dict or YAML, validated by `PolicySpec`) and built into
a `Policy`, whose `run_input(messages)` and `run_output(text)` return every verdict, the
messages or text after redaction/anonymization, and whether to block. Built-in policies:
`default` (injection, invisible text, secrets, PII on input) and `strict`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel.guard.anonymize import Deanonymizer, Vault
from keel.guard.base import ACTION_RANK, Finding, Role, ScanContext, Scanner, Verdict
from keel.guard.leak import add_canary, new_canary
from keel.guard.untrusted import SOURCE_ROLES, Source

if TYPE_CHECKING:
    from keel.guard.embedding import WindowEncoder
    from keel.guard.model import InjectionModel
    from keel.guard.streaming import StreamingOutputGuard

ScannerType = Literal[
    "injection",
    "pii",
    "secrets",
    "invisible_text",
    "banned_substrings",
    "regex",
    "max_length",
    "json_schema",
    "system_prompt_leak",
    "toxicity",
]
ALL_ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool", "document")
# Which message roles each scanner reads on input unless the spec says otherwise. The
# system prompt is the developer's own text: only PII and secrets look at it.
DEFAULT_ROLES: dict[str, tuple[Role, ...]] = {
    "injection": ("user", "tool", "document"),
    "invisible_text": ("user", "tool", "document"),
    "pii": ALL_ROLES,
    "secrets": ALL_ROLES,
}


class PolicyError(ValueError):
    """A policy spec that cannot be built; the message names the problem."""


class ScannerSpec(BaseModel):
    """One scanner in a policy.

    `threshold` and `action` mean, per type: injection/toxicity: score threshold, action
    block|flag; pii: minimum recognizer confidence, action block|mask|anonymize|flag;
    secrets, invisible_text, banned_substrings, regex: action block|redact|flag;
    max_length: action block|truncate|flag; json_schema, system_prompt_leak: block|flag.
    Everything else a scanner takes goes in `options` (e.g. `entities` for pii).
    """

    model_config = ConfigDict(extra="forbid")

    type: ScannerType
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    action: str | None = None
    roles: list[Role] | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    input: list[ScannerSpec] = Field(default_factory=list)
    output: list[ScannerSpec] = Field(default_factory=list)
    canary: bool = Field(default=False, description="insert a canary into the system prompt")
    deanonymize: bool = Field(default=True, description="restore placeholders in output")
    stop_on_block: bool = Field(default=True, description="skip later scanners once blocked")
    stream_holdback: int = Field(
        default=128, ge=0, description="characters a stream holds back until scanned"
    )


BUILTIN_POLICIES: dict[str, dict[str, Any]] = {
    "default": {
        "name": "default",
        "description": "injection, invisible text, secrets and PII (anonymized) on input; "
        "secrets and system-prompt leaks on output",
        "input": [
            {"type": "injection", "action": "block"},
            {"type": "invisible_text", "action": "redact"},
            {"type": "secrets", "action": "block"},
            {"type": "pii", "action": "anonymize"},
        ],
        "output": [
            {"type": "secrets", "action": "block"},
            {"type": "system_prompt_leak", "action": "block"},
        ],
    },
    "strict": {
        "name": "strict",
        "description": "default, plus: injection at a lower threshold and in assistant "
        "turns, invisible text blocked, a canary in the system prompt, PII masked in output",
        "canary": True,
        "input": [
            {"type": "max_length", "action": "block", "options": {"max_chars": 100_000}},
            {
                "type": "injection",
                "action": "block",
                "threshold": 0.35,
                "roles": ["user", "tool", "document", "assistant"],
            },
            {"type": "invisible_text", "action": "block"},
            {"type": "secrets", "action": "block"},
            {"type": "pii", "action": "anonymize", "threshold": 0.4},
        ],
        "output": [
            {"type": "secrets", "action": "block"},
            {"type": "system_prompt_leak", "action": "block"},
            {"type": "invisible_text", "action": "redact"},
            {"type": "pii", "action": "mask"},
        ],
    },
}


@dataclass
class GuardResources:
    """Heavy objects shared by every policy built with them (one MiniLM in memory)."""

    injection_model: InjectionModel | None = None
    encoder: WindowEncoder | None = None
    _injection: dict[tuple[float | None, str], Scanner] = field(default_factory=dict)

    def injection(self, threshold: float | None, action: str) -> Scanner:
        from keel.guard.embedding import WindowEncoder
        from keel.guard.injection import InjectionScanner
        from keel.guard.model import InjectionModel

        key = (threshold, action)
        if key not in self._injection:
            if self.injection_model is None:
                self.injection_model = InjectionModel.load()
            if self.encoder is None:
                emb = self.injection_model.embedding
                self.encoder = WindowEncoder(
                    max_tokens=int(emb["max_tokens"]),
                    max_windows=int(emb["max_windows"]),
                    quantize=bool(emb["quantize"]),
                )
            self._injection[key] = InjectionScanner(
                self.injection_model,
                threshold=threshold,
                action=_one_of(action, ("block", "flag"), "injection"),  # type: ignore[arg-type]
                encoder=self.encoder,
            )
        return self._injection[key]


def _one_of(value: str, allowed: Sequence[str], scanner: str) -> str:
    if value not in allowed:
        raise PolicyError(
            f"scanner {scanner!r} has no action {value!r} (allowed: {', '.join(allowed)})"
        )
    return value


def build_scanner(spec: ScannerSpec, resources: GuardResources) -> Scanner:
    """The scanner a spec describes; PolicyError names what is wrong with it."""
    opts = dict(spec.options)
    t = spec.type
    try:
        if t == "injection":
            return resources.injection(spec.threshold, spec.action or "block")
        if t == "pii":
            from keel.guard.pii import PiiScanner

            mode = _one_of(spec.action or "anonymize", ("block", "mask", "anonymize", "flag"), t)
            if spec.threshold is not None:
                opts["min_score"] = spec.threshold
            return PiiScanner(mode=mode, **opts)  # type: ignore[arg-type]
        if t == "secrets":
            from keel.guard.secrets import SecretsScanner

            mode = _one_of(spec.action or "block", ("block", "redact", "flag"), t)
            return SecretsScanner(mode=mode, **opts)  # type: ignore[arg-type]
        if t == "toxicity":
            from keel.guard.toxicity import ToxicityScanner

            action = _one_of(spec.action or "block", ("block", "flag"), t)
            threshold = 0.5 if spec.threshold is None else spec.threshold
            return ToxicityScanner(threshold=threshold, action=action, **opts)  # type: ignore[arg-type]
        from keel.guard import json_schema, leak, text_rules

        simple: dict[str, tuple[Callable[..., Scanner], str, tuple[str, ...], str]] = {
            "invisible_text": (
                text_rules.InvisibleTextScanner,
                "mode",
                ("block", "redact", "flag"),
                "redact",
            ),
            "banned_substrings": (
                text_rules.BannedSubstringsScanner,
                "mode",
                ("block", "redact", "flag"),
                "block",
            ),
            "regex": (text_rules.RegexScanner, "mode", ("block", "redact", "flag"), "block"),
            "max_length": (
                text_rules.MaxLengthScanner,
                "mode",
                ("block", "truncate", "flag"),
                "block",
            ),
            "json_schema": (json_schema.JsonSchemaScanner, "action", ("block", "flag"), "block"),
        }
        if t == "system_prompt_leak":
            _one_of(spec.action or "block", ("block",), t)
            return leak.SystemPromptLeakScanner(**opts)
        factory, keyword, allowed, default = simple[t]
        opts[keyword] = _one_of(spec.action or default, allowed, t)
        return factory(**opts)
    except TypeError as exc:
        raise PolicyError(f"scanner {t!r}: bad options {sorted(opts)}: {exc}") from exc
    except ValueError as exc:
        if isinstance(exc, PolicyError):
            raise
        raise PolicyError(f"scanner {t!r}: {exc}") from exc


@dataclass
class RequestState:
    """What one request's input scan leaves for its output scan."""

    vault: Vault = field(default_factory=Vault)
    system_prompt: str | None = None
    canary: str | None = None

    def context(self, role: Role, direction: Literal["input", "output"]) -> ScanContext:
        return ScanContext(
            role=role,
            direction=direction,
            vault=self.vault,
            system_prompt=self.system_prompt,
            canary=self.canary,
        )


@dataclass
class GuardResult:
    verdicts: list[Verdict]
    blocked: bool
    state: RequestState
    messages: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""

    @property
    def flagged(self) -> bool:
        return any(v.action == "flag" for v in self.verdicts)

    @property
    def action(self) -> str:
        return max((v.action for v in self.verdicts), key=ACTION_RANK.__getitem__, default="allow")

    def findings(self) -> list[Finding]:
        return [f for v in self.verdicts for f in v.findings]


@dataclass
class _Step:
    spec: ScannerSpec
    scanner: Scanner
    roles: tuple[Role, ...]


def _error_verdict(name: str, exc: Exception) -> Verdict:
    # A scanner that fails must not wave text through: the policy blocks instead.
    detail = f"{type(exc).__name__}: {exc}"[:200]
    return Verdict(name, 1.0, "block", [Finding("scanner_error", 0, 0, detail=detail)])


class Policy:
    def __init__(self, spec: PolicySpec, resources: GuardResources | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        resources = resources or GuardResources()
        self._input = [
            _Step(
                s,
                build_scanner(s, resources),
                tuple(s.roles or DEFAULT_ROLES.get(s.type, ("user", "tool", "document"))),
            )
            for s in spec.input
        ]
        self._output = [_Step(s, build_scanner(s, resources), ("assistant",)) for s in spec.output]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], resources: GuardResources | None = None) -> Policy:
        try:
            spec = PolicySpec.model_validate(dict(data))
        except ValidationError as exc:
            raise PolicyError(f"invalid guard policy: {exc}") from exc
        return cls(spec, resources)

    @classmethod
    def from_yaml(cls, text: str, resources: GuardResources | None = None) -> Policy:
        import yaml

        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise PolicyError("a guard policy in YAML must be a mapping with a 'name'")
        return cls.from_dict(data, resources)

    @classmethod
    def builtin(cls, name: str, resources: GuardResources | None = None) -> Policy:
        if name not in BUILTIN_POLICIES:
            raise PolicyError(
                f"unknown guard policy {name!r} (built in: {', '.join(BUILTIN_POLICIES)}); "
                "declare your own with Policy.from_dict or from_yaml"
            )
        return cls.from_dict(BUILTIN_POLICIES[name], resources)

    def warm_up(self) -> None:
        """Load models now (the injection embedding) instead of on a first request."""
        for step in [*self._input, *self._output]:
            warm = getattr(step.scanner, "warm_up", None)
            if callable(warm):
                warm()

    def _scan(
        self, steps: list[_Step], text: str, role: Role, ctx: ScanContext
    ) -> tuple[str, list[Verdict], bool]:
        verdicts: list[Verdict] = []
        blocked = False
        for step in steps:
            if role not in step.roles:
                continue
            try:
                verdict = step.scanner.scan(text, ctx)
            except Exception as exc:  # any scanner failure fails closed, see _error_verdict
                verdict = _error_verdict(step.scanner.name, exc)
            verdicts.append(verdict)
            if verdict.action == "block":
                blocked = True
                if self.spec.stop_on_block:
                    break
            elif verdict.action == "redact" and verdict.redacted is not None:
                text = verdict.redacted
        return text, verdicts, blocked

    def run_input(
        self, messages: Sequence[Mapping[str, Any]], state: RequestState | None = None
    ) -> GuardResult:
        """Scan chat messages (OpenAI shape: role + string or text-part content)."""
        state = state or RequestState()
        system = [_text_of(m) for m in messages if m.get("role") in ("system", "developer")]
        state.system_prompt = "\n".join(t for t in system if t) or None
        out: list[dict[str, Any]] = []
        verdicts: list[Verdict] = []
        blocked = False
        canary_done = False
        for message in messages:
            raw_role = str(message.get("role", "user"))
            role: Role = "system" if raw_role == "developer" else raw_role  # type: ignore[assignment]
            if role not in ALL_ROLES:
                role = "user"
            new = dict(message)
            ctx = state.context(role, "input")
            content = message.get("content")
            if isinstance(content, str):
                new["content"], found, hit = self._scan(self._input, content, role, ctx)
                verdicts.extend(found)
                blocked = blocked or hit
            elif isinstance(content, list):
                parts = []
                for part in content:
                    if isinstance(part, dict) and part.get("type") == "text":
                        text, found, hit = self._scan(
                            self._input, str(part.get("text", "")), role, ctx
                        )
                        verdicts.extend(found)
                        blocked = blocked or hit
                        part = {**part, "text": text}
                    parts.append(part)
                new["content"] = parts
            if (
                self.spec.canary
                and role == "system"
                and not canary_done
                and isinstance(new.get("content"), str)
            ):
                state.canary = state.canary or new_canary()
                new["content"] = add_canary(new["content"], state.canary)
                canary_done = True
            out.append(new)
            if blocked and self.spec.stop_on_block:
                break
        return GuardResult(verdicts=verdicts, blocked=blocked, state=state, messages=out)

    def run_untrusted(
        self, text: str, source: Source = "retrieved", state: RequestState | None = None
    ) -> GuardResult:
        """Scan content the application fetched (`retrieved` documents, `tool` or `http`
        output) as data, not as the user's request: an instruction inside it is an attack."""
        return self.run_input([{"role": SOURCE_ROLES[source], "content": text}], state)

    def run_output(self, text: str, state: RequestState | None = None) -> GuardResult:
        """Scan a whole model answer; restore anonymized values unless blocked."""
        state = state or RequestState()
        ctx = state.context("assistant", "output")
        scanned, verdicts, blocked = self._scan(self._output, text, "assistant", ctx)
        if not blocked and self.spec.deanonymize:
            scanned = Deanonymizer(state.vault).restore(scanned)
        return GuardResult(
            verdicts=verdicts, blocked=blocked, state=state, text="" if blocked else scanned
        )

    def scan_output_text(self, text: str, state: RequestState) -> tuple[str, list[Verdict], bool]:
        """Output scanners only (no restoration): the streaming guard's building block."""
        return self._scan(self._output, text, "assistant", state.context("assistant", "output"))

    def stream(self, state: RequestState | None = None) -> StreamingOutputGuard:
        from keel.guard.streaming import StreamingOutputGuard

        return StreamingOutputGuard(self, state or RequestState(), self.spec.stream_holdback)


def _text_of(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""
