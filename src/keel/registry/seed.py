"""First start: put the bundled model in the registry, deployed, behind a route of its name.

Runs once: when a provider named `local` exists, or existed and was deleted (by hand or
by `keel apply --prune`), the registry is left as the operator made it.
"""

from __future__ import annotations

from keel.auth.keys import DEFAULT_PROJECT
from keel.registry.service import RegistryService
from keel.registry.specs import DeploymentSpec, ModelVersionSpec, ProviderSpec, RouteSpec
from keel.settings import Settings

ACTOR = "system:first-start"
# A 135M model rambles until the context is full; cap it unless the client says otherwise.
LOCAL_DEFAULT_MAX_TOKENS = 512


def seed_bundled_model(registry: RegistryService, settings: Settings) -> bool:
    """Register and deploy the bundled model once; returns whether it did anything."""
    project = DEFAULT_PROJECT
    if any(p["name"] == "local" for p in registry.list_providers(project)):
        return False
    if registry.provider_was_deleted(project, "local"):
        return False
    name = settings.local_model_name
    path = str(settings.local_model_path) if settings.local_model_path else "bundled:smollm2"
    registry.put_provider(
        project, ProviderSpec(name="local", kind="local", config={"model_path": path}), ACTOR
    )
    model, _ = registry.add_model_version(
        project,
        ModelVersionSpec(
            name=name,
            provider="local",
            upstream_model=name,
            params={"max_tokens": LOCAL_DEFAULT_MAX_TOKENS},
            context_window=settings.local_model_ctx,
            tags=["bundled"],
        ),
        ACTOR,
    )
    registry.put_deployment(project, DeploymentSpec(model=model["ref"], replicas=1), ACTOR)
    registry.put_route(project, RouteSpec(name=name, targets={model["ref"]: 100}), ACTOR)
    return True
