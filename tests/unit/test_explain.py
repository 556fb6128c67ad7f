"""explain: each label's logit taken apart into feature contributions; ``classify --explain`` shows them."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer
from tiny_model import THRESHOLDS, message, save_tiny_bundle, training_set

import filter.explain
from filter.channels import STRUCTURE_FEATURES, own_text, structure
from filter.cli import main
from filter.explain import NAME_CHARS, Explanation, explain, feature_names
from filter.features import PerLabelClassifier
from filter.message import ParsedMessage, parse_message
from filter.model import LABELS, ModelBundle, default_model_path

LONG_WORD = "supercalifragilisticexpialidociousnessandthenalittlemore"

REQUEST_EML = b"""\
Date: Mon, 30 Mar 2026 18:20:11 +0200
From: Lucas Meyer <lucas.meyer@example.com>
To: Claire Dubois <claire.dubois@example.fr>
Subject: Could I pick your brain?
Message-ID: <CAL7mQ3xR9p2TnV5wK0cY8hBdZs4@mail.example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset="UTF-8"

Hi Claire,

We met at the alumni dinner last autumn. I'm trying to move into
procurement and would love to pick your brain over a coffee. Could you
also introduce me to someone on your team who might be hiring?

Many thanks,
Lucas
"""


def _fit_bundle(pipeline: Pipeline, extra: str = "") -> ModelBundle:
    messages, y = training_set(extra)
    pipeline.fit(messages, y)
    card = {"labels": list(LABELS), "thresholds": THRESHOLDS}
    return ModelBundle(pipeline, card, Path("in-memory"))


REQUEST = message("Could you introduce me to your HR team? I am looking for a job", "a favour")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> ModelBundle:
    return ModelBundle.load(bundle_dir)


@pytest.fixture(scope="module")
def message_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mail") / "request.eml"
    path.write_bytes(REQUEST_EML)
    return path


class _Vectoriser(TfidfVectorizer):  # type: ignore[misc]
    """A vectoriser subclass, as features.py may use."""


def _two_numbers(messages: Sequence[ParsedMessage]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array([[len(m.own_text) / 100, float("?" in m.own_text)] for m in messages])


def _assert_adds_up(explained: dict[str, Explanation], scores: dict[str, float]) -> None:
    for label, e in explained.items():
        assert e.features + e.intercept + e.offset == pytest.approx(e.logit, abs=1e-9)
        assert e.logit == pytest.approx(math.log(scores[label] / (1 - scores[label])), abs=1e-6)
        assert e.score == pytest.approx(scores[label], abs=1e-9)


def test_contributions_intercept_and_offset_add_up_to_the_logit_of_the_score(bundle: ModelBundle) -> None:
    explained = explain(bundle, REQUEST, top=1_000_000)
    _assert_adds_up(explained, dict(bundle.score([REQUEST])[0].values))
    for e in explained.values():
        assert sum(c.value for c in e.up + e.down) == pytest.approx(e.features, abs=1e-9)


def test_a_languages_shift_is_part_of_the_offset(bundle_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    card = json.loads((copy / "card.json").read_text())
    card["language_offsets"] = {"fr": {"favour_request": -1.5}}
    (copy / "card.json").write_text(json.dumps(card))
    shifted = ModelBundle.load(copy)
    french = dataclasses.replace(REQUEST, language="fr")
    explained = explain(shifted, french, top=1_000_000)
    _assert_adds_up(explained, dict(shifted.score([french])[0].values))
    plain = explain(shifted, REQUEST, top=1_000_000)
    assert explained["favour_request"].offset == pytest.approx(plain["favour_request"].offset - 1.5)
    assert explained["article_share"].offset == plain["article_share"].offset


def test_top_features_are_the_largest_pushes_in_order(bundle: ModelBundle) -> None:
    full = explain(bundle, REQUEST, top=1_000_000)
    short = explain(bundle, REQUEST, top=3)
    for label in bundle.labels:
        up = [c.value for c in short[label].up]
        down = [c.value for c in short[label].down]
        assert up == sorted(up, reverse=True) and all(v > 0 for v in up)
        assert down == sorted(down) and all(v < 0 for v in down)
        assert short[label].up == full[label].up[:3]
        assert short[label].down == full[label].down[:3]
        assert len(down) == 3
    # a request: many of its words push the favour score up (the tiny model sees few shares in English)
    assert len(short["favour_request"].up) == 3


def test_words_of_a_request_push_the_favour_score_up(bundle: ModelBundle) -> None:
    up = explain(bundle, REQUEST, top=20)["favour_request"].up
    assert ("own", "introduce") in {(c.channel, c.feature) for c in up}
    assert (up[0].channel, up[0].feature) == ("subject", "favour")


def test_features_are_named_by_their_channel(bundle: ModelBundle) -> None:
    channels = [name for name, _ in bundle.pipeline.named_steps["features"].transformer_list]
    explained = explain(bundle, REQUEST, top=1_000_000)
    shown = [c for e in explained.values() for c in e.up + e.down]
    assert {c.channel for c in shown} <= set(channels)
    assert {c.feature for c in shown if c.channel == "structure"} <= set(STRUCTURE_FEATURES)
    assert any(c.channel == "structure" for c in shown)


def test_feature_names_are_computed_once_per_bundle(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[ModelBundle] = []
    compute = filter.explain._feature_names

    def counted(bundle: ModelBundle) -> filter.explain.FeatureNames:
        calls.append(bundle)
        return compute(bundle)

    monkeypatch.setattr(filter.explain, "_feature_names", counted)
    first, second = ModelBundle.load(bundle_dir), ModelBundle.load(bundle_dir)
    explain(first, REQUEST)
    explain(first, REQUEST)
    assert feature_names(first) is feature_names(first)
    explain(second, REQUEST)
    assert calls == [first, second]


def test_any_channels_are_explained_and_long_names_are_cut() -> None:
    union = FeatureUnion(
        [
            ("words", make_pipeline(FunctionTransformer(own_text), _Vectoriser(min_df=1))),
            ("structure", FunctionTransformer(structure)),
            ("numbers", FunctionTransformer(_two_numbers)),
        ]
    )
    bundle = _fit_bundle(Pipeline([("features", union), ("classify", PerLabelClassifier())]), f" {LONG_WORD}")
    names = feature_names(bundle)
    assert names.channels == ("words", "structure", "numbers")
    assert names.lookup(int(names.starts[2]) + 1) == ("numbers", "#1")
    request = message(f"Could you introduce me to your HR team? {LONG_WORD}", "a favour")
    explained = explain(bundle, request, top=1_000_000)
    _assert_adds_up(explained, dict(bundle.score([request])[0].values))
    shown = [c for e in explained.values() for c in e.up + e.down]
    assert LONG_WORD[:NAME_CHARS] in {c.feature for c in shown if c.channel == "words"}
    assert all(len(c.feature) <= NAME_CHARS for c in shown)


def _classify(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["classify", *args]) == 0
    return capsys.readouterr().out


def test_classify_json_without_explain_is_unchanged(
    bundle: ModelBundle, bundle_dir: Path, message_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scores = bundle.score([parse_message(REQUEST_EML)])[0]
    record = json.loads(_classify(capsys, "--json", "--model", str(bundle_dir), str(message_file)))
    assert record == {
        "file": str(message_file),
        "scores": {label: round(value, 4) for label, value in scores.values.items()},
        "labels": list(scores.labels_at(bundle.thresholds)),
    }


def test_classify_json_with_explain_adds_the_explain_key(
    bundle_dir: Path, message_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = json.loads(_classify(capsys, "--json", "--explain", "--model", str(bundle_dir), str(message_file)))
    assert set(record) == {"file", "scores", "labels", "explain"}
    assert set(record["explain"]) == set(LABELS)
    for label, parts in record["explain"].items():
        assert parts["score"] == record["scores"][label]
        assert parts["features"] + parts["intercept"] + parts["offset"] == pytest.approx(parts["logit"], abs=1e-3)
        assert all(set(c) == {"channel", "feature", "contribution"} for c in parts["up"] + parts["down"])


def test_classify_text_with_explain_puts_a_block_per_label_under_each_file(
    bundle_dir: Path, message_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _classify(capsys, "--explain", "--model", str(bundle_dir), str(message_file)).splitlines()
    assert lines[0].startswith(f"{message_file}: article_share=")
    heads = [line for line in lines if line.startswith("  ") and not line.startswith("    ")]
    assert [head.split()[0] for head in heads] == list(LABELS)
    pushes = [line for line in lines if line.startswith("    ")]
    assert pushes and all(line[4] in "+-" and ":" in line for line in pushes)
    assert any(line.startswith("    + own:") for line in pushes)


def test_explain_does_not_go_with_headers(bundle_dir: Path) -> None:
    assert main(["classify", "--headers", "--explain", "--model", str(bundle_dir)]) == 2


def test_shipped_model_explains_a_written_request() -> None:
    bundle = ModelBundle.load(default_model_path())
    message = parse_message(REQUEST_EML)
    explained = explain(bundle, message)
    _assert_adds_up(explained, dict(bundle.score([message])[0].values))
    favour = explained["favour_request"]
    assert favour.up and all(len(c.feature) <= NAME_CHARS for c in favour.up + favour.down)
    channels = {name for name, _ in bundle.pipeline.named_steps["features"].transformer_list}
    assert {c.channel for c in favour.up + favour.down} <= channels
