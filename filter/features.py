"""Importable scikit-learn transformers: a list of ParsedMessage -> one probability per label.

Feature extraction lives inside the Pipeline, so that training and serving
cannot drift: the bundle pickles ``build_pipeline()``'s result, and every
function it calls is a module-level name here (``FunctionTransformer`` needs
importable functions to pickle).

The shape follows scikit-learn's ``plot_column_transformer`` example for
mail: each text channel is vectorised apart (subject, the sender's own text,
what they forwarded, the domains they link to, character n-grams of subject
and own text), and text statistics sit beside them. Every channel is cut to
a fixed length first, because character n-grams are the cost of scoring.

Two things are deliberately left out. Quoted replies are context only
(LABELS.md), so only their length is a feature; a channel for their words
made cross-validated results slightly worse. Whether a message has an HTML
part is not a feature either: in the training corpora it says where a
message comes from far more than what it is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer

from filter.config import LABELS
from filter.message import ParsedMessage

# A pickled pipeline calls the functions of this module by name, so changing what they compute
# silently changes a shipped model. Bump this whenever a change here alters the features of an
# already fitted pipeline; ModelBundle refuses a bundle built with another version.
FEATURE_VERSION = 1

OWN_CHARS = 3000
FORWARDED_CHARS = 3000
CHAR_NGRAM_CHARS = 400
NEWS_MARKER_CHARS = 1500

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
    "robot_sender",
    "news_markers_own",
    "news_markers_forwarded",
    "lang_en",
    "lang_fr",
    "lang_unknown",
)

_URL = re.compile(r"https?://\S+", re.I)

# Local parts of addresses that robots send from: what such a sender sends is bulk, whatever it contains.
_ROBOT_SENDER = re.compile(
    r"(?:^|[._-])(?:no-?reply|do-?not-?reply|newsletters?|news|rss\w*|digest|alerts?|notifications?|mailer"
    r"|bounces?|announce\w*|marketing|updates?|webmaster|feedback|deals|offers|info|list\w*|owner-\S+)"
    r"(?:$|[._-])",
    re.I,
)
# What a press article looks like when pasted into a mail: wire services, copyright lines, bylines.
# Counted with str.count on lower-cased text, which is far cheaper than one regex alternation.
_NEWS_WORDS = (
    "copyright",
    "all rights reserved",
    "associated press",
    "reuters",
    "dow jones",
    "newswire",
    "staff writer",
    "(c) 19",
    "(c) 20",
    "©",
    "tous droits réservés",
    "le monde",
    "les echos",
    "le figaro",
)
_BYLINE = re.compile(r"\b(?:By|BY|Par|PAR) [A-Z][A-Za-z]+ [A-Z][A-Za-z]+")

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
        own = m.own_text[:OWN_CHARS]
        without_links, own_links = _URL.subn(" ", own)
        own_words = len(without_links.split())
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
            min(own.count("?"), 5) / 5,
            float(m.bulk.is_bulk),
            float(bool(m.bulk.list_id)),
            _log_scale(len(m.attachments), 3),
            _log_scale(m.to_count, 5),
            float(m.to_count >= 10),
            float(m.is_reply),
            float(m.is_forward),
            float(bool(m.forwarded_text)),
            float(bool(_ROBOT_SENDER.search(m.sender.partition("@")[0]))),
            _news_markers(own),
            _news_markers(m.forwarded_text),
            float(m.language == "en"),
            float(m.language == "fr"),
            float(m.language == "unknown"),
        )
    return rows


def _news_markers(text: str) -> float:
    """How much the start of a text looks like a pasted press article: 0, 0.25, ... 1 (four markers or more)."""
    head = text[:NEWS_MARKER_CHARS]
    lower = head.lower()
    found = sum(lower.count(word) for word in _NEWS_WORDS) + len(_BYLINE.findall(head))
    return min(found, 4) / 4


def _log_scale(value: float, scale: float) -> float:
    return min(math.log1p(max(value, 0)) / scale, 1.5)


# ---------------------------------------------------------------------------
# The classifier: one calibrated linear model per label


class PerLabelClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """One Platt-calibrated logistic regression per label; ``predict_proba`` gives P(label) per column.

    Labels are independent (a message can be both, LABELS.md), so each gets
    its own model. Classes are weighted to balance the rare positives, and
    the scores are then calibrated with a sigmoid (Platt scaling) fitted on
    cross-validated decision values, as ``CalibratedClassifierCV(ensemble=
    False)`` does, but with folds that keep each mailbox whole when groups
    are given: decision values for people the model has seen are
    optimistic, and a sigmoid fitted on them is overconfident on new
    senders. Only the resulting numbers are kept (``coef_``,
    ``intercept_``, ``scale_``, ``offset_``), so that scoring is one sparse
    product and a sigmoid, without per-call estimator overhead. A label
    with no positives (or no negatives) gets a constant probability.
    """

    def __init__(self, labels: Sequence[str] = LABELS, C: float = 32.0, calibration_folds: int = 3) -> None:
        self.labels = labels
        self.C = C
        self.calibration_folds = calibration_folds

    def fit(self, x: Any, y: Any, sample_weight: Any = None, groups: Any = None) -> PerLabelClassifier:
        """Fit; ``groups`` (one mailbox id per row) makes the calibration folds keep each mailbox whole."""
        targets = np.asarray(y, dtype=np.int8)
        if targets.ndim != 2 or targets.shape[1] != len(self.labels):
            raise ValueError(f"expected y of shape (n, {len(self.labels)}), got {targets.shape}")
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        n_labels, n_features = targets.shape[1], x.shape[1]
        self.coef_ = np.zeros((n_labels, n_features), dtype=np.float64)
        self.intercept_ = np.zeros(n_labels, dtype=np.float64)
        self.scale_ = np.zeros(n_labels, dtype=np.float64)
        self.offset_ = np.zeros(n_labels, dtype=np.float64)
        for j, column in enumerate(targets.T):
            positives = int(column.sum())
            negatives = len(column) - positives
            if positives == 0 or negatives == 0:
                self.offset_[j] = 30.0 if positives else -30.0
                continue
            base = LogisticRegression(C=self.C, class_weight="balanced", solver="liblinear", max_iter=1000)
            folds = min(self.calibration_folds, positives, negatives)
            params = {} if weights is None else {"sample_weight": weights}
            if groups is not None:
                folds = min(folds, len(set(np.asarray(groups)[column == 1].tolist())))
            if folds >= 2:
                splitter: Any = (
                    StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
                    if groups is None
                    else StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
                )
                decision = cross_val_predict(
                    base, x, column, groups=groups, cv=splitter, method="decision_function", params=params
                )
                platt = LogisticRegression(C=1e6, solver="lbfgs").fit(decision.reshape(-1, 1), column)
                self.scale_[j], self.offset_[j] = float(platt.coef_[0, 0]), float(platt.intercept_[0])
            else:
                self.scale_[j] = 1.0
            base.fit(x, column, **params)
            self.coef_[j] = base.coef_[0]
            self.intercept_[j] = base.intercept_[0]
        self.classes_ = np.array(self.labels)
        return self

    def decision_function(self, x: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.asarray(x @ self.coef_.T, dtype=np.float64) + self.intercept_

    def predict_proba(self, x: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
        return expit(self.decision_function(x) * self.scale_ + self.offset_)  # type: ignore[no-any-return]

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
    C: float = 32.0,
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
            ("domains", make_pipeline(FunctionTransformer(link_domains), _words(3000, (1, 1)))),
            (
                # 3-4 rather than 3-5 characters: the same cross-validated average
                # precision on the first model's data, and a third less scoring time.
                "chars",
                make_pipeline(
                    FunctionTransformer(char_text),
                    TfidfVectorizer(
                        analyzer="char_wb",
                        ngram_range=(3, 4),
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
