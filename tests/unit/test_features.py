"""The pipeline's pieces: every model family gives calibrated, ordered scores; vocabularies pickle compactly."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from filter.features import FAMILIES, CompactTfidfVectorizer, build_pipeline
from filter.message import ParsedMessage
from filter.train import FALLBACK_THRESHOLD, choose_threshold, cv_metrics, strict_threshold

SHARE = "Thought you might find this article interesting: ports automate night shifts, case {n}"
REQUEST = "Could you introduce me to your HR team? I am looking for a job, case {n}"
WORK = "Please send the Q3 numbers before the review meeting, item {n}"


def _messages() -> tuple[list[ParsedMessage], np.ndarray]:
    messages, y = [], []
    for n in range(15):
        for text, labels in ((SHARE, [1, 0]), (REQUEST, [0, 1]), (WORK, [0, 0])):
            messages.append(ParsedMessage(subject="note", own_text=text.format(n=n), to_count=1, language="en"))
            y.append(labels)
    return messages, np.array(y)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_scores_its_label_above_the_others(family: str) -> None:
    messages, y = _messages()
    pipeline = build_pipeline(family=family, own_features=300, forwarded_features=50, char_features=300)
    pipeline.fit(messages, y, classify__groups=[f"g{i % 9}" for i in range(len(messages))])
    share, request, work = pipeline.predict_proba(messages[:3])
    assert share[0] > work[0] and share[0] > request[0]
    assert request[1] > work[1] and request[1] > share[1]
    assert np.all((share >= 0) & (share <= 1))


def test_an_unknown_family_is_refused_when_fitting() -> None:
    messages, y = _messages()
    with pytest.raises(ValueError, match="family must be one of"):
        build_pipeline(family="forest").fit(messages, y)


def test_vocabulary_pickles_as_one_string_and_transforms_the_same() -> None:
    docs = ["the port automates night shifts", "rail freight grows again", "night trains return to the port"]
    vectoriser = CompactTfidfVectorizer(ngram_range=(1, 2)).fit(docs)
    state = vectoriser.__getstate__()
    assert "vocabulary_" not in state and isinstance(state["terms_"], str)
    restored = pickle.loads(pickle.dumps(vectoriser))
    assert restored.vocabulary_ == vectoriser.vocabulary_
    assert (restored.transform(docs) != vectoriser.transform(docs)).nnz == 0


def test_cv_metrics_report_ordinary_mail_flagged_per_language() -> None:
    y = np.array([[1, 0], [0, 0], [0, 0], [0, 1], [0, 0]])
    scores = np.array([[0.9, 0.1], [0.95, 0.0], [0.1, 0.1], [0.0, 0.9], [0.2, 0.2]])
    metrics = cv_metrics(y, scores, languages=["en", "en", "fr", "fr", "fr"])
    flagged_en = metrics["by_language"]["en"]["ordinary_flagged"]
    assert metrics["ordinary_flagged"] == pytest.approx(1 / 3, abs=1e-3)
    assert flagged_en == 1.0
    assert metrics["by_language"]["fr"]["ordinary_flagged"] == 0.0


def test_threshold_keeps_flagged_ordinary_mail_under_the_cap_in_every_set() -> None:
    rng = np.random.default_rng(0)
    truth = np.array([1] * 40 + [0] * 400)
    scores = np.concatenate([rng.uniform(0.5, 1.0, 40), rng.uniform(0.0, 0.4, 300), rng.uniform(0.3, 0.9, 100)])
    sets = ["enron"] * 340 + ["written fr"] * 100
    threshold, _ = choose_threshold(truth, scores, sets=sets, cap=0.02)
    flagged_fr = (scores[340:] >= threshold).mean()
    assert flagged_fr <= 0.02
    loose, _ = choose_threshold(truth, scores, cap=0.2)
    assert loose < threshold


def test_threshold_falls_back_when_no_threshold_meets_the_cap() -> None:
    truth = np.array([1] * 10 + [0] * 100)
    scores = np.array([0.9] * 10 + [0.95] * 100)
    threshold, reason = choose_threshold(truth, scores, cap=0.01)
    assert threshold == FALLBACK_THRESHOLD and "fallback" in reason


def test_strict_threshold_reaches_the_target_precision() -> None:
    truth = np.array([1] * 20 + [0] * 80)
    scores = np.concatenate([np.linspace(0.5, 1.0, 20), np.linspace(0.0, 0.7, 80)])
    threshold, _ = strict_threshold(truth, scores, target=0.95)
    predicted = scores >= threshold
    assert (truth[predicted] == 1).mean() >= 0.95
