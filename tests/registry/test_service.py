"""The registry on SQLite and PostgreSQL: idempotent writes, history, rollback, audit, events."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from keel.auth.audit import AuditLog
from keel.auth.secrets import SecretBox
from keel.errors import InvalidRequest, NotFound
from keel.events import Change, LocalChangeBus
from keel.providers.plugins import ProviderPlugins
from keel.registry.service import InUse, RegistryService
from keel.registry.specs import DeploymentSpec, ModelVersionSpec, ProviderSpec, RouteSpec
from keel.registry.tables import ProviderRow
from keel.store import migrate
from keel.store.db import Database

P = "default"


@pytest.fixture
def setup(database_url: str, tmp_path: Path) -> tuple[RegistryService, list[Change], Database]:
    database = Database(database_url)
    migrate.upgrade(database)
    bus = LocalChangeBus()
    changes: list[Change] = []
    bus.subscribe("registry", changes.append)
    registry = RegistryService(
        database, SecretBox.load(tmp_path, None), bus, ProviderPlugins.load()
    )
    return registry, changes, database


def add_two_versions(registry: RegistryService) -> None:
    registry.put_provider(P, ProviderSpec(name="up", kind="openai_compat",
                                          base_url="http://127.0.0.1:9/v1"), "t")  # fmt: skip
    registry.add_model_version(
        P, ModelVersionSpec(name="m", provider="up", upstream_model="a"), "t"
    )
    registry.add_model_version(
        P, ModelVersionSpec(name="m", provider="up", upstream_model="b"), "t"
    )


def test_provider_keys_are_encrypted_and_never_shown(setup) -> None:  # type: ignore[no-untyped-def]
    registry, _, database = setup
    spec = ProviderSpec(name="openai", kind="openai_compat", base_url="https://x.test/v1",
                        api_key="sk-live-123456")  # fmt: skip
    view, changed = registry.put_provider(P, spec, "tester")
    assert changed
    assert view["has_api_key"] is True
    assert "sk-live-123456" not in str(view)
    with database.session() as session:
        stored = session.scalars(select(ProviderRow)).one().api_key_encrypted
    assert stored is not None
    assert "sk-live-123456" not in stored
    _, again = registry.put_provider(P, spec, "tester")
    assert again is False  # same key, same fields: nothing to change


def test_model_versions_are_numbered_and_identical_content_is_not_a_new_version(
    setup,  # type: ignore[no-untyped-def]
) -> None:
    registry, _, _ = setup
    add_two_versions(registry)
    same, created = registry.add_model_version(
        P, ModelVersionSpec(name="m", provider="up", upstream_model="b"), "t"
    )
    assert created is False
    assert same["ref"] == "m@2"
    assert [m["ref"] for m in registry.list_models(P)] == ["m@1", "m@2"]
    with pytest.raises(NotFound, match="unknown provider 'nope'"):
        registry.add_model_version(P, ModelVersionSpec(name="x", provider="nope",
                                                       upstream_model="x"), "t")  # fmt: skip


def test_rollback_walks_back_through_history_and_everything_is_audited(
    setup,  # type: ignore[no-untyped-def]
) -> None:
    registry, changes, database = setup
    add_two_versions(registry)
    registry.put_route(P, RouteSpec(name="chat", targets={"m@1": 100}), "t")
    registry.set_split(P, "chat", {"m@1": 90, "m@2": 10}, "t")
    registry.promote(P, "chat", "m@2", "t")
    assert registry.rollback(P, "chat", "t")["targets"] == {"m@1": 90, "m@2": 10}
    assert registry.rollback(P, "chat", "t")["targets"] == {"m@1": 100}
    with pytest.raises(InvalidRequest, match="no earlier state"):
        registry.rollback(P, "chat", "t")
    history = registry.get_route(P, "chat")["history"]
    assert [h["reverted"] for h in history] == [False, True, True]
    actions = [e.action for e in AuditLog(database).list(P, target_type="route")]
    # Each kind of change has its own action, so the log tells a promotion from a split.
    assert actions == ["route.rollback", "route.rollback", "route.promote", "route.split",
                       "route.create"]  # fmt: skip
    assert Change("registry", "chat", P) in changes


def test_routes_must_name_existing_versions(setup) -> None:  # type: ignore[no-untyped-def]
    registry, _, _ = setup
    add_two_versions(registry)
    with pytest.raises(NotFound, match="m@3"):
        registry.put_route(P, RouteSpec(name="chat", targets={"m@3": 1}), "t")


def test_only_local_models_can_be_deployed(setup) -> None:  # type: ignore[no-untyped-def]
    registry, _, _ = setup
    add_two_versions(registry)
    with pytest.raises(InvalidRequest, match="only models of a local provider"):
        registry.put_deployment(P, DeploymentSpec(model="m@1", replicas=2), "t")


def test_specs_refuse_bad_names_and_weights() -> None:
    with pytest.raises(ValueError, match="not a valid name"):
        RouteSpec(name="Chat Default", targets={"m@1": 1})
    with pytest.raises(ValueError, match="name@number"):
        RouteSpec(name="chat", targets={"m": 1})
    with pytest.raises(ValueError, match=r"every weight is 0.*weights are relative"):
        RouteSpec(name="chat", targets={"m@1": 0})
    # A negative weight is blamed on the number, with the rule, never on the syntax.
    with pytest.raises(ValueError, match=r"weight of m@2 is -10, below 0; weights are relative"):
        RouteSpec(name="chat", targets={"m@1": 90, "m@2": -10})
    with pytest.raises(ValueError, match="not a provider kind"):
        ProviderSpec(name="x", kind="Open AI")


def test_a_provider_kind_must_be_installed_and_get_what_it_needs(
    setup,  # type: ignore[no-untyped-def]
) -> None:
    registry, changes, _ = setup
    with pytest.raises(InvalidRequest, match="needs base_url") as missing:
        registry.put_provider(P, ProviderSpec(name="x", kind="openai_compat"), "t")
    assert missing.value.param == "base_url"
    with pytest.raises(InvalidRequest) as unknown:
        registry.put_provider(P, ProviderSpec(name="x", kind="bedrock"), "t")
    assert unknown.value.param == "kind"
    message = unknown.value.message
    assert "unknown provider kind 'bedrock' (known: anthropic, local, openai_compat)" in message
    assert "'keel.providers' entry point" in message
    assert registry.list_providers(P) == []
    assert changes == []


def test_deleting_what_a_route_uses_is_refused_with_409_naming_it(
    setup,  # type: ignore[no-untyped-def]
) -> None:
    registry, _, database = setup
    add_two_versions(registry)
    registry.put_route(P, RouteSpec(name="chat", targets={"m@1": 90, "m@2": 10}), "t")
    with pytest.raises(InUse, match=r"m@2 is used by route 'chat' \(weight 10\)") as info:
        registry.delete_model_version(P, "m@2", "t")
    assert info.value.status == 409
    with pytest.raises(InUse, match="serves model version\\(s\\) m@1, m@2"):
        registry.delete_provider(P, "up", "t")
    registry.set_split(P, "chat", {"m@1": 100}, "t")
    registry.delete_model_version(P, "m@2", "t")
    registry.delete_route(P, "chat", "t")
    registry.delete_model_version(P, "m@1", "t")
    registry.delete_provider(P, "up", "t")
    assert registry.list_providers(P) == []
    deleted = [e.action for e in AuditLog(database).list(P) if e.action.endswith(".delete")]
    assert sorted(deleted) == ["model.delete", "model.delete", "provider.delete", "route.delete"]
    with pytest.raises(NotFound):
        registry.get_route(P, "chat")


def test_a_key_variable_is_read_by_the_server_from_its_own_environment(
    database_url: str, tmp_path: Path
) -> None:
    database = Database(database_url)
    migrate.upgrade(database)
    env = {"VLLM_KEY": "sk-from-the-server"}
    registry = RegistryService(
        database, SecretBox.load(tmp_path, None), LocalChangeBus(), ProviderPlugins.load(), env=env
    )
    spec = ProviderSpec(name="vllm", kind="openai_compat", base_url="http://x.test/v1",
                        api_key_env="VLLM_KEY")  # fmt: skip
    view, changed = registry.put_provider(P, spec, "t")
    assert changed
    assert (view["has_api_key"], view["api_key_env"]) == (True, "VLLM_KEY")
    assert registry.snapshot().providers[0].api_key == "sk-from-the-server"
    assert registry.put_provider(P, spec, "t")[1] is False  # the same reference: no change
    missing = spec.model_copy(update={"api_key_env": "NOT_HERE"})
    with pytest.raises(InvalidRequest, match="NOT_HERE is not set on the Keel server") as info:
        registry.put_provider(P, missing, "t")
    assert "not by the machine running 'keel apply'" in info.value.message
