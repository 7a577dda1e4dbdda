from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from keel.gitops.source import ApplyError, Located, read_documents, yaml_files


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    size: int


def test_validation_errors_point_at_the_line_of_the_field(tmp_path: Path) -> None:
    path = tmp_path / "items.yaml"
    path.write_text(
        "items:\n  - name: a\n    size: 1\n  - name: b\n    size: big\n    colour: red\n"
    )
    [document] = read_documents([path])
    entry = Located(document, ("items", 1), document.data["items"][1])
    with pytest.raises(ValidationError) as caught:
        Item.model_validate(entry.value)
    problems = [str(p) for p in entry.validation_problems(caught.value)]
    assert problems == [
        f"{path}:5: items[1].size: Input should be a valid integer, unable to parse string as "
        "an integer",
        f"{path}:6: items[1].colour: is not a known field",
    ]


def test_yaml_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("prompts:\n  - name: a\n   messages: [\n")
    with pytest.raises(ApplyError) as caught:
        read_documents([path])
    [problem] = caught.value.problems
    assert problem.path == path
    assert problem.line == 3
    assert "invalid YAML" in problem.message


def test_duplicate_keys_are_reported_rather_than_silently_dropped(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nname: b\n")
    with pytest.raises(ApplyError, match=r"dup.yaml:2: name: appears twice"):
        read_documents([path])


def test_folders_expand_to_their_yaml_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text("x: 1\n")
    (tmp_path / "a.yaml").write_text("x: 2\n---\nx: 3\n")
    (tmp_path / "notes.txt").write_text("not yaml")
    assert [p.name for p in yaml_files([tmp_path])] == ["a.yaml", "b.yml"]
    assert [d.data["x"] for d in read_documents([tmp_path])] == [2, 3, 1]


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ApplyError, match=r"no \.yaml or \.yml files"):
        read_documents([tmp_path])
