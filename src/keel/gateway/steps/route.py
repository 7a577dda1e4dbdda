"""Step 7: the model name to a route (a registry route, a version, or a static upstream)."""

from __future__ import annotations

from keel.calls import Call, CallState
from keel.registry.catalog import ModelCatalog
from keel.routing.router import Router
from keel.routing.table import Route


class RouteStep:
    def __init__(self, catalog: ModelCatalog, router: Router):
        self.catalog = catalog
        self.router = router

    def run(self, call: Call, state: CallState) -> Route:
        model = state.model
        self.catalog.reject_embedder_for_chat(model)
        return self.router.resolve(call.principal.project_id, model)
