"""Roles and the permissions they grant; every /api route declares one permission.

Permissions read `<resource>:<read|write>`; `inference` is the /v1 API. A role grants a
permission when its set holds it, `*` (everything) or `*:read` (any read).
"""

from __future__ import annotations

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"*"}),
    "developer": frozenset(
        {
            "inference",
            "*:read",
            "prompts:write",
            "routes:write",
            "models:write",
            "deployments:write",
            "datasets:write",
            "experiments:write",
            "jobs:write",
            "traces:write",
            "cache:write",
            "kb:write",
            "workflows:write",
        }
    ),
    "viewer": frozenset({"*:read"}),
    "app": frozenset({"inference"}),
}


def allowed(role: str, permission: str) -> bool:
    granted = ROLE_PERMISSIONS.get(role, frozenset())
    if "*" in granted or permission in granted:
        return True
    return permission.endswith(":read") and "*:read" in granted
