"""Step 2 of the request path (admit) and step 11 (settle): scopes, rate limits, budgets.

Limits come from the key, its project and the project's per-route table; all of them are
checked and counted in one backend call. A request with no limits and no scopes costs
one role check and a dict lookup.
"""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from keel.auth.keys import Principal
from keel.auth.permissions import allowed
from keel.errors import BudgetExceeded, PermissionDenied, RateLimited
from keel.events import Change, ChangeBus
from keel.gateway.cost import cost
from keel.gateway.pipeline import GatewayRequest
from keel.limits.base import Check, CheckState, Decision, LimitBackend, Settlement
from keel.limits.spec import Budget, Limits, ProjectLimits, RateLimits
from keel.providers.base import Usage
from keel.routing.table import Target

log = logging.getLogger("keel.limits")

PROJECTS_TOPIC = "projects"
DEFAULT_OUTPUT_RESERVE = 256  # tokens reserved for the answer when max_tokens is not sent
BUDGET_WARNING_HEADER = "x-keel-budget-warning"

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


def budget_period(kind: str, now: float) -> Period:
    at = datetime.fromtimestamp(now, UTC)
    if kind == "day":
        end = datetime(at.year, at.month, at.day, tzinfo=UTC).timestamp() + 86_400
        return Period(f"d{at:%Y-%m-%d}", end - now, end - now + 86_400)
    days = calendar.monthrange(at.year, at.month)[1]
    end = datetime(at.year, at.month, 1, tzinfo=UTC).timestamp() + days * 86_400
    return Period(f"m{at:%Y-%m}", end - now, end - now + 2 * 86_400)


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
class _BudgetCheck:
    subject: str  # "key:<id>" or "project:<id>"
    scope: str
    budget: Budget
    period: Period
    project_id: str


class Ticket:
    """One admitted request's hold on its limits, released exactly once."""

    __slots__ = ("_admission", "_budgets", "_decision", "_done", "_lease", "_lease_keys",
                 "_reserved", "_token_keys")  # fmt: skip

    def __init__(
        self,
        admission: Admission,
        decision: Decision,
        lease: str,
        token_keys: tuple[str, ...],
        reserved: int,
        lease_keys: tuple[str, ...],
        budgets: tuple[_BudgetCheck, ...],
    ):
        self._admission = admission
        self._decision = decision
        self._lease = lease
        self._token_keys = token_keys
        self._reserved = reserved
        self._lease_keys = lease_keys
        self._budgets = budgets
        self._done = False

    async def settle(self, target: Target | None, usage: Usage | None) -> None:
        if self._done:
            return
        self._done = True
        used = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
        spend = cost(target, usage) if target is not None and usage is not None else 0.0
        spend_keys: tuple[str, ...] = ()
        ttl = 0.0
        if spend > 0 and self._budgets:
            spend_keys = tuple(f"{b.subject}:{b.period.id}" for b in self._budgets)
            ttl = max(b.period.ttl_s for b in self._budgets)
            for b in self._budgets:
                self._admission.sink.add_spend(b.subject, b.period.id, spend, used)
        settlement = Settlement(
            bucket=self._decision.bucket,
            backend=self._decision.backend,
            token_keys=self._token_keys,
            token_delta=used - self._reserved if self._token_keys else 0,
            spend_keys=spend_keys,
            spend=spend,
            spend_ttl_s=ttl,
            lease_keys=self._lease_keys,
            lease=self._lease,
        )
        try:
            await self._admission.backend.settle(settlement)
        except Exception:  # counters drift a little; the answer is already out
            self._admission.settle_failures += 1
            log.exception("settling a request's limits failed")

    def abandon(self) -> None:
        if self._done:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop left (shutdown): leases expire on their own
        task = loop.create_task(self.settle(None, None))
        self._admission.background.add(task)
        task.add_done_callback(self._admission.background.discard)


class Admission:
    """RequestStep: check scopes, rate limits and budgets; hand a Ticket to step 11."""

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
        self._warned: set[str] = set()
        self._periods: dict[str, tuple[float, Period]] = {}  # kind → (period end, period)
        self.background: set[asyncio.Task[None]] = set()
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

    async def __call__(self, request: GatewayRequest) -> GatewayRequest:
        principal = request.principal
        if not allowed(principal.role, "inference"):
            raise PermissionDenied(
                f"role '{principal.role}' may not call models (inference); "
                "use a key with role app, developer or admin"
            )
        body = request.body
        if not principal.scopes.empty:
            body = self._check_scopes(principal, request)
        project = await self._project(principal.project_id)
        if principal.limits.empty and project.empty:
            return request if body is request.body else dataclasses.replace(request, body=body)
        return await self._admit(request, body, project)

    def _check_scopes(self, principal: Principal, request: GatewayRequest) -> dict[str, Any]:
        scopes = principal.scopes
        if scopes.routes is not None and request.model not in scopes.routes:
            raise PermissionDenied(
                f"this key's 'routes' scope does not allow model {request.model!r} "
                f"(allowed: {', '.join(scopes.routes) or 'none'})",
                param="model",
                code="scope_violation",
            )
        if scopes.prompts is not None:
            prompt = request.headers.get("X-Keel-Prompt")  # set by step 3 when a prompt was used
            if prompt not in scopes.prompts:
                used = f"prompt {prompt!r}" if prompt else "a request without a stored prompt"
                raise PermissionDenied(
                    f"this key's 'prompts' scope does not allow {used} "
                    f"(allowed: {', '.join(scopes.prompts) or 'none'})",
                    param="prompt",
                    code="scope_violation",
                )
        if scopes.max_tokens is not None:
            asked = _requested_max_tokens(request.body)
            if asked is None:
                return {**request.body, "max_tokens": scopes.max_tokens}
            if asked > scopes.max_tokens:
                raise PermissionDenied(
                    f"max_tokens {asked} is above this key's 'max_tokens' scope "
                    f"({scopes.max_tokens}); ask for {scopes.max_tokens} or fewer",
                    param="max_tokens",
                    code="scope_violation",
                )
        return request.body

    async def _admit(
        self, request: GatewayRequest, body: dict[str, Any], project: ProjectLimits
    ) -> GatewayRequest:
        principal = request.principal
        now = self._clock()
        max_tokens = _requested_max_tokens(body)
        reserve = _estimate_prompt_tokens(body) + (max_tokens or DEFAULT_OUTPUT_RESERVE)
        checks: list[Check] = []
        budgets: list[_BudgetCheck] = []
        key_subject, project_subject = f"key:{principal.key_id}", f"project:{principal.project_id}"
        self._rate_checks(checks, principal.limits, key_subject, f"key {principal.key_id}",
                          reserve)  # fmt: skip
        self._rate_checks(checks, project, project_subject, f"project {principal.project_id}",
                          reserve)  # fmt: skip
        route = project.routes.get(request.model)
        if route is not None:
            self._rate_checks(checks, route, f"route:{principal.project_id}:{request.model}",
                              f"route {request.model}", reserve)  # fmt: skip
        for limits, subject, scope in ((principal.limits, key_subject, f"key {principal.key_id}"),
                                       (project, project_subject,
                                        f"project {principal.project_id}")):  # fmt: skip
            if limits.budget is not None:
                period = self._period(limits.budget.period, now)
                budgets.append(_BudgetCheck(subject, scope, limits.budget, period,
                                            principal.project_id))  # fmt: skip
                checks.append(Check("budget", f"{subject}:{period.id}", limits.budget.amount, 0,
                                    scope, period.reset_s))  # fmt: skip
        for check in checks:
            if check.kind == "tokens" and check.amount > check.limit:
                raise RateLimited(
                    f"this request reserves {int(check.amount)} tokens (prompt plus max_tokens), "
                    f"more than the {check.scope} allows per minute ({int(check.limit)}); "
                    "send a lower max_tokens",
                    param="max_tokens",
                    code="tokens",
                )
        lease = os.urandom(8).hex()
        decision = await self.backend.acquire(checks, lease)
        headers = rate_headers(checks, decision.states, decision.failed)
        if decision.failed is not None:
            raise _refusal(checks[decision.failed], decision.states[decision.failed], headers)
        budget_states = [s for c, s in zip(checks, decision.states, strict=True)
                         if c.kind == "budget"]  # fmt: skip
        for budget, state in zip(budgets, budget_states, strict=True):
            limit = budget.budget
            if limit.soft is not None and state.used >= limit.soft:
                headers[BUDGET_WARNING_HEADER] = (
                    f"{budget.scope} has spent {state.used:.4f} of its budget {limit.amount}"
                    f" this {limit.period} (warning at {limit.soft})"
                )
                await self._warn_once(budget, state.used)
        ticket = Ticket(
            self,
            decision,
            lease,
            tuple(c.key for c in checks if c.kind == "tokens"),
            reserve,
            tuple(c.key for c in checks if c.kind == "concurrency"),
            tuple(budgets),
        )
        return dataclasses.replace(
            request, body=body, settlement=ticket, headers={**request.headers, **headers}
        )

    def _period(self, kind: str, now: float) -> Period:
        # Periods change once a day at most: compute the calendar once, then only the clock.
        cached = self._periods.get(kind)
        if cached is None or now >= cached[0]:
            period = budget_period(kind, now)
            cached = (now + period.reset_s, period)
            self._periods[kind] = cached
        end, period = cached
        return Period(period.id, end - now, period.ttl_s - (period.reset_s - (end - now)))

    @staticmethod
    def _rate_checks(checks: list[Check], limits: RateLimits | Limits, subject: str, scope: str,
                     reserve: int) -> None:  # fmt: skip
        if limits.rpm is not None:
            checks.append(Check("requests", f"rpm:{subject}", limits.rpm, 1, scope))
        if limits.tpm is not None:
            checks.append(Check("tokens", f"tpm:{subject}", limits.tpm, reserve, scope))
        if limits.concurrency is not None:
            checks.append(Check("concurrency", f"cc:{subject}", limits.concurrency, 1, scope))

    async def _warn_once(self, budget: _BudgetCheck, spent: float) -> None:
        marker = f"{budget.subject}:{budget.period.id}"
        if marker in self._warned:
            return
        self._warned.add(marker)
        if await self.backend.first_warning(marker, budget.period.ttl_s):
            kind, _, target_id = budget.subject.partition(":")
            limit = budget.budget
            after = {"spent": spent, "soft": limit.soft, "amount": limit.amount,
                     "period": budget.period.id}  # fmt: skip
            self.sink.audit(budget.project_id, "budget.warning", kind, target_id, after)

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
        checks: list[Check] = []
        for limits, subject, scope in (
            (principal.limits, f"key:{principal.key_id}", f"key {principal.key_id}"),
            (project, f"project:{principal.project_id}", f"project {principal.project_id}"),
        ):
            if limits.rpm is not None:
                checks.append(Check("requests", f"rpm:{subject}", limits.rpm, 1, scope))
        if checks:
            decision = await self.backend.acquire(checks, "")
            if decision.failed is not None:
                headers = rate_headers(checks, decision.states, decision.failed)
                raise _refusal(checks[decision.failed], decision.states[decision.failed], headers)


def rate_headers(
    checks: list[Check], states: tuple[CheckState, ...], failed: int | None
) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers, from the tightest request and token limits."""
    headers: dict[str, str] = {}
    for kind, suffix in (("requests", "requests"), ("tokens", "tokens")):
        tightest: tuple[float, Check, CheckState] | None = None
        for index, (check, state) in enumerate(zip(checks, states, strict=True)):
            if check.kind != kind:
                continue
            counted = check.amount if failed is None else 0.0
            remaining = max(0.0, check.limit - state.used - counted)
            if index == failed:
                remaining = -1.0  # the limit that refused comes first
            if tightest is None or remaining < tightest[0]:
                tightest = (remaining, check, state)
        if tightest is not None:
            remaining, check, state = tightest
            headers[f"x-ratelimit-limit-{suffix}"] = str(int(check.limit))
            headers[f"x-ratelimit-remaining-{suffix}"] = str(int(max(0.0, remaining)))
            headers[f"x-ratelimit-reset-{suffix}"] = _duration(state.reset_s)
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
