"""ModelBundle: the card is checked before the pickle is loaded; the shipped model scores sensibly."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
from tiny_model import THRESHOLDS, message, save_tiny_bundle

from filter.channels import FEATURE_VERSION
from filter.cli import language_points
from filter.errors import ModelError
from filter.message import parse_message
from filter.model import LABELS, ModelBundle, Scores, default_model_path, runtime_versions

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    return copy


def _edit_card(path: Path, **changes: object) -> None:
    card = json.loads((path / "card.json").read_text())
    card.update(changes)
    (path / "card.json").write_text(json.dumps(card))


def test_saved_bundle_loads_and_scores(bundle_dir: Path) -> None:
    bundle = ModelBundle.load(bundle_dir)
    assert bundle.labels == LABELS
    assert bundle.thresholds == {"article_share": 0.7, "favour_request": 0.6}
    assert bundle.card["sklearn"] == runtime_versions()["sklearn"]
    share, request = bundle.score(
        [
            message("Thought you might find this article interesting: ports", "article"),
            message("Could you introduce me to your HR team? I am looking for a job", "a favour"),
        ]
    )
    assert share.values["article_share"] > share.values["favour_request"]
    assert request.values["favour_request"] > request.values["article_share"]
    assert all(0.0 <= v <= 1.0 for s in (share, request) for v in s.values.values())


def test_card_records_hash_versions_and_training_summary(bundle_dir: Path) -> None:
    card = json.loads((bundle_dir / "card.json").read_text())
    assert len(card["sha256"]) == 64
    assert card["python"] == runtime_versions()["python"]
    assert card["joblib"] == runtime_versions()["joblib"]
    assert card["labels"] == list(LABELS)
    assert card["features"] == FEATURE_VERSION
    assert card["training_data"] == {"messages": 72}
    assert card["created"].endswith("+00:00")


def test_scoring_an_empty_batch_gives_nothing(bundle_dir: Path) -> None:
    assert ModelBundle.load(bundle_dir).score([]) == []


def test_tampered_model_file_is_refused(bundle_copy: Path) -> None:
    with (bundle_copy / "model.joblib").open("ab") as handle:
        handle.write(b"\x00")
    with pytest.raises(ModelError, match="sha256.*does not match the card"):
        ModelBundle.load(bundle_copy)


def test_card_from_another_sklearn_version_is_refused(bundle_copy: Path) -> None:
    _edit_card(bundle_copy, sklearn="0.24.2")
    with pytest.raises(ModelError) as refused:
        ModelBundle.load(bundle_copy)
    message = str(refused.value)
    assert "scikit-learn 0.24.2" in message
    assert f"scikit-learn {runtime_versions()['sklearn']}" in message
    assert "ployfilter train" in message
    assert "pip install 'scikit-learn==0.24.2'" in message


def test_card_from_another_joblib_version_is_refused(bundle_copy: Path) -> None:
    _edit_card(bundle_copy, joblib="0.1")
    with pytest.raises(ModelError, match="joblib 0.1"):
        ModelBundle.load(bundle_copy)


def test_card_from_other_feature_code_is_refused(bundle_copy: Path) -> None:
    _edit_card(bundle_copy, features=FEATURE_VERSION + 1)
    with pytest.raises(ModelError, match="feature code version"):
        ModelBundle.load(bundle_copy)


def test_missing_bundle_is_refused_with_a_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="retrain it with `ployfilter train`"):
        ModelBundle.load(tmp_path / "nowhere")


def test_missing_model_file_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "model.joblib").unlink()
    with pytest.raises(ModelError, match="model.joblib: missing"):
        ModelBundle.load(bundle_copy)


def test_malformed_card_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "card.json").write_text("{not json")
    with pytest.raises(ModelError, match="not JSON"):
        ModelBundle.load(bundle_copy)


def test_card_without_thresholds_is_refused(bundle_copy: Path) -> None:
    _edit_card(bundle_copy, thresholds={"article_share": 2})
    with pytest.raises(ModelError, match="thresholds"):
        ModelBundle.load(bundle_copy)


def test_language_offsets_move_only_that_languages_log_odds(bundle_dir: Path, bundle_copy: Path) -> None:
    _edit_card(bundle_copy, language_offsets={"fr": {"article_share": -2.0}})
    english = message("Thought you might find this article interesting: ports", "article")
    french = dataclasses.replace(english, language="fr")
    plain_en, plain_fr = ModelBundle.load(bundle_dir).score([english, french])
    shifted_en, shifted_fr = ModelBundle.load(bundle_copy).score([english, french])
    assert shifted_en == plain_en
    assert shifted_fr.values["favour_request"] == plain_fr.values["favour_request"]
    assert logit(shifted_fr.values["article_share"]) == pytest.approx(logit(plain_fr.values["article_share"]) - 2.0)


def test_check_config_says_what_a_threshold_means_for_a_shifted_language(bundle_copy: Path) -> None:
    _edit_card(bundle_copy, language_offsets={"fr": {"article_share": -math.log(9)}})
    bundle = ModelBundle.load(bundle_copy)
    points = language_points(bundle, {"article_share": 0.5, "favour_request": 0.6})
    assert points == {"fr": "article_share 0.50 acts as 0.90"}


@pytest.mark.parametrize(
    "offsets",
    [{"fr": {"article_share": "low"}}, {"fr": {"nonsense": 1.0}}, {"fr": {"article_share": 99.0}}, ["fr"]],
)
def test_card_with_malformed_language_offsets_is_refused(bundle_copy: Path, offsets: object) -> None:
    _edit_card(bundle_copy, language_offsets=offsets)
    with pytest.raises(ModelError, match="language_offsets"):
        ModelBundle.load(bundle_copy)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_saving_without_a_threshold_per_label_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="favour_request"):
        ModelBundle.save(object(), tmp_path, thresholds={"article_share": 0.5}, metrics={}, training_summary={})


def test_scores_give_the_labels_at_their_thresholds() -> None:
    scores = Scores({"article_share": 0.91, "favour_request": 0.4})
    assert scores.labels_at({"article_share": 0.9, "favour_request": 0.5}) == ("article_share",)
    assert scores.labels_at({"article_share": 0.95, "favour_request": 0.3}) == ("favour_request",)
    assert scores.labels_at({}) == ()


def test_default_model_path_is_models_default_in_the_repository() -> None:
    assert default_model_path() == Path(__file__).resolve().parents[2] / "models" / "default"


def test_shipped_model_scores_a_french_favour_request_above_a_newsletter() -> None:
    bundle = ModelBundle.load(default_model_path())
    request = parse_message((DATA / "favour_request_fr.eml").read_bytes())
    newsletter = parse_message((DATA / "newsletter_en.eml").read_bytes())
    request_scores, newsletter_scores = bundle.score([request, newsletter])
    assert request_scores.values["favour_request"] > newsletter_scores.values["favour_request"]
    assert request_scores.values["favour_request"] >= bundle.thresholds["favour_request"]
    assert newsletter_scores.labels_at(bundle.thresholds) == ()


@pytest.mark.parametrize("labels", [["article_share"], ["favour_request", "article_share"], ["a", "b"]])
def test_card_with_other_labels_is_refused(bundle_copy: Path, labels: list[str]) -> None:
    _edit_card(bundle_copy, labels=labels)
    with pytest.raises(ModelError, match="'labels' must be"):
        ModelBundle.load(bundle_copy)


def test_the_pickle_is_unpickled_from_the_bytes_that_were_checked(
    bundle_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import joblib

    loaded: list[object] = []
    real_load = joblib.load

    def load(source: object) -> object:
        loaded.append(source)
        return real_load(source)

    monkeypatch.setattr(joblib, "load", load)
    assert ModelBundle.load(bundle_copy).pipeline is not None
    assert loaded and not isinstance(loaded[0], str | Path), "a path would be opened a second time, unchecked"


def test_a_save_that_fails_leaves_the_bundle_that_was_there_whole(
    bundle_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import joblib

    before = {p.name: p.read_bytes() for p in bundle_copy.iterdir()}
    pipeline = ModelBundle.load(bundle_copy).pipeline

    def full_disk(value: object, target: Path, **_: object) -> None:
        Path(target).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(joblib, "dump", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ModelBundle.save(pipeline, bundle_copy, thresholds=THRESHOLDS, metrics={}, training_summary={})
    assert {p.name: p.read_bytes() for p in bundle_copy.iterdir()} == before
    ModelBundle.load(bundle_copy)


def test_a_staging_folder_left_by_a_killed_save_is_cleared_by_the_next(bundle_copy: Path) -> None:
    (bundle_copy / ".saving-abc123").mkdir()
    (bundle_copy / ".saving-abc123" / "model.joblib").write_bytes(b"x" * 100)
    pipeline = ModelBundle.load(bundle_copy).pipeline
    ModelBundle.save(pipeline, bundle_copy, thresholds=THRESHOLDS, metrics={}, training_summary={})
    assert not list(bundle_copy.glob(".saving-*"))
