"""Step 3 of the request path (admit) and step 12 (settle): scopes, rate limits, budgets.

Limits come from the key, its project and the project's per-route table; all of them are
checked and counted in one backend call, from a plan built once per key and route. A
request with no limits and no scopes costs one role check and a dict lookup.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import orjson

from keel.auth.keys import Principal
from keel.auth.permissions import allowed
from keel.cost import cost
from keel.errors import BudgetExceeded, PermissionDenied, RateLimited
from keel.events import Change, ChangeBus
from keel.limits.base import Check, CheckState, Decision, LimitBackend, Settlement
from keel.limits.plan import BudgetRule, Plan, build_plan
from keel.limits.spec import ProjectLimits
from keel.providers.base import Usage
from keel.routing.table import Target

log = logging.getLogger("keel.limits")

PROJECTS_TOPIC = "projects"
DEFAULT_OUTPUT_RESERVE = 256  # tokens reserved for the answer when max_tokens is not sent
BUDGET_WARNING_HEADER = "x-keel-budget-warning"
MAX_PLANS = 10_000  # (key, route) pairs kept; past that the cache starts over
# Budget warnings this process remembers having sent; past that it starts over, and the
# backend's own once-per-period marker keeps the audit record from repeating.
MAX_WARNED = 10_000
NO_HEADERS: Mapping[str, str] = MappingProxyType({})

ProjectLoader = Callable[[str], ProjectLimits]


class SpendSink:
    """Where settled spend goes to be written to the database, off the request path."""

    def add_spend(self, subject: str, period: str, amount: float, tokens: int) -> None: ...

    def audit(self, project_id: str, action: str, target_type: str, target_id: str,
              after: dict[str, Any]) -> None: ...  # fmt: skip


@dataclass(frozen=True, slots=True)
class Period:
    """A budget period: its id in counter names, seconds left, and how long to keep it."""

    id: str
    reset_s: float
    ttl_s: float


@dataclass(frozen=True, slots=True)
class _Span:
    """A budget period by its bounds, so admission reads the calendar once per period."""

    id: str
    start: float
    end: float
    keep_s: float  # how long its counters outlive it

    def period(self, now: float) -> Period:
        return Period(self.id, self.end - now, self.end - now + self.keep_s)


def _span(kind: str, now: float) -> _Span:
    at = datetime.fromtimestamp(now, UTC)
    if kind == "day":
        start = datetime(at.year, at.month, at.day, tzinfo=UTC).timestamp()
        return _Span(f"d{at:%Y-%m-%d}", start, start + 86_400, 86_400)
    days = calendar.monthrange(at.year, at.month)[1]
    start = datetime(at.year, at.month, 1, tzinfo=UTC).timestamp()
    return _Span(f"m{at:%Y-%m}", start, start + days * 86_400, 2 * 86_400)


def budget_period(kind: str, now: float) -> Period:
    return _span(kind, now).period(now)


def _duration(seconds: float) -> str:
    """OpenAI's reset format: 20ms, 1s, 6m0s."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{rest}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{rest}s"


def _estimate_prompt_tokens(body: dict[str, Any]) -> int:
    # About four bytes a token; the answer's real usage replaces this estimate anyway.
    source = body.get("messages") if "messages" in body else body.get("prompt")
    if source is None:
        return 0
    return len(orjson.dumps(source)) // 4


def _requested_max_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens")
    if value is None:
        value = body.get("max_tokens")
    return int(value) if isinstance(value, int) else None


@dataclass(frozen=True, slots=True)
class Admitted:
    """An admitted request: its body (a scope may set max_tokens), the hold on its limits
    (None when nothing limits it) and the x-ratelimit-* headers for its response."""

    body: dict[str, Any]
    settlement: Ticket | None
    headers: Mapping[str, str]


class Ticket:
    """One admitted request's hold on its limits, released exactly once."""

    __slots__ = ("_admission", "_admitted_at", "_decision", "_done", "_lease", "_plan",
                 "_reserved", "_spans", "_spend_keys")  # fmt: skip

    def __init__(
        self,
        admission: Admission,
        plan: Plan,
        decision: Decision,
        lease: str,
        reserved: int,
        spans: list[_Span],  # one per budget of the plan
        spend_keys: list[str],
        admitted_at: float,
    ):
        self._admission = admission
        self._plan = plan
        self._decision = decision
        self._lease = lease
        self._reserved = reserved
        self._spans = spans
        self._spend_keys = spend_keys
        self._admitted_at = admitted_at
        self._done = False

    async def settle(self, target: Target | None, usage: Usage | None) -> None:
        if self._done:
            return
        self._done = True
        used = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
        spend = cost(target, usage) if target is not None and usage is not None else 0.0
        plan = self._plan
        spend_keys: tuple[str, ...] = ()
        ttl = 0.0
        if spend > 0 and plan.budgets:
            spend_keys = tuple(self._spend_keys)
            ttl = max(span.period(self._admitted_at).ttl_s for span in self._spans)
            for rule, span in zip(plan.budgets, self._spans, strict=True):
                self._admission.sink.add_spend(rule.subject, span.id, spend, used)
        settlement = Settlement(
            bucket=self._decision.bucket,
            backend=self._decision.backend,
            token_keys=plan.token_keys,
            token_delta=used - self._reserved if plan.token_keys else 0,
            spend_keys=spend_keys,
            spend=spend,
            spend_ttl_s=ttl,
            lease_keys=plan.lease_keys,
            lease=self._lease,
        )
        try:
            await self._admission.backend.settle(settlement)
        except Exception:  # counters drift a little; the answer is already out
            self._admission.settle_failures += 1
            log.exception("settling a request's limits failed")


class Admission:
    """Step 3: check scopes, rate limits and budgets; hand a Ticket for step 12 (settle)."""

    def __init__(
        self,
        backend: LimitBackend,
        load_project: ProjectLoader,
        sink: SpendSink | None = None,
        events: ChangeBus | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.backend = backend
        self.sink = sink or SpendSink()
        self._load_project = load_project
        self._clock = clock
        self._projects: dict[str, ProjectLimits] = {}
        self._generation = 0
        self._lock = threading.Lock()
        self._warned: set[str] = set()  # "<subject>:<period id>" markers of this period
        self._spans: dict[str, _Span] = {}  # "day"/"month" → the current period
        # Checked by identity against the limits objects on each use, so a change (which
        # replaces the object) rebuilds the plan without an invalidation of its own.
        self._plans: dict[tuple[str, str, str | None], Plan] = {}
        self.settle_failures = 0
        if events is not None:
            events.subscribe(PROJECTS_TOPIC, self._on_change)

    def _on_change(self, change: Change) -> None:
        with self._lock:
            self._generation += 1
            if change.key == "*":
                self._projects.clear()
            else:
                self._projects.pop(change.key, None)

    def preload(self, limits: dict[str, ProjectLimits]) -> None:
        with self._lock:
            self._projects.update(limits)

    async def _project(self, project_id: str) -> ProjectLimits:
        limits = self._projects.get(project_id)
        if limits is not None:
            return limits
        with self._lock:
            generation = self._generation
        limits = await asyncio.to_thread(self._load_project, project_id)
        with self._lock:
            if generation == self._generation:  # a change that landed meanwhile wins
                self._projects[project_id] = limits
        return limits

    # -- admission ---------------------------------------------------------------------

    async def __call__(
        self, principal: Principal, body: dict[str, Any], prompt: str | None = None
    ) -> Admitted:
        """Admit a request for `body` (after prompt resolution; `prompt`: the stored prompt
        it uses, if any), or raise the refusal the client gets."""
        if not allowed(principal.role, "inference"):
            raise PermissionDenied(
                f"role '{principal.role}' may not call models (inference); "
                "use a key with role app, developer or admin"
            )
        if not principal.scopes.empty:
            body = self._check_scopes(principal, body, prompt)
        project = self._projects.get(principal.project_id)  # cached: no coroutine to run
        if project is None:
            project = await self._project(principal.project_id)
        if principal.limits.empty and project.empty:
            return Admitted(body, None, NO_HEADERS)
        return await self._admit(principal, body, project)

    def _check_scopes(
        self, principal: Principal, body: dict[str, Any], prompt: str | None
    ) -> dict[str, Any]:
        scopes = principal.scopes
        model = str(body.get("model"))
        if scopes.routes is not None and model not in scopes.routes:
            raise PermissionDenied(
                f"this key's 'routes' scope does not allow model {model!r} "
                f"(allowed: {', '.join(scopes.routes) or 'none'})",
                param="model",
                code="scope_violation",
            )
        if scopes.prompts is not None and prompt not in scopes.prompts:
            used = f"prompt {prompt!r}" if prompt else "a request without a stored prompt"
            raise PermissionDenied(
                f"this key's 'prompts' scope does not allow {used} "
                f"(allowed: {', '.join(scopes.prompts) or 'none'})",
                param="prompt",
                code="scope_violation",
            )
        if scopes.max_tokens is not None:
            asked = _requested_max_tokens(body)
            if asked is None:
                return {**body, "max_tokens": scopes.max_tokens}
            if asked > scopes.max_tokens:
                raise PermissionDenied(
                    f"max_tokens {asked} is above this key's 'max_tokens' scope "
                    f"({scopes.max_tokens}); ask for {scopes.max_tokens} or fewer",
                    param="max_tokens",
                    code="scope_violation",
                )
        return body

    async def _admit(
        self, principal: Principal, body: dict[str, Any], project: ProjectLimits
    ) -> Admitted:
        plan = self._plan(principal, project, str(body.get("model")))
        reserve = 0
        if plan.token_keys:
            max_tokens = _requested_max_tokens(body)
            reserve = _estimate_prompt_tokens(body) + (max_tokens or DEFAULT_OUTPUT_RESERVE)
        checks = plan.rate_checks(reserve)
        if plan.token_keys:
            for check in checks:
                if check.kind == "tokens" and check.amount > check.limit:
                    raise RateLimited(
                        f"this request reserves {int(check.amount)} tokens (prompt plus "
                        f"max_tokens), more than the {check.scope} allows per minute "
                        f"({int(check.limit)}); send a lower max_tokens",
                        param="max_tokens",
                        code="tokens",
                    )
        now = self._clock()
        spans: list[_Span] = []
        spend_keys: list[str] = []
        for rule in plan.budgets:
            span = self._span(rule.budget.period, now)
            key = f"{rule.subject}:{span.id}"
            spans.append(span)
            spend_keys.append(key)
            checks.append(Check("budget", key, rule.budget.amount, 0, rule.scope, span.end - now))
        lease = os.urandom(8).hex() if plan.lease_keys else ""  # only concurrency slots hold it
        decision = await self.backend.acquire(checks, lease)
        headers = rate_headers(checks, decision.states, decision.failed)
        if decision.failed is not None:
            raise _refusal(checks[decision.failed], decision.states[decision.failed], headers)
        for index, rule in enumerate(plan.budgets):
            limit, spent = rule.budget, decision.states[len(plan.rates) + index].used
            if limit.soft is not None and spent >= limit.soft:
                headers[BUDGET_WARNING_HEADER] = (
                    f"{rule.scope} has spent {spent:.4f} of its budget {limit.amount}"
                    f" this {limit.period} (warning at {limit.soft})"
                )
                period = spans[index].period(now)
                await self._warn_once(rule, spend_keys[index], period, spent)
        ticket = Ticket(self, plan, decision, lease, reserve, spans, spend_keys, now)
        return Admitted(body, ticket, headers)

    def _plan(self, principal: Principal, project: ProjectLimits, model: str | None) -> Plan:
        route = model if model in project.routes else None  # other names share one plan
        slot = (principal.key_id, principal.project_id, route)
        plan = self._plans.get(slot)
        if plan is None or not plan.fits(principal.limits, project):
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            plan = self._plans[slot] = build_plan(principal, project, route)
        return plan

    def _span(self, kind: str, now: float) -> _Span:
        span = self._spans.get(kind)
        if span is None or not span.start <= now < span.end:
            if span is not None:  # warnings of the period that ended are never asked again
                ended = f":{span.id}"
                self._warned = {m for m in self._warned if not m.endswith(ended)}
            span = self._spans[kind] = _span(kind, now)
        return span

    async def _warn_once(self, rule: BudgetRule, marker: str, period: Period,
                         spent: float) -> None:  # fmt: skip
        if marker in self._warned:
            return
        if len(self._warned) >= MAX_WARNED:
            self._warned.clear()
        self._warned.add(marker)
        if await self.backend.first_warning(marker, period.ttl_s):
            kind, _, target_id = rule.subject.partition(":")
            limit = rule.budget
            after = {"spent": spent, "soft": limit.soft, "amount": limit.amount,
                     "period": period.id}  # fmt: skip
            self.sink.audit(rule.project_id, "budget.warning", kind, target_id, after)

    async def admit_embeddings(self, principal: Principal, model: str) -> None:
        """/v1/embeddings: the role, the routes scope and requests per minute."""
        if not allowed(principal.role, "inference"):
            raise PermissionDenied(
                f"role '{principal.role}' may not call models (inference); "
                "use a key with role app, developer or admin"
            )
        routes = principal.scopes.routes
        if routes is not None and model not in routes:
            raise PermissionDenied(
                f"this key's 'routes' scope does not allow model {model!r} "
                f"(allowed: {', '.join(routes) or 'none'})",
                param="model",
                code="scope_violation",
            )
        project = await self._project(principal.project_id)
        checks = [c for c in self._plan(principal, project, None).rates if c.kind == "requests"]
        if checks:
            decision = await self.backend.acquire(checks, "")
            if decision.failed is not None:
                headers = rate_headers(checks, decision.states, decision.failed)
                raise _refusal(checks[decision.failed], decision.states[decision.failed], headers)


_RATE_HEADERS = (
    ("requests", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
     "x-ratelimit-reset-requests"),
    ("tokens", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
     "x-ratelimit-reset-tokens"),
)  # fmt: skip


def rate_headers(
    checks: Sequence[Check], states: Sequence[CheckState], failed: int | None
) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers, from the tightest request and token limits."""
    tightest: dict[str, tuple[float, int]] = {}  # kind → (remaining, index of its check)
    for index, check in enumerate(checks):
        kind = check.kind
        if kind != "requests" and kind != "tokens":
            continue
        if index == failed:
            remaining = -1.0  # the limit that refused comes first
        else:
            counted = check.amount if failed is None else 0.0
            remaining = max(0.0, check.limit - states[index].used - counted)
        best = tightest.get(kind)
        if best is None or remaining < best[0]:
            tightest[kind] = (remaining, index)
    headers: dict[str, str] = {}
    for wanted, limit_name, remaining_name, reset_name in _RATE_HEADERS:
        best = tightest.get(wanted)
        if best is not None:
            remaining, index = best
            headers[limit_name] = str(int(checks[index].limit))
            headers[remaining_name] = str(int(max(0.0, remaining)))
            headers[reset_name] = _duration(states[index].reset_s)
    return headers


_UNITS = {"requests": "requests per minute", "tokens": "tokens per minute",
          "concurrency": "requests at once"}  # fmt: skip


def _refusal(check: Check, state: CheckState, headers: dict[str, str]) -> RateLimited:
    retry = max(1, math.ceil(state.reset_s))
    headers["retry-after"] = str(retry)
    if check.kind == "budget":
        return BudgetExceeded(
            f"the {check.scope} has spent {state.used:.4f} of its budget of {check.limit:g} for "
            f"this period; calls resume when the period ends (in {_duration(state.reset_s)}) or "
            "when an admin raises the budget",
            code="budget_exceeded",
            headers=headers,
        )
    return RateLimited(
        f"rate limit reached: the {check.scope} allows {int(check.limit)} "
        f"{_UNITS[check.kind]}; retry in {retry} s",
        code=check.kind,
        headers=headers,
    )
