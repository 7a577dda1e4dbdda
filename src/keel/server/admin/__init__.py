"""/api: the control plane (REST, OpenAPI documented); one module per resource."""

from fastapi import APIRouter

from keel.server.admin import audit

router = APIRouter(prefix="/api")
router.include_router(audit.router)
