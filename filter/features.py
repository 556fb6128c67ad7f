"""Importable scikit-learn transformers: a list of ParsedMessage -> one probability per label.

Feature extraction lives inside the Pipeline, so that training and serving
cannot drift: the bundle pickles ``build_pipeline()``'s result, and every
function it calls is a module-level name here (``FunctionTransformer`` needs
importable functions to pickle).

The shape follows scikit-learn's ``plot_column_transformer`` example for
mail: each text channel is vectorised apart (subject, the sender's own text,
what they forwarded, what they quoted, the domains they link to, character
n-grams of subject and own text), and text statistics sit beside them.
Every channel is cut to a fixed length first, because character n-grams are
the cost of scoring.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer

from filter.config import LABELS
from filter.message import ParsedMessage

OWN_CHARS = 4000
FORWARDED_CHARS = 3000
QUOTED_CHARS = 1500
CHAR_NGRAM_CHARS = 400

STRUCTURE_FEATURES = (
    "links_log",
    "own_links_log",
    "link_only",
    "own_length_log",
    "forwarded_length_log",
    "quoted_length_log",
    "own_share",
    "question_marks",
    "bulk_headers",
    "list_id",
    "attachments_log",
    "to_count_log",
    "many_recipients",
    "is_reply",
    "is_forward",
    "has_forwarded",
    "has_html",
    "lang_en",
    "lang_fr",
    "lang_unknown",
)

_URL = re.compile(r"https?://\S+", re.I)

# Stands for an empty channel: a token of its own, so that "nothing forwarded" can be learnt
# and a vectoriser never meets a training set without any vocabulary.
EMPTY_MARK = "emptychannel"


# ---------------------------------------------------------------------------
# Channels: each maps a sequence of ParsedMessage to a list of strings


def subject_text(messages: Sequence[ParsedMessage]) -> list[str]:
    return [m.subject or EMPTY_MARK for m in messages]


def own_text(messages: Sequence[ParsedMessage]) -> list[str]:
    """The sender's own words; each link becomes the token "httplink" (its domain has a channel of its own)."""
    return [_URL.sub(" httplink ", m.own_text[:OWN_CHARS]) or EMPTY_MARK for m in messages]


def forwarded_text(messages: Sequence[ParsedMessage]) -> list[str]:
    return [_URL.sub(" httplink ", m.forwarded_text[:FORWARDED_CHARS]) or EMPTY_MARK for m in messages]


def quoted_text(messages: Sequence[ParsedMessage]) -> list[str]:
    return [_URL.sub(" httplink ", m.quoted_text[:QUOTED_CHARS]) or EMPTY_MARK for m in messages]


def char_text(messages: Sequence[ParsedMessage]) -> list[str]:
    """Subject and the start of the own text, for character n-grams (robust to spelling and inflection)."""
    return [f"{m.subject}\n{_URL.sub(' ', m.own_text[: CHAR_NGRAM_CHARS * 2])}"[:CHAR_NGRAM_CHARS] for m in messages]


def link_domains(messages: Sequence[ParsedMessage]) -> list[str]:
    """One token per linked domain ("dom_nytimes_com"), so news sites can be learnt as such."""
    return [" ".join(_domain_token(url) for url in m.links[:20]) or EMPTY_MARK for m in messages]


def _domain_token(url: str) -> str:
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return "dom_invalid"
    if host.startswith("www."):
        host = host[4:]
    return "dom_" + re.sub(r"[^a-z0-9]+", "_", host)[:60]


def structure(messages: Sequence[ParsedMessage]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Text statistics, each scaled to about [0, 1] so they sit beside tf-idf columns without a scaler."""
    rows = np.zeros((len(messages), len(STRUCTURE_FEATURES)), dtype=np.float32)
    for i, m in enumerate(messages):
        own_links = len(_URL.findall(m.own_text[:OWN_CHARS]))
        own_words = len(_URL.sub(" ", m.own_text[:OWN_CHARS]).split())
        own_len = len(m.own_text)
        forwarded_len = len(m.forwarded_text)
        rows[i] = (
            _log_scale(len(m.links), 4),
            _log_scale(own_links, 3),
            float(bool(m.links) and own_words < 12),
            _log_scale(own_len, 10),
            _log_scale(forwarded_len, 10),
            _log_scale(len(m.quoted_text), 10),
            own_len / (own_len + forwarded_len) if own_len + forwarded_len else 0.0,
            min(m.own_text[:OWN_CHARS].count("?"), 5) / 5,
            float(m.bulk.is_bulk),
            float(bool(m.bulk.list_id)),
            _log_scale(len(m.attachments), 3),
            _log_scale(m.to_count, 5),
            float(m.to_count >= 10),
            float(m.is_reply),
            float(m.is_forward),
            float(bool(m.forwarded_text)),
            float(m.has_html),
            float(m.language == "en"),
            float(m.language == "fr"),
            float(m.language == "unknown"),
        )
    return rows


def _log_scale(value: float, scale: float) -> float:
    return min(math.log1p(max(value, 0)) / scale, 1.5)


# ---------------------------------------------------------------------------
# The classifier: one calibrated linear model per label


class PerLabelClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """One calibrated logistic regression per label; ``predict_proba`` gives P(label) per column.

    Labels are independent (a message can be both, LABELS.md), so each gets
    its own model. Classes are weighted to balance the rare positives and
    the probabilities are then calibrated with a sigmoid fitted on
    cross-validated predictions (``ensemble=False`` keeps one model per
    label, which keeps the bundle small and scoring fast). A label without
    positives in the training data gets a constant zero.
    """

    def __init__(self, labels: Sequence[str] = LABELS, C: float = 4.0, calibration_folds: int = 3) -> None:
        self.labels = labels
        self.C = C
        self.calibration_folds = calibration_folds

    def fit(self, x: Any, y: Any, sample_weight: Any = None) -> PerLabelClassifier:
        targets = np.asarray(y, dtype=np.int8)
        if targets.ndim != 2 or targets.shape[1] != len(self.labels):
            raise ValueError(f"expected y of shape (n, {len(self.labels)}), got {targets.shape}")
        self.estimators_: list[Any] = []
        for column in targets.T:
            positives = int(column.sum())
            negatives = len(column) - positives
            estimator: Any
            if positives == 0 or negatives == 0:
                estimator = DummyClassifier(strategy="constant", constant=int(positives > 0))
            else:
                base = LogisticRegression(C=self.C, class_weight="balanced", solver="liblinear", max_iter=1000)
                folds = min(self.calibration_folds, positives, negatives)
                estimator = (
                    CalibratedClassifierCV(base, method="sigmoid", cv=folds, ensemble=False) if folds >= 2 else base
                )
            if sample_weight is None or isinstance(estimator, DummyClassifier):
                estimator.fit(x, column)
            else:
                estimator.fit(x, column, sample_weight=np.asarray(sample_weight, dtype=np.float64))
            self.estimators_.append(estimator)
        self.classes_ = np.array(self.labels)
        return self

    def predict_proba(self, x: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
        columns = []
        for estimator in self.estimators_:
            proba = estimator.predict_proba(x)
            classes = list(estimator.classes_)
            columns.append(proba[:, classes.index(1)] if 1 in classes else np.zeros(proba.shape[0]))
        return np.column_stack(columns) if columns else np.zeros((0, 0))

    def predict(self, x: Any) -> np.ndarray[Any, np.dtype[np.int8]]:
        return (self.predict_proba(x) >= 0.5).astype(np.int8)


# ---------------------------------------------------------------------------
# The pipeline


def _words(max_features: int, ngram_range: tuple[int, int] = (1, 2), min_df: int = 2) -> TfidfVectorizer:
    return TfidfVectorizer(
        ngram_range=ngram_range,
        max_features=max_features,
        min_df=min_df,
        sublinear_tf=True,
        strip_accents="unicode",
        dtype=np.float32,
    )


def build_pipeline(
    *,
    C: float = 4.0,
    own_features: int = 30000,
    forwarded_features: int = 15000,
    char_features: int = 30000,
    labels: Sequence[str] = LABELS,
) -> Pipeline:
    """The unfitted pipeline: ``fit(messages, y)`` with y of shape (n, len(labels)), then ``predict_proba``."""
    channels = FeatureUnion(
        [
            ("subject", make_pipeline(FunctionTransformer(subject_text), _words(5000))),
            ("own", make_pipeline(FunctionTransformer(own_text), _words(own_features))),
            ("forwarded", make_pipeline(FunctionTransformer(forwarded_text), _words(forwarded_features))),
            ("quoted", make_pipeline(FunctionTransformer(quoted_text), _words(5000, (1, 1)))),
            ("domains", make_pipeline(FunctionTransformer(link_domains), _words(3000, (1, 1)))),
            (
                "chars",
                make_pipeline(
                    FunctionTransformer(char_text),
                    TfidfVectorizer(
                        analyzer="char_wb",
                        ngram_range=(3, 5),
                        max_features=char_features,
                        min_df=3,
                        sublinear_tf=True,
                        lowercase=True,
                        dtype=np.float32,
                    ),
                ),
            ),
            ("structure", FunctionTransformer(structure)),
        ]
    )
    return Pipeline([("features", channels), ("classify", PerLabelClassifier(labels=labels, C=C))])
