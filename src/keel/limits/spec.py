"""What limits and scopes look like when stored on a key or a project, and in the API.

Every number is optional: a limit that is not set is not checked (and costs nothing).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Count = Annotated[int, Field(ge=1, le=2**31)]
Money = Annotated[float, Field(gt=0, le=1e12)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class RateLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rpm: Count | None = Field(None, description="Requests per minute (sliding 60 s window).")
    tpm: Count | None = Field(
        None,
        description="Tokens per minute, input + output: max_tokens is reserved at admission "
        "and the real usage replaces it after the answer.",
    )
    concurrency: Count | None = Field(None, description="Requests in flight at once.")

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.concurrency is None


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Money = Field(description="Hard limit: spend per period above which calls get 429.")
    soft: Money | None = Field(
        None, description="Warning threshold: a header on each answer and one audit record."
    )
    period: Literal["day", "month"] = Field("month", description="Calendar period, in UTC.")

    @model_validator(mode="after")
    def _soft_below_hard(self) -> Budget:
        if self.soft is not None and self.soft > self.amount:
            raise ValueError(f"budget.soft ({self.soft}) must not exceed amount ({self.amount})")
        return self


class Limits(RateLimits):
    """Limits of one key, or of a whole project."""

    budget: Budget | None = Field(None, description="Spend limit in the models' price currency.")

    @property
    def empty(self) -> bool:
        return super().empty and self.budget is None


class ProjectLimits(Limits):
    routes: dict[Name, RateLimits] = Field(
        default_factory=dict,
        max_length=1000,
        description="Per route (what clients send as model): limits shared by every key.",
    )

    @property
    def empty(self) -> bool:
        return super().empty and not self.routes


class Scopes(BaseModel):
    """What a key may call; a scope that is not set allows everything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: list[Name] | None = Field(
        None, max_length=1000, description="Allowed models: route names, name@N or model names."
    )
    prompts: list[Name] | None = Field(
        None,
        max_length=1000,
        description="Allowed stored prompts; when set, every call must use one of them.",
    )
    max_tokens: Count | None = Field(
        None, description="Largest max_tokens per request; also the default when none is sent."
    )
    guard_policies: list[Name] | None = Field(
        None,
        max_length=100,
        description="Guard policies the key may pick per request with X-Keel-Guard-Policy "
        "('*': any, 'none' turns the guard off). Unlike the other scopes, unset means none "
        "for app and viewer keys; admin and developer keys may pick any.",
    )

    @property
    def empty(self) -> bool:
        return (
            self.routes is None
            and self.prompts is None
            and self.max_tokens is None
            and self.guard_policies is None
        )


NO_LIMITS = Limits()
NO_PROJECT_LIMITS = ProjectLimits()
NO_SCOPES = Scopes()
