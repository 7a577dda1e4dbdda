"""The indirect-injection generator: reproducible, marked, paired, and split for held-out use."""

from __future__ import annotations

from training.guard.indirect import CARRIERS, generate


def test_the_same_seed_gives_the_same_rows() -> None:
    assert generate("train", per_carrier=20, quoted=10) == generate(
        "train", per_carrier=20, quoted=10
    )


def test_every_row_is_marked_synthetic_with_its_split_and_role() -> None:
    rows = generate("heldout", per_carrier=10, quoted=10)
    assert {r["synthetic"] for r in rows} == {True}
    assert {r["split"] for r in rows} == {"heldout"}
    assert {r["carrier"] for r in rows} == set(CARRIERS)
    roles = {r["carrier"]: r["role"] for r in rows if "quoted" not in r["source"]}
    assert roles == {"email": "document", "web": "document", "passage": "document", "tool": "tool"}


def test_each_attack_is_planted_in_a_carrier_that_also_appears_clean() -> None:
    rows = generate("train", per_carrier=30, quoted=0)
    clean = [r["text"] for r in rows if r["label"] == 0]
    attacked = [r["text"] for r in rows if r["label"] == 1]
    assert len(clean) > 50
    assert len(attacked) > 50
    # An attacked carrier is its clean twin plus the planted text: they share a prefix or
    # a suffix of real length.
    paired = sum(
        1 for a in attacked if any(a.startswith(c[:40]) or a.endswith(c[-25:]) for c in clean)
    )
    assert paired / len(attacked) > 0.9


def test_held_out_attacks_are_worded_unlike_the_training_half() -> None:
    def openings(split: str) -> set[str]:
        rows = generate(split, per_carrier=60, quoted=0)  # type: ignore[arg-type]
        clean = {r["text"] for r in rows if r["label"] == 0}
        return {r["text"] for r in rows if r["label"] == 1} - clean

    train, heldout = openings("train"), openings("heldout")
    assert not train & heldout
    assert "ignore all previous instructions" in " ".join(train).lower()
    assert "ignore all previous instructions" not in " ".join(heldout).lower()
