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
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC

from filter.config import LABELS
from filter.message import ParsedMessage

# A pickled pipeline calls the functions of this module by name, so changing what they compute
# silently changes a shipped model. Bump this whenever a change here alters the features of an
# already fitted pipeline; ModelBundle refuses a bundle built with another version.
FEATURE_VERSION = 2

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
# The owner's own request, visible in the quoted part of a reply: "could you send me that piece?".
# Matched on lower-cased text: a third of the time of re.I for this many alternatives.
# An article or link sent because the recipient asked for it is not a share (LABELS.md).
_ASKED_FOR = re.compile(
    r"(?:could|can|would|will) you (?:please )?(?:send|forward|share|dig up|find)"
    r"|(?:send|forward|pass) (?:me|it|that|this|over|along)\b"
    r"|do you (?:still )?have (?:the|that|a) (?:link|article|piece|paper|report|study)"
    r"|(?:what|where) (?:was|is) (?:the|that) (?:link|article|piece)"
    r"|(?:envoie|envoyer|transf[eé]rer?|transmets|partager?)[- ](?:moi|le|la|les|me)\b"
    r"|(?:m'|me l'|me les |me )(?:envoyer|envoies|transmettre|transf[eé]rer|faire suivre|renvoyer)"
    r"|(?:tu as|vous avez|t'as) (?:le|ce|cet|l') ?(?:lien|article|papier|[ée]tude)",
)
QUOTED_CHARS = 1500
_BYLINE = re.compile(r"\b(?:By|BY|Par|PAR) [A-Z][A-Za-z]+ [A-Z][A-Za-z]+")

# Stands for an empty channel: a token of its own, so that "nothing forwarded" can be learnt
# and a vectoriser never meets a training set without any vocabulary.
EMPTY_MARK = "emptychannel"


# ---------------------------------------------------------------------------
# Channels: each maps a sequence of ParsedMessage to a list of strings


def subject_text(messages: Sequence[ParsedMessage]) -> list[str]:
    return [m.subject or EMPTY_MARK for m in messages]


def own_text(messages: Sequence[ParsedMessage], limit: int = OWN_CHARS) -> list[str]:
    """The sender's own words; each link becomes the token "httplink" (its domain has a channel of its own)."""
    return [_URL.sub(" httplink ", m.own_text[:limit]) or EMPTY_MARK for m in messages]


def forwarded_text(messages: Sequence[ParsedMessage], limit: int = FORWARDED_CHARS) -> list[str]:
    return [_URL.sub(" httplink ", m.forwarded_text[:limit]) or EMPTY_MARK for m in messages]


def char_text(messages: Sequence[ParsedMessage], limit: int = CHAR_NGRAM_CHARS) -> list[str]:
    """Subject and the start of the own text, for character n-grams (robust to spelling and inflection)."""
    return [f"{m.subject}\n{_URL.sub(' ', m.own_text[: limit * 2])}"[:limit] for m in messages]


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


def asked_for(messages: Sequence[ParsedMessage]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """1 when the quoted part of a reply shows the recipient asking for what is now sent."""
    column = [bool(m.quoted_text) and bool(_ASKED_FOR.search(m.quoted_text[:QUOTED_CHARS].lower())) for m in messages]
    return np.asarray(column, dtype=np.float32).reshape(-1, 1)


def asked_for_names(transformer: Any, names: Any) -> list[str]:
    return ["quoted_asks_for_it"]


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


FAMILIES = ("logistic", "linear_svm", "naive_bayes")


class PerLabelClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """One calibrated linear model per label; ``predict_proba`` gives P(label) per column.

    Labels are independent (a message can be both, LABELS.md), so each gets
    its own model. ``family`` picks it: a logistic regression or a linear
    SVM with classes weighted to balance the rare positives, or multinomial
    naive Bayes. All three are linear in the features, so each fit is kept
    as the same four numbers per label (``coef_``, ``intercept_``,
    ``scale_``, ``offset_``) and scoring is one sparse product and a
    sigmoid, whatever the family.

    The sigmoid (Platt scaling) is fitted on cross-validated decision
    values, as ``CalibratedClassifierCV(ensemble=False)`` does, but with
    folds that keep each mailbox whole when groups are given: decision
    values for people the model has seen are optimistic, and a sigmoid
    fitted on them is overconfident on new senders. A label with no
    positives (or no negatives) gets a constant probability.
    """

    def __init__(
        self,
        labels: Sequence[str] = LABELS,
        C: float = 32.0,
        calibration_folds: int = 3,
        family: str = "logistic",
    ) -> None:
        self.labels = labels
        self.C = C
        self.calibration_folds = calibration_folds
        self.family = family

    def fit(self, x: Any, y: Any, sample_weight: Any = None, groups: Any = None) -> PerLabelClassifier:
        """Fit; ``groups`` (one mailbox id per row) makes the calibration folds keep each mailbox whole."""
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {self.family!r}")
        targets = np.asarray(y, dtype=np.int8)
        if targets.ndim != 2 or targets.shape[1] != len(self.labels):
            raise ValueError(f"expected y of shape (n, {len(self.labels)}), got {targets.shape}")
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        group_array = None if groups is None else np.asarray(groups)
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
            folds = min(self.calibration_folds, positives, negatives)
            if group_array is not None:
                folds = min(folds, len(set(group_array[column == 1].tolist())))
            if folds >= 2:
                splitter: Any = (
                    StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
                    if group_array is None
                    else StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
                )
                decision = np.zeros(len(column), dtype=np.float64)
                for train_idx, test_idx in splitter.split(x, column, group_array):
                    coef, intercept = self._fit_linear(x[train_idx], column[train_idx], _rows(weights, train_idx))
                    decision[test_idx] = np.asarray(x[test_idx] @ coef).ravel() + intercept
                platt = LogisticRegression(C=1e6, solver="lbfgs").fit(decision.reshape(-1, 1), column)
                self.scale_[j], self.offset_[j] = float(platt.coef_[0, 0]), float(platt.intercept_[0])
            else:
                self.scale_[j] = 1.0
            self.coef_[j], self.intercept_[j] = self._fit_linear(x, column, weights)
        self.classes_ = np.array(self.labels)
        return self

    def _fit_linear(self, x: Any, y: Any, weights: Any) -> tuple[np.ndarray[Any, Any], float]:
        """One binary fit, reduced to its weight vector and bias."""
        if self.family == "naive_bayes":
            nb = MultinomialNB(alpha=1.0 / self.C).fit(x, y, sample_weight=weights)
            log_prob = nb.feature_log_prob_
            return log_prob[1] - log_prob[0], float(nb.class_log_prior_[1] - nb.class_log_prior_[0])
        model: Any
        if self.family == "linear_svm":
            model = LinearSVC(C=self.C / 64, class_weight="balanced", max_iter=5000)
        else:
            model = LogisticRegression(C=self.C, class_weight="balanced", solver="liblinear", max_iter=1000)
        model.fit(x, y, sample_weight=weights)
        return np.asarray(model.coef_[0], dtype=np.float64), float(model.intercept_[0])

    def decision_function(self, x: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.asarray(x @ self.coef_.T, dtype=np.float64) + self.intercept_

    def predict_proba(self, x: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
        return expit(self.decision_function(x) * self.scale_ + self.offset_)  # type: ignore[no-any-return]

    def predict(self, x: Any) -> np.ndarray[Any, np.dtype[np.int8]]:
        return (self.predict_proba(x) >= 0.5).astype(np.int8)


def _rows(weights: np.ndarray[Any, Any] | None, index: np.ndarray[Any, Any]) -> np.ndarray[Any, Any] | None:
    return None if weights is None else weights[index]


# ---------------------------------------------------------------------------
# The pipeline


class CompactTfidfVectorizer(TfidfVectorizer):  # type: ignore[misc]
    """A TfidfVectorizer whose vocabulary pickles as one string.

    joblib unpickles with the pure-Python pickler, for which a dict of tens
    of thousands of terms is most of a model's load time; one string split
    on load costs a few milliseconds. Fitting and transforming are the
    parent's, untouched.
    """

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = dict(super().__getstate__())
        vocabulary = state.get("vocabulary_")
        if isinstance(vocabulary, dict) and sorted(vocabulary.values()) == list(range(len(vocabulary))):
            terms = sorted(vocabulary, key=vocabulary.__getitem__)
            if not any(_TERM_SEPARATOR in term for term in terms):
                del state["vocabulary_"]
                state["terms_"] = _TERM_SEPARATOR.join(terms)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        terms = state.pop("terms_", None)
        if terms is not None:
            state["vocabulary_"] = {term: i for i, term in enumerate(terms.split(_TERM_SEPARATOR))} if terms else {}
        super().__setstate__(state)


_TERM_SEPARATOR = "\x00"


def _words(max_features: int, ngram_range: tuple[int, int] = (1, 2), min_df: int = 2) -> TfidfVectorizer:
    return CompactTfidfVectorizer(
        ngram_range=ngram_range,
        max_features=max_features,
        min_df=min_df,
        sublinear_tf=True,
        strip_accents="unicode",
        dtype=np.float32,
    )


def _limit(chars: int) -> dict[str, int]:
    return {"limit": chars}


def build_pipeline(
    *,
    family: str = "logistic",
    C: float = 32.0,
    own_features: int = 30000,
    forwarded_features: int = 15000,
    char_features: int = 30000,
    own_chars: int = OWN_CHARS,
    forwarded_chars: int = FORWARDED_CHARS,
    char_chars: int = CHAR_NGRAM_CHARS,
    labels: Sequence[str] = LABELS,
) -> Pipeline:
    """The unfitted pipeline: ``fit(messages, y)`` with y of shape (n, len(labels)), then ``predict_proba``.

    ``char_features=0`` leaves the character n-gram channel out. The
    ``*_chars`` arguments cut each text channel to that many characters:
    scoring time grows with them.
    """
    channels: list[tuple[str, Any]] = [
        ("subject", make_pipeline(FunctionTransformer(subject_text), _words(5000))),
        ("own", make_pipeline(FunctionTransformer(own_text, kw_args=_limit(own_chars)), _words(own_features))),
        (
            "forwarded",
            make_pipeline(
                FunctionTransformer(forwarded_text, kw_args=_limit(forwarded_chars)), _words(forwarded_features)
            ),
        ),
        ("domains", make_pipeline(FunctionTransformer(link_domains), _words(3000, (1, 1)))),
    ]
    if char_features:
        # 3-4 rather than 3-5 characters: the same cross-validated average
        # precision on the first model's data, and a third less scoring time.
        chars = CompactTfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(3, 4),
            max_features=char_features,
            min_df=3,
            sublinear_tf=True,
            lowercase=True,
            dtype=np.float32,
        )
        channels.append(("chars", make_pipeline(FunctionTransformer(char_text, kw_args=_limit(char_chars)), chars)))
    channels.append(("structure", FunctionTransformer(structure)))
    channels.append(("asked", FunctionTransformer(asked_for, feature_names_out=asked_for_names)))
    classify = PerLabelClassifier(labels=labels, C=C, family=family)
    return Pipeline([("features", FeatureUnion(channels)), ("classify", classify)])
