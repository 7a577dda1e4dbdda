"""/api: the control plane (REST, OpenAPI documented); one module per resource."""

from fastapi import APIRouter, Depends

from keel.server.admin import (
    audit,
    cache,
    deployments,
    evals,
    guard,
    identity,
    insights,
    jobs,
    keys,
    knowledge,
    knowledge_jobs,
    prompts,
    registry,
    traces,
    workflows,
)
from keel.server.admin.text import refuse_nul

# Every route: refuse NUL characters in any text before the handler runs (admin/text.py).
router = APIRouter(prefix="/api", dependencies=[Depends(refuse_nul)])
router.include_router(audit.router)
router.include_router(registry.router)
router.include_router(deployments.router)
router.include_router(prompts.router)
router.include_router(identity.router)
router.include_router(keys.router)
router.include_router(traces.router)
router.include_router(cache.router)
router.include_router(guard.router)
router.include_router(knowledge.router)
router.include_router(knowledge_jobs.router)
router.include_router(jobs.router)
router.include_router(insights.router)
router.include_router(evals.router)
router.include_router(workflows.router)
