from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from keel.auth.audit import AuditLog
from keel.auth.keys import KeyService, Principal
from keel.errors import InvalidRequest, NotFound
from keel.events import Change, LocalChangeBus
from keel.prompts.service import PromptService
from keel.prompts.spec import PromptContent
from keel.store import migrate
from keel.store.db import Database

ALICE = Principal(key_id="alice1", project_id="default", role="developer")


def version(system: str, **config: Any) -> PromptContent:
    return PromptContent.model_validate(
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": "{{ question }}"},
            ],
            "variables": [{"name": "question"}],
            "config": config,
        }
    )


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Change] = []

    def __call__(self, change: Change) -> None:
        self.changes.append(change)


@pytest.fixture
def store(database_url: str) -> Iterator[tuple[PromptService, Database, Recorder]]:
    database = Database(database_url)
    migrate.upgrade(database)
    keys = KeyService(database)
    keys.ensure_project()
    keys.ensure_project("other")
    events = LocalChangeBus()
    recorder = Recorder()
    events.subscribe("prompts", recorder)
    try:
        yield PromptService(database, events), database, recorder
    finally:
        database.dispose()


def test_versions_are_numbered_per_prompt_and_record_author_and_message(
    store: tuple[PromptService, Database, Recorder],
) -> None:
    service, _, _ = store
    first, created = service.create_version("default", "support", version("v1"),
                                            message="first", actor=ALICE)  # fmt: skip
    second, _ = service.create_version("default", "support", version("v2"), message="second",
                                       actor=ALICE)  # fmt: skip
    other, _ = service.create_version("default", "sales", version("s1"), message="", actor="cli")
    assert created
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert second.author == "key:alice1"
    assert other.author == "cli"
    assert second.message == "second"
    assert second.created_at.tzinfo is not None
    assert [v.version for v in service.list_versions("default", "support")] == [2, 1]


def test_unchanged_content_creates_no_version_and_no_event(
    store: tuple[PromptService, Database, Recorder],
) -> None:
    service, _, recorder = store
    service.create_version("default", "support", version("v1"), message="a", actor=ALICE)
    again, created = service.create_version("default", "support", version("v1"), message="b",
                                            actor=ALICE)  # fmt: skip
    assert not created
    assert again.version == 1
    assert again.message == "a"
    assert len(recorder.changes) == 1


def test_labels_move_and_latest_follows_the_newest_version(
    store: tuple[PromptService, Database, Recorder],
) -> None:
    service, _, _ = store
    for text in ("v1", "v2", "v3"):
        service.create_version("default", "support", version(text), message="", actor=ALICE)
    assert service.set_label("default", "support", "production", 1, actor=ALICE) == (None, 1)
    assert service.get("default", "support").content.messages[0].content == "v1"
    assert service.set_label("default", "support", "production", 3, actor=ALICE) == (1, 3)
    assert service.get("default", "support", label="latest").version == 3
    assert service.get("default", "support", version=2).labels == ()
    assert service.get("default", "support").labels == ("latest", "production")


def test_latest_cannot_be_moved_and_labels_need_an_existing_version(
    store: tuple[PromptService, Database, Recorder],
) -> None:
    service, _, _ = store
    service.create_version("default", "support", version("v1"), message="", actor=ALICE)
    with pytest.raises(InvalidRequest, match="'latest' always points at the newest"):
        service.set_label("default", "support", "latest", 1, actor=ALICE)
    with pytest.raises(NotFound, match="no version 7"):
        service.set_label("default", "support", "production", 7, actor=ALICE)
    with pytest.raises(InvalidRequest, match="invalid label"):
        service.set_label("default", "support", "Prod!", 1, actor=ALICE)


def test_fetching_without_a_label_means_production(
    store: tuple[PromptService, Database, Recorder],
) -> None:
    service, _, _ = store
    service.create_version("default", "support", version("v1"), message="", actor=ALICE)
    with pytest.raises(NotFound) as caught:
        service.get("default", "support")
    assert "no label 'production'" in caught.value.message
    assert "keel prompts label support production VERSION" in caught.value.message


def test_every_change_writes_an_audit_record_and_publishes_an_event(
    store: tuple[PromptService, Database, Recorder],
) -> None:
    service, database, recorder = store
    service.create_version("default", "support", version("v1"), message="m1", actor=ALICE)
    service.create_version("default", "support", version("v2"), message="m2", actor=ALICE)
    service.set_label("default", "support", "production", 1, actor=ALICE)
    service.set_label("default", "support", "production", 2, actor=ALICE)
    service.archive("default", "support", actor=ALICE)
    entries = AuditLog(database).list("default", target_type="prompt", target_id="support")
    assert [e.action for e in reversed(entries)] == [
        "prompt.version.create",
        "prompt.version.create",
        "prompt.label.set",
        "prompt.label.set",
        "prompt.archive",
    ]
    move = entries[1]
    assert (move.before, move.after) == (
        {"label": "production", "version": 1},
        {"label": "production", "version": 2},
    )
    assert entries[0].actor == "key:alice1"
    assert recorder.changes == [Change("prompts", "support", "default")] * 5


def test_a_failed_change_leaves_no_audit_record(
    store: tuple[PromptService, Database, Recorder],
) -> None:
    service, database, _ = store
    service.create_version("default", "support", version("v1"), message="", actor=ALICE)
    with pytest.raises(NotFound):
        service.set_label("default", "support", "production", 9, actor=ALICE)
    actions = [e.action for e in AuditLog(database).list("default")]
    assert actions == ["prompt.version.create"]


def test_archive_hides_the_prompt_and_a_new_version_restores_it(
    store: tuple[PromptService, Database, Recorder],
) -> None:
    service, _, _ = store
    service.create_version("default", "support", version("v1"), message="", actor=ALICE)
    service.archive("default", "support", actor=ALICE)
    assert service.list_prompts("default") == []
    assert [p.name for p in service.list_prompts("default", include_archived=True)] == ["support"]
    pointers = service.pointers("default", "support")
    assert pointers is not None
    assert pointers.archived
    with pytest.raises(InvalidRequest, match="archived"):
        service.set_label("default", "support", "production", 1, actor=ALICE)
    restored, created = service.create_version("default", "support", version("v1"), message="",
                                               actor=ALICE)  # fmt: skip
    assert created
    assert restored.version == 2
    assert [p.name for p in service.list_prompts("default")] == ["support"]


def test_projects_do_not_see_each_others_prompts(
    store: tuple[PromptService, Database, Recorder],
) -> None:
    service, _, _ = store
    service.create_version("default", "support", version("mine"), message="", actor=ALICE)
    with pytest.raises(NotFound):
        service.get("other", "support", label="latest")
    assert service.list_prompts("other") == []
    assert service.pointers("other", "support") is None
    theirs, _ = service.create_version("other", "support", version("theirs"), message="",
                                       actor="cli")  # fmt: skip
    assert theirs.version == 1


def test_diff_shows_changed_messages_and_config(
    store: tuple[PromptService, Database, Recorder],
) -> None:
    service, _, _ = store
    service.create_version("default", "support", version("Be brief.", temperature=0.2),
                           message="", actor=ALICE)  # fmt: skip
    service.create_version("default", "support", version("Be kind.", temperature=0.7),
                           message="", actor=ALICE)  # fmt: skip
    text = service.diff("default", "support", 1, 2)
    assert text.startswith("--- support@1\n+++ support@2\n")
    assert "-  content: Be brief.\n" in text
    assert "+  content: Be kind.\n" in text
    assert "-  temperature: 0.2\n" in text
    assert "+  temperature: 0.7\n" in text


def test_render_preview_uses_the_labelled_version(
    store: tuple[PromptService, Database, Recorder],
) -> None:
    service, _, _ = store
    service.create_version("default", "support", version("v1"), message="", actor=ALICE)
    service.set_label("default", "support", "staging", 1, actor=ALICE)
    record, messages = service.render("default", "support", {"question": "why?"}, label="staging")
    assert record.version == 1
    assert messages == [
        {"role": "system", "content": "v1"},
        {"role": "user", "content": "why?"},
    ]


def test_concurrent_pushes_get_distinct_version_numbers(
    store: tuple[PromptService, Database, Recorder],
) -> None:
    service, _, _ = store
    service.create_version("default", "support", version("base"), message="", actor=ALICE)
    numbers: list[int] = []
    errors: list[BaseException] = []

    def push(index: int) -> None:
        try:
            record, _ = service.create_version(
                "default", "support", version(f"v{index}"), message="", actor=ALICE
            )
            numbers.append(record.version)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(numbers) == [2, 3, 4]
