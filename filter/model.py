"""ModelBundle: a fitted pipeline on disk with its card, checked before it is loaded.

A model is pickled code: loading it runs whatever it contains, and a model
pickled by another scikit-learn, or fitted with other feature code, may
load and then score wrongly without a word. So a bundle is a folder holding
``model.joblib`` and ``card.json`` (sha256 of the model file, the Python,
scikit-learn and joblib versions, the feature code version, the labels,
default thresholds, training data summary, metrics), and
``ModelBundle.load`` reads the card first, checks the hash and the versions
and only then calls ``joblib.load``. A bundle that fails a check is refused
with a ``ModelError`` that says how to fix it; it moves no mail.

Scoring does not need the pickle. ``save`` also writes ``scorer.npz``, the
pipeline's features and weights as plain arrays (``filter.scoring``), with
its own sha256 in the card. When the card names one, ``load`` reads only
that (``allow_pickle=False``: no code runs) and scores without importing
scikit-learn; the pipeline is unpickled, after the same checks, only when
something needs it (``--explain``, ``evaluate``, training).

A card may also hold ``language_offsets``: for a language whose mail
needs its own operating point (the French written mail's hard negatives
hold its article threshold higher than English needs), a shift per label
on the log-odds scale, added to the probabilities of messages in that
language. Training chooses each language's threshold and sets the shift so
that it falls on the one threshold the card and the config show; a
threshold raised or lowered in the config moves every language with it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from filter.channels import FEATURE_VERSION
from filter.config import LABELS
from filter.errors import ModelError
from filter.message import ParsedMessage
from filter.scoring import LinearScorer, ScorerFormatError
from filter.scoring import export as scoring_export

MODEL_FILE = "model.joblib"
SCORER_FILE = "scorer.npz"
CARD_FILE = "card.json"
CARD_FORMAT = 1
MAX_OFFSET = 20.0

__all__ = ["LABELS", "ModelBundle", "Scores", "default_model_path", "runtime_versions"]


@dataclass(frozen=True)
class Scores:
    """One calibrated probability per label for one message."""

    values: Mapping[str, float]

    def labels_at(self, thresholds: Mapping[str, float]) -> tuple[str, ...]:
        """The labels whose score reaches their threshold, in LABELS order; labels without a threshold are skipped."""
        return tuple(
            label for label, score in self.values.items() if label in thresholds and score >= thresholds[label]
        )


def default_model_path() -> Path:
    """The model shipped with the code: ``<repo>/models/default``."""
    return Path(__file__).resolve().parent.parent / "models" / "default"


def runtime_versions() -> dict[str, str]:
    """The versions a bundle must match: Python major.minor, scikit-learn and joblib."""
    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "sklearn": _installed("scikit-learn"),
        "joblib": _installed("joblib"),
    }


def _installed(package: str) -> str:
    """A package's installed version, read from its metadata: importing scikit-learn to ask costs 1.5 s."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_RETRAIN = "retrain it with `ployfilter train` (or `python -m filter.train --default-model` for the shipped one)"


class ModelBundle:
    """A verified, loaded model: ``labels``, default ``thresholds``, the ``card`` and ``score()``."""

    def __init__(
        self,
        pipeline: Any,
        card: Mapping[str, Any],
        path: Path,
        *,
        scorer: LinearScorer | None = None,
    ) -> None:
        self._pipeline = pipeline
        self.scorer = scorer
        self.card: dict[str, Any] = dict(card)
        self.path = path
        self.labels: tuple[str, ...] = tuple(card["labels"])
        self.thresholds: dict[str, float] = {label: float(card["thresholds"][label]) for label in self.labels}
        self.language_offsets = offset_arrays(card.get("language_offsets") or {}, self.labels)

    # -- loading -------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> ModelBundle:
        """Read and check ``card.json``, then the exported scorer it names, or else the pipeline."""
        path = Path(path)
        card = _read_card(path)
        _check_versions(path, card)
        entry = card.get("scorer")
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)):
            return cls(_load_pipeline(path, card), card, path)
        # The pickle is checked even when only the scorer is read: an altered bundle is refused whole.
        _verify(path / MODEL_FILE, card["sha256"])
        scorer_file = path / SCORER_FILE
        data = _verified(scorer_file, entry["sha256"])
        try:
            scorer = LinearScorer.load(scorer_file, data)
        except ScorerFormatError as exc:
            raise ModelError(f"{exc}; {_RETRAIN}") from exc
        if scorer.labels != tuple(card["labels"]):
            raise ModelError(f"{scorer_file}: its labels differ from the card's; {_RETRAIN}")
        return cls(None, card, path, scorer=scorer)

    @property
    def pipeline(self) -> Any:
        """The fitted scikit-learn pipeline, unpickled (after its checks) on first use."""
        if self._pipeline is None:
            self._pipeline = _load_pipeline(self.path, self.card)
        return self._pipeline

    # -- scoring ---------------------------------------------------------------

    def score(self, messages: Sequence[ParsedMessage]) -> list[Scores]:
        """Score a batch; one Scores per message, in order."""
        if not messages:
            return []
        if self.scorer is not None:
            proba = self.scorer.score(messages)
        else:
            import sklearn

            # The pipeline's input is built here and trusted: skipping scikit-learn's per-call
            # validation saves a few milliseconds per batch.
            with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
                proba = np.asarray(self.pipeline.predict_proba(list(messages)), dtype=np.float64)
        if proba.shape != (len(messages), len(self.labels)):
            raise ModelError(
                f"{self.path}: the model returned scores of shape {proba.shape}, expected "
                f"({len(messages)}, {len(self.labels)}); {_RETRAIN}"
            )
        if self.language_offsets:
            proba = shift_by_language(proba, [m.language for m in messages], self.language_offsets)
        return [Scores(dict(zip(self.labels, (float(v) for v in row), strict=True))) for row in proba]

    # -- saving ------------------------------------------------------------------

    @staticmethod
    def save(
        pipeline: Any,
        path: Path,
        *,
        thresholds: Mapping[str, float],
        metrics: Mapping[str, Any],
        training_summary: Mapping[str, Any],
        labels: Sequence[str] = LABELS,
        language_offsets: Mapping[str, Mapping[str, float]] | None = None,
    ) -> dict[str, Any]:
        """Write ``model.joblib``, ``scorer.npz`` and then ``card.json`` into ``path``; returns the card.

        The files are written in a staging folder inside ``path`` and renamed
        into place, the card last (and atomically): a save that fails leaves
        the bundle that was there whole, and a folder whose card exists
        always has the model the card describes. A pipeline whose shape
        ``filter.scoring`` cannot reproduce is saved without a scorer and is
        scored through scikit-learn.
        """
        import joblib

        path = Path(path)
        missing = [label for label in labels if label not in thresholds]
        if missing:
            raise ModelError(f"cannot save a bundle without thresholds for {', '.join(missing)}")
        path.mkdir(parents=True, exist_ok=True)
        # Everything is written beside the bundle first: a save that fails (disk full, Ctrl-C)
        # leaves the bundle that was there whole, and only renames touch it.
        for left in path.glob(".saving-*"):  # from a save killed before it could clean up
            shutil.rmtree(left, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=path))
        try:
            model_file = staging / MODEL_FILE
            joblib.dump(pipeline, model_file, compress=3)
            scorer = write_scorer(pipeline, staging, labels)
            card: dict[str, Any] = {
                "format": CARD_FORMAT,
                "sha256": _sha256(model_file),
                "size_bytes": model_file.stat().st_size,
                "created": datetime.now(UTC).replace(microsecond=0).isoformat(),
                **runtime_versions(),
                "features": FEATURE_VERSION,
                "labels": list(labels),
                "thresholds": {label: round(float(thresholds[label]), 4) for label in labels},
                **(
                    {"language_offsets": {lang: dict(shifts) for lang, shifts in language_offsets.items()}}
                    if language_offsets
                    else {}
                ),
                "training_data": dict(training_summary),
                "metrics": dict(metrics),
            }
            if scorer is not None:
                card["scorer"] = scorer
            (path / CARD_FILE).unlink(missing_ok=True)
            os.replace(staging / MODEL_FILE, path / MODEL_FILE)
            if "scorer" in card:
                os.replace(staging / SCORER_FILE, path / SCORER_FILE)
            else:
                (path / SCORER_FILE).unlink(missing_ok=True)
            _write_atomic(path / CARD_FILE, json.dumps(card, indent=2, sort_keys=False) + "\n")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return card


def offset_arrays(
    offsets: Mapping[str, Mapping[str, float]], labels: Sequence[str]
) -> dict[str, np.ndarray[Any, np.dtype[np.float64]]]:
    """A card's ``language_offsets`` as one array per language, in label order (0 for a label not named)."""
    return {
        language: np.array([float(shifts.get(label, 0.0)) for label in labels], dtype=np.float64)
        for language, shifts in offsets.items()
    }


def log_odds(p: Any) -> Any:
    """log(p / (1 - p)), for a probability or an array of them."""
    return np.log(p / (1.0 - p))


def from_log_odds(x: Any) -> Any:
    """The probability whose log-odds are ``x`` (the logistic sigmoid), for a number or an array."""
    return 1.0 / (1.0 + np.exp(-x))


def shift_by_language(
    proba: np.ndarray[Any, Any],
    languages: Sequence[str],
    offsets: Mapping[str, np.ndarray[Any, Any]],
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """``proba`` with each row's log-odds moved by its language's offsets (rows of other languages unchanged)."""
    out = np.array(proba, dtype=np.float64)
    for language, shift in offsets.items():
        rows = np.fromiter((lang == language for lang in languages), dtype=bool, count=len(languages))
        if rows.any():
            out[rows] = from_log_odds(log_odds(np.clip(out[rows], 1e-12, 1 - 1e-12)) + shift)
    return out


def write_scorer(pipeline: Any, path: Path, labels: Sequence[str] = LABELS) -> dict[str, Any] | None:
    """Export the pipeline's scorer to ``path/scorer.npz``; its card entry, or None when it cannot be exported."""
    scorer_file = path / SCORER_FILE
    try:
        data = scoring_export(pipeline, labels)
    except ScorerFormatError:
        scorer_file.unlink(missing_ok=True)
        return None
    scorer_file.write_bytes(data)
    return {"file": SCORER_FILE, "sha256": _sha256(scorer_file), "size_bytes": len(data)}


def _verify(file: Path, expected: str) -> None:
    if not file.is_file():
        raise ModelError(f"{file}: missing; the bundle is incomplete, {_RETRAIN}")
    _check_digest(file, _sha256(file), expected)


def _verified(file: Path, expected: str) -> bytes:
    """The bytes of ``file``, read once, after their sha256 matched: what is used is what was checked."""
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{file}: missing; the bundle is incomplete, {_RETRAIN}") from None
    except OSError as exc:
        raise ModelError(f"{file}: cannot be read ({exc.strerror or exc}); {_RETRAIN}") from None
    _check_digest(file, hashlib.sha256(data).hexdigest(), expected)
    return data


def _check_digest(file: Path, found: str, expected: str) -> None:
    if found != expected:
        raise ModelError(
            f"{file}: sha256 {found[:12]}... does not match the card ({expected[:12]}...); "
            f"the file was altered or replaced. Restore the bundle or {_RETRAIN}"
        )


def _load_pipeline(path: Path, card: Mapping[str, Any]) -> Any:
    """Verify ``model.joblib`` against the card, then unpickle it."""
    model_file = path / MODEL_FILE
    data = _verified(model_file, card["sha256"])
    import joblib

    try:
        pipeline = joblib.load(io.BytesIO(data))
    except Exception as exc:
        raise ModelError(f"{model_file}: cannot be loaded ({type(exc).__name__}: {exc}); {_RETRAIN}") from exc
    if not hasattr(pipeline, "predict_proba"):
        raise ModelError(f"{model_file}: holds a {type(pipeline).__name__}, not a classifier; {_RETRAIN}")
    return pipeline


def _read_card(path: Path) -> dict[str, Any]:
    card_file = path / CARD_FILE
    if not path.is_dir():
        raise ModelError(f"{path}: no model bundle here (not a directory); {_RETRAIN}")
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{card_file}: missing; a bundle needs its card, {_RETRAIN}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{card_file}: unreadable or not JSON ({exc}); {_RETRAIN}") from exc
    if not isinstance(card, dict):
        raise ModelError(f"{card_file}: expected a JSON object; {_RETRAIN}")
    for key, kind in (("sha256", str), ("python", str), ("sklearn", str), ("joblib", str), ("labels", list)):
        if not isinstance(card.get(key), kind):
            raise ModelError(f"{card_file}: key {key!r} is missing or not a {kind.__name__}; {_RETRAIN}")
    labels = card["labels"]
    thresholds = card.get("thresholds")
    if tuple(labels) != LABELS:
        raise ModelError(f"{card_file}: 'labels' must be {list(LABELS)}, not {labels}; {_RETRAIN}")
    if not isinstance(thresholds, dict) or any(
        isinstance(thresholds.get(label), bool)
        or not isinstance(thresholds.get(label), int | float)
        or not 0.0 <= thresholds[label] <= 1.0
        for label in labels
    ):
        raise ModelError(f"{card_file}: 'thresholds' must give a number from 0 to 1 for each label; {_RETRAIN}")
    offsets = card.get("language_offsets", {})
    if not isinstance(offsets, dict) or not all(
        isinstance(language, str)
        and isinstance(shifts, dict)
        and all(
            label in labels and isinstance(v, int | float) and not isinstance(v, bool) and abs(v) <= MAX_OFFSET
            for label, v in shifts.items()
        )
        for language, shifts in offsets.items()
    ):
        raise ModelError(
            f"{card_file}: 'language_offsets' must map a language to label shifts between "
            f"-{MAX_OFFSET:g} and {MAX_OFFSET:g}; {_RETRAIN}"
        )
    return card


def _check_versions(path: Path, card: Mapping[str, Any]) -> None:
    if card.get("features") != FEATURE_VERSION:
        raise ModelError(
            f"{path}: the model was built with feature code version {card.get('features')!r} but this "
            f"ployfilter has version {FEATURE_VERSION}; {_RETRAIN}"
        )
    running = runtime_versions()
    names = {"python": "Python", "sklearn": "scikit-learn", "joblib": "joblib"}
    for key, name in names.items():
        if card[key] != running[key]:
            package = "scikit-learn" if key == "sklearn" else key
            fix = (
                f"install the matching version (pip install '{package}=={card[key]}')"
                if key != "python"
                else f"run it with Python {card[key]}"
            )
            raise ModelError(
                f"{path}: the model was built with {name} {card[key]} but {name} {running[key]} is running; "
                f"a pickled model is only trusted with the exact versions that built it. "
                f"Retrain it with `ployfilter train` or {fix}"
            )


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
