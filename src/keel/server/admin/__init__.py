"""/api: the control plane (REST, OpenAPI documented); one module per resource."""

from fastapi import APIRouter

from keel.server.admin import (
    audit,
    cache,
    deployments,
    guard,
    identity,
    keys,
    prompts,
    registry,
    traces,
)

router = APIRouter(prefix="/api")
router.include_router(audit.router)
router.include_router(registry.router)
router.include_router(deployments.router)
router.include_router(prompts.router)
router.include_router(identity.router)
router.include_router(keys.router)
router.include_router(traces.router)
router.include_router(cache.router)
router.include_router(guard.router)
