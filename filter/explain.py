"""Why a message got its scores: the features that pushed each label's score up and down.

The classifier is linear under a sigmoid (features.PerLabelClassifier): for
label j, the probability is ``expit(logit)`` with

    logit = scale_j * (x . coef_j + intercept_j) + offset_j

so every feature adds exactly ``x_i * coef_ji * scale_j`` to the logit, and
these contributions, the scaled intercept and the calibration offset add up
to the logit the score is made of. Nothing here depends on thresholds.

Feature names come from the fitted channels of the pipeline's FeatureUnion,
whatever channels it holds: a Pipeline ending in a vectoriser names its
columns with the vectoriser's ``get_feature_names_out()``, the "structure"
channel with ``channels.STRUCTURE_FEATURES``, and any other channel either
names its own columns or gets numbered ones. The names of all channels (some
80 000 of them) are computed on the first explanation and kept as long as
the bundle lives, which for ``classify`` and the daemon is the process.

Feature names are n-grams of the training vocabulary found in the message;
they are cut to ``NAME_CHARS`` characters, and nothing else of the message is
ever shown.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sklearn
from scipy.sparse import csr_matrix
from scipy.special import expit

from filter.channels import STRUCTURE_FEATURES
from filter.errors import ModelError
from filter.message import ParsedMessage
from filter.model import ModelBundle

NAME_CHARS = 40
STRUCTURE_CHANNEL = "structure"


@dataclass(frozen=True)
class Contribution:
    """One feature's push on one label's logit: value x coefficient x calibration scale."""

    channel: str
    feature: str
    value: float


@dataclass(frozen=True)
class Explanation:
    """One label's score taken apart: ``features + intercept + offset == logit`` and ``score == expit(logit)``.

    ``features`` is the sum over every feature of the message, not only the
    ``up`` and ``down`` ones shown; ``intercept`` is the model's intercept
    times the calibration scale, ``offset`` the calibration offset plus
    the shift of the message's language, when the card gives one.
    """

    score: float
    logit: float
    features: float
    intercept: float
    offset: float
    up: tuple[Contribution, ...]
    down: tuple[Contribution, ...]


@dataclass(frozen=True)
class FeatureNames:
    """The fitted pipeline's columns: channel ``channels[k]`` holds columns ``starts[k]`` to ``starts[k + 1]``."""

    channels: tuple[str, ...]
    starts: np.ndarray[Any, np.dtype[np.int64]]
    names: tuple[Sequence[str], ...]

    def lookup(self, column: int) -> tuple[str, str]:
        k = int(np.searchsorted(self.starts, column, side="right")) - 1
        return self.channels[k], str(self.names[k][column - int(self.starts[k])])


_NAMES: weakref.WeakKeyDictionary[ModelBundle, FeatureNames] = weakref.WeakKeyDictionary()


def feature_names(bundle: ModelBundle) -> FeatureNames:
    """The names of every column the classifier sees, computed on first use and then kept for this bundle."""
    known = _NAMES.get(bundle)
    if known is None:
        known = _NAMES[bundle] = _feature_names(bundle)
    return known


def explain(bundle: ModelBundle, message: ParsedMessage, top: int = 8) -> dict[str, Explanation]:
    """Each label's score, its logit parts and the ``top`` features pushing it up and down (largest first)."""
    union, classifier = _parts(bundle)
    names = feature_names(bundle)
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        row = _sparse_row(union.transform([message]))
    columns, values = row.indices, row.data.astype(np.float64)
    explained: dict[str, Explanation] = {}
    shifts = bundle.language_offsets.get(message.language)
    for j, label in enumerate(bundle.labels):
        scale = float(classifier.scale_[j])
        offset = float(classifier.offset_[j]) + (0.0 if shifts is None else float(shifts[j]))
        intercept = float(classifier.intercept_[j]) * scale
        pushes = values * classifier.coef_[j, columns] * scale
        total = float(pushes.sum())
        logit = total + intercept + offset
        order = np.argsort(-pushes, kind="stable")
        up = [i for i in order[:top] if pushes[i] > 0]
        down = [i for i in order[::-1][:top] if pushes[i] < 0]
        explained[label] = Explanation(
            score=float(expit(logit)),
            logit=logit,
            features=total,
            intercept=intercept,
            offset=offset,
            up=tuple(_contribution(names, int(columns[i]), float(pushes[i])) for i in up),
            down=tuple(_contribution(names, int(columns[i]), float(pushes[i])) for i in down),
        )
    return explained


def explanation_lines(explained: Mapping[str, Explanation], indent: str = "  ") -> list[str]:
    """The text form: per label its score and logit parts, then one "+ channel:feature 1.23" line per push."""
    lines: list[str] = []
    for label, e in explained.items():
        lines.append(
            f"{indent}{label} {e.score:.2f}: logit {e.logit:+.2f} = features {e.features:+.2f}"
            f" + intercept {e.intercept:+.2f} + calibration {e.offset:+.2f}"
        )
        for sign, pushes in (("+", e.up), ("-", e.down)):
            lines.extend(f"{indent}  {sign} {c.channel}:{_shown(c.feature)} {c.value:.2f}" for c in pushes)
    return lines


def explanation_json(explained: Mapping[str, Explanation]) -> dict[str, object]:
    """The JSON form, rounded like the scores of ``classify --json``."""
    return {
        label: {
            "score": round(e.score, 4),
            "logit": round(e.logit, 4),
            "features": round(e.features, 4),
            "intercept": round(e.intercept, 4),
            "offset": round(e.offset, 4),
            "up": [_contribution_json(c) for c in e.up],
            "down": [_contribution_json(c) for c in e.down],
        }
        for label, e in explained.items()
    }


def _contribution_json(c: Contribution) -> dict[str, object]:
    return {"channel": c.channel, "feature": c.feature, "contribution": round(c.value, 4)}


def _shown(name: str) -> str:
    """A character n-gram may start or end with a space: quote those so the space shows."""
    return f'"{name}"' if name != name.strip() else name


def _contribution(names: FeatureNames, column: int, value: float) -> Contribution:
    channel, name = names.lookup(column)
    printable = "".join(c if c.isprintable() else " " for c in name[:NAME_CHARS])
    return Contribution(channel, printable, value)


def _sparse_row(x: Any) -> Any:
    """The one row of a transform result as a CSR matrix whose columns are sorted and unique."""
    row = csr_matrix(x)
    row.sum_duplicates()
    return row


def _parts(bundle: ModelBundle) -> tuple[Any, Any]:
    """The FeatureUnion and the linear classifier right after it; anything else cannot be explained."""
    pipeline = bundle.pipeline
    steps = getattr(pipeline, "steps", None)
    named = getattr(pipeline, "named_steps", {})
    if not steps or len(steps) != 2 or "features" not in named or steps[0][1] is not named["features"]:
        raise ModelError(f"{bundle.path}: cannot explain a model that is not a 'features' step then a classifier")
    classifier = steps[1][1]
    if not all(hasattr(classifier, a) for a in ("coef_", "intercept_", "scale_", "offset_")):
        raise ModelError(
            f"{bundle.path}: cannot explain a {type(classifier).__name__}: it is not a calibrated linear model"
        )
    return named["features"], classifier


def _feature_names(bundle: ModelBundle) -> FeatureNames:
    union, classifier = _parts(bundle)
    channels: list[str] = []
    names: list[Sequence[str]] = []
    for channel, transformer in union.transformer_list:
        if transformer == "drop":
            continue
        channels.append(channel)
        names.append(_channel_names(channel, transformer))
    widths = [len(n) for n in names]
    if sum(widths) != classifier.coef_.shape[1]:
        raise ModelError(
            f"{bundle.path}: the channels name {sum(widths)} features but the classifier has "
            f"{classifier.coef_.shape[1]}; cannot explain this model"
        )
    starts = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
    return FeatureNames(tuple(channels), starts, tuple(names))


def _channel_names(channel: str, transformer: Any) -> Sequence[str]:
    """A channel's column names; numbered ("#0", "#1", ...) for a channel that cannot name its columns."""
    if channel == STRUCTURE_CHANNEL:
        return STRUCTURE_FEATURES
    steps = getattr(transformer, "steps", None)
    last = steps[-1][1] if steps else transformer
    try:
        names: Sequence[str] = last.get_feature_names_out()
    except (AttributeError, TypeError, ValueError):
        width = _sparse_row(transformer.transform([ParsedMessage()])).shape[1]
        return [f"#{i}" for i in range(width)]
    return names
