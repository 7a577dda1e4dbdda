"""First start registers the bundled model once, and never brings back what was removed."""

from __future__ import annotations

from pathlib import Path

from keel.auth.secrets import SecretBox
from keel.events import LocalChangeBus
from keel.providers.plugins import ProviderPlugins
from keel.registry.seed import seed_bundled_model
from keel.registry.service import RegistryService
from keel.settings import Settings
from keel.store import migrate
from keel.store.db import Database


def test_a_deleted_bundled_model_stays_deleted_across_restarts(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'keel.db'}")
    migrate.upgrade(database)
    registry = RegistryService(
        database, SecretBox.load(tmp_path, None), LocalChangeBus(), ProviderPlugins.load()
    )
    settings = Settings.model_validate({"data_dir": tmp_path})
    assert seed_bundled_model(registry, settings) is True
    assert seed_bundled_model(registry, settings) is False  # a restart: already there
    # The operator removes it (as `keel apply --prune` does, in this order).
    registry.delete_route("default", "smollm2", "t")
    registry.delete_deployment("default", "smollm2@1", "t")
    registry.delete_model_version("default", "smollm2@1", "t")
    registry.delete_provider("default", "local", "t")
    assert seed_bundled_model(registry, settings) is False
    assert registry.list_providers("default") == []
    database.dispose()
