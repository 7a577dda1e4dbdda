"""The shipped injection artifact: loads, is small, and its card records its measurements."""

from __future__ import annotations

from importlib import resources

import pytest

from keel.guard.features import NGRAM_FEATURES, WORD_FEATURES
from keel.guard.model import DEFAULT_VERSION, InjectionModel

TARGET_F1 = 0.90
TARGET_FPR = 0.03


@pytest.fixture(scope="module")
def model() -> InjectionModel:
    return InjectionModel.load()


def test_the_artifact_is_small_and_versioned(model: InjectionModel) -> None:
    weights = resources.files("keel.guard") / "models" / f"{DEFAULT_VERSION}.npz"
    assert weights.is_file()
    assert len(weights.read_bytes()) < 3 * 1024 * 1024
    assert model.card["name"] == DEFAULT_VERSION
    assert 0.0 < model.threshold < 1.0
    assert 0.0 <= model.fast_skip_below < model.threshold


def test_the_card_names_its_data_and_selection(model: InjectionModel) -> None:
    data = model.card["data"]
    assert len(data["train"]["sha256"]) == 64
    assert len(data["validation"]["sha256"]) == 64
    assert "GroupKFold" in model.card["selection"]["cv"]
    assert model.card["selection"]["threshold_rule"].startswith("best out-of-fold F1")


def test_the_card_describes_the_features_the_code_builds(model: InjectionModel) -> None:
    features = model.card["features"]
    assert features["word_ngrams"]["n_features"] == WORD_FEATURES
    assert model.idf.shape == (NGRAM_FEATURES,)
    assert model.full.w_ngram.shape == model.fast.w_ngram.shape == (NGRAM_FEATURES,)


def test_validation_false_positive_rate_meets_the_target(model: InjectionModel) -> None:
    validation = model.card["metrics"]["validation"]
    assert validation["fpr"] <= TARGET_FPR
    assert model.card["metrics"]["validation_notinject_fpr"] <= 0.05


def test_validation_f1_meets_the_target(model: InjectionModel) -> None:
    assert model.card["metrics"]["validation"]["f1"] >= TARGET_F1
