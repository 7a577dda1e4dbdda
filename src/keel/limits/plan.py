"""What a key's requests to one route are checked against, built once instead of per request.

A plan depends only on the key's limits, its project's limits and the route; admission
keeps one until either limits object is replaced (a change, or the key read again).
"""

from __future__ import annotations

from dataclasses import dataclass

from keel.auth.keys import Principal
from keel.limits.base import Check
from keel.limits.spec import Budget, Limits, ProjectLimits, RateLimits


@dataclass(frozen=True, slots=True)
class BudgetRule:
    subject: str  # "key:<id>" or "project:<id>"; its counter adds ":<period id>"
    scope: str
    budget: Budget
    project_id: str


@dataclass(frozen=True, slots=True)
class Plan:
    key_limits: Limits  # what the plan was built from, compared by identity before each use
    project: ProjectLimits
    rates: tuple[Check, ...]  # in checking order; "tokens" ones get the request's reserve
    budgets: tuple[BudgetRule, ...]  # checked after the rates, in this order
    token_keys: tuple[str, ...]
    lease_keys: tuple[str, ...]

    def fits(self, key_limits: Limits, project: ProjectLimits) -> bool:
        return key_limits is self.key_limits and project is self.project

    def rate_checks(self, reserve: int) -> list[Check]:
        if not self.token_keys:
            return list(self.rates)
        return [
            Check("tokens", c.key, c.limit, reserve, c.scope) if c.kind == "tokens" else c
            for c in self.rates
        ]


def build_plan(principal: Principal, project: ProjectLimits, route: str | None) -> Plan:
    """The checks of `principal`'s requests; `route` is a key of `project.routes`, or None."""
    key_id, project_id = principal.key_id, principal.project_id
    key = (principal.limits, f"key:{key_id}", f"key {key_id}")
    whole = (project, f"project:{project_id}", f"project {project_id}")
    rates = [*_rate_checks(*key), *_rate_checks(*whole)]
    if route is not None:
        rates += _rate_checks(project.routes[route], f"route:{project_id}:{route}",
                              f"route {route}")  # fmt: skip
    budgets = tuple(
        BudgetRule(subject, scope, limits.budget, project_id)
        for limits, subject, scope in (key, whole)
        if limits.budget is not None
    )
    return Plan(
        principal.limits,
        project,
        tuple(rates),
        budgets,
        token_keys=tuple(c.key for c in rates if c.kind == "tokens"),
        lease_keys=tuple(c.key for c in rates if c.kind == "concurrency"),
    )


def _rate_checks(limits: RateLimits, subject: str, scope: str) -> list[Check]:
    checks: list[Check] = []
    if limits.rpm is not None:
        checks.append(Check("requests", f"rpm:{subject}", limits.rpm, 1, scope))
    if limits.tpm is not None:
        checks.append(Check("tokens", f"tpm:{subject}", limits.tpm, 0, scope))
    if limits.concurrency is not None:
        checks.append(Check("concurrency", f"cc:{subject}", limits.concurrency, 1, scope))
    return checks
