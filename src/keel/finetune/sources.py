"""Where training data comes from: a file uploaded with purpose=fine-tune, or a version of a
Keel dataset (`dataset:NAME` or `dataset:NAME@VERSION`), such as one made from traces.

A dataset item is a conversation: its input messages, and its expected answer as the
assistant's last turn. Both sources are checked the same way, before any compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from keel.errors import InvalidRequest, NotFound
from keel.evals.datasets import DatasetService
from keel.finetune.data import Example, parse_examples
from keel.jobs.files import FileStore

PURPOSE = "fine-tune"
DATASET_PREFIX = "dataset:"


@dataclass(frozen=True, slots=True)
class Loaded:
    ref: str  # what was read: a file id, or dataset:NAME@VERSION (pinned)
    examples: list[Example]


@dataclass
class Sources:
    files: FileStore
    datasets: DatasetService | None = None

    def load(self, project_id: str, ref: str, param: str) -> Loaded:
        if ref.startswith(DATASET_PREFIX):
            return self._dataset(project_id, ref, param)
        return Loaded(ref, self._file(project_id, ref, param))

    def _file(self, project_id: str, file_id: str, param: str) -> list[Example]:
        info = self.files.get(file_id, project_id)
        if info is None:
            raise NotFound(
                f"no file '{file_id}' in this project; upload it with POST /v1/files "
                f"(purpose=fine-tune) and pass its id, or pass {DATASET_PREFIX}NAME for a dataset",
                param=param,
                code="file_not_found",
            )
        if info.purpose != PURPOSE:
            raise InvalidRequest(
                f"file '{file_id}' has purpose '{info.purpose}'; upload training data with "
                "purpose=fine-tune",
                param=param,
            )
        return parse_examples(self.files.content(file_id, project_id) or b"", param=param)

    def _dataset(self, project_id: str, ref: str, param: str) -> Loaded:
        name, _, number = ref.removeprefix(DATASET_PREFIX).partition("@")
        if not name or (number and not number.isdigit()):
            raise InvalidRequest(
                f"cannot read {ref!r}; write {DATASET_PREFIX}NAME or {DATASET_PREFIX}NAME@VERSION",
                param=param,
            )
        if self.datasets is None:
            raise InvalidRequest("datasets are not available in this process", param=param)
        version, items = self.datasets.items(project_id, name, int(number) if number else None)
        pinned = f"{DATASET_PREFIX}{name}@{version}"
        examples: list[Example] = []
        for item in items:
            messages = item.input.get("messages")
            expected = item.expected
            if not isinstance(expected, str) or not expected.strip():
                raise InvalidRequest(
                    f"{pinned} item {item.id} has no expected answer to learn; give it one, "
                    "or build the dataset from traces with their outputs as expected",
                    param=param,
                    code="invalid_training_item",
                )
            line = orjson.dumps(
                {"messages": [*(messages or []), {"role": "assistant", "content": expected}]}
            )
            try:
                (example,) = parse_examples(line, param=param)
            except InvalidRequest as error:
                raise InvalidRequest(
                    f"{pinned} item {item.id}: {error.message.removeprefix('line 1: ')}",
                    param=param,
                    code="invalid_training_item",
                ) from None
            examples.append(Example(len(examples) + 1, example.messages))
        return Loaded(pinned, examples)
