"""Importable scikit-learn transformers: a list of ParsedMessage -> one probability per label.

Feature extraction lives inside the Pipeline, so that training and serving
cannot drift: the bundle pickles ``build_pipeline()``'s result, and every
function it calls is a module-level name in ``filter.channels``
(``FunctionTransformer`` needs importable functions to pickle), which the
exported scorer calls too.

The shape follows scikit-learn's ``plot_column_transformer`` example for
mail: each text channel is vectorised apart (subject, the sender's own text,
what they forwarded, the domains they link to, character n-grams of subject
and own text), and text statistics sit beside them. So do favour cues
(``channels.favour_cues``): the words that say what a favour is about and
those that ask, each list pooled into one count, because real favour
requests are too rare and too varied for the word channels to learn one
word at a time. Every channel is cut to a fixed length first, because
character n-grams are the cost of scoring.

Two things are deliberately left out. Quoted replies are context only
(LABELS.md), so only their length is a feature; a channel for their words
made cross-validated results slightly worse. Whether a message has an HTML
part is not a feature either: in the training corpora it says where a
message comes from far more than what it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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

from filter.channels import (
    CHAR_NGRAM_CHARS,
    FORWARDED_CHARS,
    OWN_CHARS,
    asked_for,
    asked_for_names,
    char_text,
    favour_cue_names,
    favour_cues,
    forwarded_text,
    link_domains,
    own_text,
    structure,
    subject_text,
)
from filter.config import LABELS

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
            if group_array is not None:  # each side's groups bound the folds, or a split may hold one kind only
                folds = min(folds, *(len(set(group_array[column == kind].tolist())) for kind in (0, 1)))
            decision = np.zeros(len(column), dtype=np.float64) if folds >= 2 else None
            if decision is not None:
                splitter: Any = (
                    StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
                    if group_array is None
                    else StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
                )
                for train_idx, test_idx in splitter.split(x, column, group_array):
                    if len(np.unique(column[train_idx])) < 2:  # uneven groups: no calibration for this label
                        decision = None
                        break
                    coef, intercept = self._fit_linear(x[train_idx], column[train_idx], _rows(weights, train_idx))
                    decision[test_idx] = np.asarray(x[test_idx] @ coef).ravel() + intercept
            if decision is not None:
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
    cues: bool = True,
) -> Pipeline:
    """The unfitted pipeline: ``fit(messages, y)`` with y of shape (n, len(labels)), then ``predict_proba``.

    ``char_features=0`` leaves the character n-gram channel out, and
    ``cues=False`` the pooled favour cues (``channels.favour_cues``). The
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
    if cues:
        channels.append(("cues", FunctionTransformer(favour_cues, feature_names_out=favour_cue_names)))
    classify = PerLabelClassifier(labels=labels, C=C, family=family)
    return Pipeline([("features", FeatureUnion(channels)), ("classify", classify)])
