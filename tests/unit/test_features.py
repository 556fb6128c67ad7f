"""The pipeline's pieces: every model family gives calibrated, ordered scores; vocabularies pickle compactly."""

from __future__ import annotations

import pickle
import re
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from filter.channels import (
    EMPTY_MARK,
    FAVOUR_CUE_FEATURES,
    STRUCTURE_FEATURES,
    asked_for,
    char_text,
    favour_cues,
    link_domains,
    structure,
)
from filter.features import FAMILIES, CompactTfidfVectorizer, build_pipeline
from filter.message import Attachment, ParsedMessage
from filter.train import (
    DEFAULT_REPEATS,
    FALLBACK_THRESHOLD,
    choose_thresholds,
    cv_metrics,
    group_partitions,
    operating_points,
    strict_threshold,
)

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


def test_group_partitions_keep_every_group_whole_and_start_with_group_kfold() -> None:
    from sklearn.model_selection import GroupKFold

    rng = np.random.default_rng(1)
    groups = [f"box{int(g)}" for g in rng.integers(0, 40, 600)]
    partitions = group_partitions(groups, n_splits=5, repeats=3)
    assert len(partitions) == 3
    first = np.zeros(len(groups), dtype=np.int64)
    for fold, (_, test_idx) in enumerate(GroupKFold(n_splits=5).split(groups, groups=groups)):
        first[test_idx] = fold
    assert (partitions[0] == first).all()
    group_array = np.asarray(groups)
    for folds in partitions:
        assert sorted(set(folds.tolist())) == [0, 1, 2, 3, 4], "no fold is empty"
        for name in set(groups):
            assert len(set(folds[group_array == name].tolist())) == 1, f"{name} is split across folds"
    assert not (partitions[1] == partitions[2]).all(), "the repeats are different partitions"
    assert all((a == b).all() for a, b in zip(partitions, group_partitions(groups, n_splits=5, repeats=3), strict=True))


def test_group_partitions_with_fewer_groups_than_folds_use_one_fold_per_group() -> None:
    partitions = group_partitions(["a", "b", "a", "b", "b"], n_splits=5, repeats=2)
    for folds in partitions:
        assert sorted(set(folds.tolist())) == [0, 1]


def test_thresholds_are_chosen_on_every_partition_and_figures_come_from_the_first() -> None:
    rng = np.random.default_rng(2)
    truth = np.array([1] * 60 + [0] * 400)
    y, _ = _one_label(truth, truth.astype(float))
    runs = [
        np.stack([np.clip(truth * 0.5 + rng.uniform(0.0, 0.5, len(truth)), 0, 1), np.zeros(len(truth))], axis=1)
        for _ in range(3)
    ]
    metrics = cv_metrics(y, runs[0], more_scores=runs[1:])
    pooled = operating_points(np.concatenate([y] * 3), np.concatenate(runs))[0]
    assert metrics["thresholds"] == pooled
    assert "3 partitions" in metrics["threshold_rule"]
    label = metrics["article_share"]
    assert label["positives"] == 60, "figures count each message once"
    predicted = runs[0][:, 0] >= pooled["article_share"]
    assert label["at_threshold"]["tp"] == int((predicted & (truth == 1)).sum())


def test_the_command_line_default_of_repeats_is_trainings() -> None:
    from filter import cli

    assert cli._DEFAULT_REPEATS == DEFAULT_REPEATS


def _one_label(truth: np.ndarray[Any, Any], scores: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], ...]:
    """A second label with no positives and no scores, beside ``truth`` and ``scores``."""
    return np.stack([truth, np.zeros_like(truth)], axis=1), np.stack([scores, np.zeros_like(scores)], axis=1)


def test_thresholds_keep_flagged_ordinary_mail_under_the_cap_in_every_set() -> None:
    rng = np.random.default_rng(0)
    truth = np.array([1] * 40 + [0] * 400)
    scores = np.concatenate([rng.uniform(0.5, 1.0, 40), rng.uniform(0.0, 0.4, 300), rng.uniform(0.3, 0.9, 100)])
    y, both = _one_label(truth, scores)
    sets = ["enron"] * 340 + ["written fr"] * 100
    threshold, unused = choose_thresholds(y, both, sets=sets, cap=0.02).thresholds
    assert (scores[340:] >= threshold).mean() <= 0.02
    assert unused == FALLBACK_THRESHOLD
    loose, _ = choose_thresholds(y, both, cap=0.2).thresholds
    assert loose < threshold


def test_the_cap_counts_mail_flagged_by_either_label_once() -> None:
    y = np.array([[1, 0]] * 50 + [[0, 1]] * 50 + [[0, 0]] * 400)
    scores = np.array([[0.9, 0.0]] * 50 + [[0.0, 0.9]] * 50 + [[0.95, 0.95]] * 12 + [[0.1, 0.1]] * 388)
    (article, favour), reason, _ = choose_thresholds(y, scores, cap=0.03)
    assert article <= 0.9 and favour <= 0.9, reason
    flagged = (scores[100:, 0] >= article) | (scores[100:, 1] >= favour)
    assert flagged.mean() == pytest.approx(0.03)


def test_thresholds_fall_back_when_none_meets_the_cap() -> None:
    truth = np.array([1] * 10 + [0] * 100)
    scores = np.array([0.9] * 10 + [0.95] * 100)
    y, both = _one_label(truth, scores)
    choice = choose_thresholds(y, both, cap=0.01)
    assert choice.fallback and choice.thresholds == (FALLBACK_THRESHOLD, FALLBACK_THRESHOLD)


def _two_languages() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], list[str]]:
    """English positives spread from 0.4 up with quiet ordinary mail; French ordinary mail reaching 0.8."""
    rng = np.random.default_rng(1)
    article = np.concatenate(
        [rng.uniform(0.4, 1.0, 60), rng.uniform(0.0, 0.35, 600), rng.uniform(0.85, 1.0, 40), rng.uniform(0.0, 0.8, 100)]
    )
    y, scores = _one_label(np.array([1] * 60 + [0] * 600 + [1] * 40 + [0] * 100), article)
    return y, scores, ["en"] * 660 + ["fr"] * 140


def test_a_language_whose_ordinary_mail_scores_higher_gets_its_own_threshold() -> None:
    y, scores, languages = _two_languages()
    thresholds, _, offsets = operating_points(y, scores, languages=languages, sources=languages)
    assert set(offsets) == {"fr"} and set(offsets["fr"]) == {"article_share"} and offsets["fr"]["article_share"] < 0
    metrics = cv_metrics(y, scores, languages=languages, sources=languages)
    one_threshold = cv_metrics(y, scores, sources=languages)
    assert metrics["language_offsets"] == offsets and metrics["thresholds"] == thresholds
    assert metrics["thresholds"]["article_share"] < one_threshold["thresholds"]["article_share"]
    english_f1 = metrics["by_language"]["en"]["article_share"]["at_threshold"]["f1"]
    assert english_f1 > one_threshold["article_share"]["at_threshold"]["f1"]
    assert metrics["by_language"]["fr"]["ordinary_flagged"] <= 0.02


def test_mail_too_short_to_tell_its_language_gets_no_point_of_its_own() -> None:
    y, scores, languages = _two_languages()
    unknown = [lang.replace("fr", "unknown") for lang in languages]
    assert operating_points(y, scores, languages=unknown)[2] == {}


def test_strict_threshold_reaches_the_target_precision() -> None:
    truth = np.array([1] * 20 + [0] * 80)
    scores = np.concatenate([np.linspace(0.5, 1.0, 20), np.linspace(0.0, 0.7, 80)])
    threshold, _ = strict_threshold(truth, scores, target=0.95)
    predicted = scores >= threshold
    assert (truth[predicted] == 1).mean() >= 0.95


def _column(name: str, **fields: Any) -> float:
    row = structure([ParsedMessage(**fields)])
    return float(row[0, STRUCTURE_FEATURES.index(name)])


def test_statistics_of_no_messages_are_an_empty_float32_matrix() -> None:
    rows = structure([])
    assert rows.shape == (0, len(STRUCTURE_FEATURES)) and rows.dtype == np.float32


def test_a_link_with_fewer_than_twelve_other_words_is_a_link_only_message() -> None:
    words = " ".join(f"w{n}" for n in range(12))
    link = ("https://example.org/a",)
    assert _column("link_only", own_text=f"{words[:-4]} https://example.org/a", links=link) == 1.0
    assert _column("link_only", own_text=f"{words} https://example.org/a", links=link) == 0.0
    assert _column("link_only", own_text=words[:-4]) == 0.0


def test_links_in_the_own_text_are_counted_even_when_none_was_kept() -> None:
    assert _column("own_links_log", own_text="see http://x and http://y") == pytest.approx(np.log1p(2) / 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Copyright 2001 Reuters. All rights reserved.", 0.75),
        ("By John Smith\nBY ANN LEE and by bob", 0.5),
        ("© Le Monde, tous droits réservés", 0.75),
        ("Par Marie Dupont, Les Echos, (c) 2001, (C) 1999", 1.0),
        ("no press here", 0.0),
    ],
)
def test_news_markers_count_press_words_and_bylines(text: str, expected: float) -> None:
    assert _column("news_markers_own", own_text=text) == expected
    assert _column("news_markers_forwarded", forwarded_text=text) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://www.Example.ORG/path?q=1#top",
        "HTTP://user:secret@news.example.com:8080/a",
        "http://a@b@c.example.net",
        "https://example.org",
        "http://:80/x",
        "http://[2001:db8::1]:8080/x",
        "http://[broken/x",
        "https://exämple.de/a",
        "httpſ://example.org/a",
        "http://exa\tmple.org/a",
    ],
)
def test_link_domains_read_each_host_as_urlsplit_does(url: str) -> None:
    try:
        host = (urlsplit(url).hostname or "").lower()
        expected = "dom_" + re.sub(r"[^a-z0-9]+", "_", host.removeprefix("www."))[:60]
    except ValueError:
        expected = "dom_invalid"
    assert link_domains([ParsedMessage(links=(url,))]) == [expected]


@pytest.mark.parametrize(
    ("own", "flag"),
    [
        ("As promised, the piece on rail freight.", 1.0),
        ("It was promised long ago.", 0.0),
        ("Voici le lien demandé.", 1.0),
        ("Voici ile lien demandé.", 0.0),
        ("Comme convenu, le rapport.", 1.0),
        ("Encomme convenu", 0.0),
    ],
)
def test_the_sender_saying_it_was_asked_for_counts_only_from_the_start_of_a_word(own: str, flag: float) -> None:
    assert asked_for([ParsedMessage(own_text=own)])[0, 0] == flag


def test_character_text_is_a_placeholder_for_english_mail_only() -> None:
    texts = char_text(
        [
            ParsedMessage(subject="Hello", own_text="See https://example.com/a", language=language)
            for language in ("en", "fr", "unknown")
        ]
    )
    assert texts == [EMPTY_MARK, "Hello\nSee  ", "Hello\nSee  "]


def _cues(**fields: Any) -> dict[str, float]:
    row = favour_cues([ParsedMessage(**fields)])
    return dict(zip(FAVOUR_CUE_FEATURES, row[0].tolist(), strict=True))


def test_favour_cues_of_no_messages_are_an_empty_float32_matrix() -> None:
    rows = favour_cues([])
    assert rows.shape == (0, len(FAVOUR_CUE_FEATURES)) and rows.dtype == np.float32


def test_an_ask_about_a_job_in_one_sentence_is_a_favour_cue() -> None:
    cues = _cues(own_text="I was laid off last week. If you hear of any openings, please let me know.", language="en")
    assert cues["favour_topics"] == 0.5  # "laid off", "opening"
    assert cues["asks"] == 0.75 and cues["asks_about_topic"] == 0.5  # "if you hear", "please", "let me know"


def test_a_work_request_and_a_resume_in_separate_sentences_are_not_an_ask_about_a_topic() -> None:
    cues = _cues(own_text="Please send the Q3 numbers today.\nMy resume is attached", language="en")
    assert cues["favour_topics"] == 0.25 and cues["asks"] == 0.25
    assert cues["asks_about_topic"] == 0.0


def test_a_question_mark_asks_in_the_sentence_it_ends() -> None:
    assert _cues(own_text="Any advice for a new graduate?", language="en")["asks_about_topic"] == 0.5
    assert _cues(own_text="Any news? My advice: wait.", language="en")["asks_about_topic"] == 0.0


def test_favour_cues_read_each_language_in_its_own_words() -> None:
    french = "Pourriez-vous me présenter à votre DRH ? Je cherche un emploi."
    assert _cues(own_text=french, language="fr")["asks_about_topic"] == 0.5
    assert _cues(own_text=french, language="en")["asks_about_topic"] == 0.0
    assert _cues(own_text=french, language="unknown")["asks_about_topic"] == 0.5


@pytest.mark.parametrize(
    ("own_text", "language", "expected"),
    [
        ("I'm a recruiter at Lumen. We're hiring; we pay a referral bonus.", "en", 1.0),
        ("Notre client, une PME lyonnaise, recrute un directeur financier.", "fr", 0.5),
        ("I was laid off. Do you know a good recruiter?", "en", 0.5),
        ("Could you introduce me to your head of sales?", "en", 0.0),
    ],
)
def test_recruiting_counts_a_recruiter_s_words_in_either_language(
    own_text: str, language: str, expected: float
) -> None:
    assert _cues(own_text=own_text, language=language)["recruiting"] == expected


def test_favour_topics_in_a_forwarded_plea_count_apart_from_the_own_text() -> None:
    cues = _cues(own_text="See below.", forwarded_text="My son needs an internship. Any contact?", language="en")
    assert cues["favour_topics"] == 0.0 and cues["favour_topics_forwarded"] == 0.75


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"own_text": "As discussed, attached is my resume. Take care"}, 1.0),
        ({"own_text": "Ci-joint mon CV, merci d'avance"}, 1.0),
        ({"own_text": "Here's that document.\n - JDoeResume.doc"}, 1.0),
        ({"own_text": "I am attaching a copy of my updated resume."}, 1.0),
        ({"own_text": "Voici mon dernier CV."}, 1.0),
        ({"own_text": "Please see the attached.\n<<Resume Cover Letter 1024.doc>>"}, 1.0),
        ({"own_text": "Here it is in plain text.\n<<jdoe_resume.rtf>>"}, 1.0),
        ({"own_text": "Pasted below, and as a file: kim-cv.txt"}, 1.0),
        ({"own_text": "My notes on the resume of talks are attached"}, 0.0),
        ({"own_text": "See attached", "attachments": (Attachment("application/pdf", "Jane_CV.pdf", 900),)}, 1.0),
        ({"own_text": "Please find my resume attached.", "subject": "Application for Analyst (REQ-1149)"}, 0.0),
        ({"own_text": "My candidate's resume is attached for the trading role"}, 0.0),
        ({"own_text": "Here is my CV as you suggested", "quoted_text": "> Send me your CV and I'll pass it on"}, 0.0),
        ({"own_text": "The resume of the meeting is attached"}, 0.0),
    ],
)
def test_own_cv_is_a_cv_sent_outside_an_application_the_owner_did_not_ask_for(
    fields: dict[str, Any], expected: float
) -> None:
    assert _cues(language="en", **fields)["own_cv"] == expected


def test_a_language_with_too_few_positives_of_a_label_joins_the_base_choice_under_the_cap() -> None:
    rng = np.random.default_rng(2)
    # English: 200 ordinary, 60 positives of each label, well apart. French: 60 ordinary and 10
    # article shares, all scoring 0.85-0.95 for article_share: judged at the base point, French
    # ordinary mail must count towards the cap.
    en_y = np.array([[0, 0]] * 200 + [[1, 0]] * 60 + [[0, 1]] * 60)
    en_s = np.concatenate(
        [
            np.column_stack([rng.uniform(0, 0.3, 200), rng.uniform(0, 0.3, 200)]),
            np.column_stack([rng.uniform(0.7, 1, 60), rng.uniform(0, 0.3, 60)]),
            np.column_stack([rng.uniform(0, 0.3, 60), rng.uniform(0.7, 1, 60)]),
        ]
    )
    fr_y = np.array([[0, 0]] * 60 + [[1, 0]] * 10)
    fr_s = np.column_stack([rng.uniform(0.85, 0.95, 70), rng.uniform(0, 0.3, 70)])
    y, scores = np.concatenate([en_y, fr_y]), np.concatenate([en_s, fr_s])
    languages = ["en"] * 320 + ["fr"] * 70
    metrics = cv_metrics(y, scores, languages=languages)
    assert metrics["language_offsets"] == {}
    assert metrics["by_language"]["fr"]["ordinary_flagged"] <= 0.02
