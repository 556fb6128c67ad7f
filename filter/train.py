"""Labelled mail -> grouped cross-validation -> a fitted pipeline, thresholds and metrics -> a bundle.

Cross-validation is grouped by mailbox (an Enron user, a SpamAssassin
folder, one written file), so that no person's mail is on both sides of a
split: a filter is always used on mail from people it has not seen.
Default thresholds are chosen on the out-of-fold scores of several
partitions into folds: the best F1 that flags little ordinary mail, in
every kind of mail (``choose_thresholds``).

The repository stores ids and labels only (``models/first-labels.csv``,
``models/written/labels*.csv``); message text is read from the corpus at
training time. ``python -m filter.train --default-model`` rebuilds the
shipped model from them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import logging
import math
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline

from filter.config import LABELS
from filter.dataset import Example
from filter.errors import PloyError, UsageError
from filter.evaluate import counts
from filter.features import build_pipeline
from filter.message import ParsedMessage, forwarded_message, parse_message
from filter.model import ModelBundle, default_model_path, log_odds, offset_arrays, shift_by_language

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
FIRST_LABELS = REPO / "models" / "first-labels.csv"
REAL_LABELS = REPO / "models" / "labels"
WRITTEN = REPO / "models" / "written"

TARGET_PRECISION = 0.95
MAX_ORDINARY_FLAGGED = 0.02
MIN_SET_SIZE = 50
MIN_LANGUAGE_POSITIVES = 30
UNKNOWN_LANGUAGE = "unknown"
FALLBACK_THRESHOLD = 0.8
# Grouped cross-validation runs over this many partitions of the groups into folds, and the
# thresholds are chosen on their out-of-fold scores pooled: on one partition alone, the pair the
# ordinary-mail cap lets through moved by up to 0.2 with nothing but the partition changed.
DEFAULT_REPEATS = 3
PARTITION_SEED = 20240601
MIN_PREDICTED_AT_THRESHOLD = 5
MAILDIR_SAMPLE = 3000
SAMPLE_SEED = 20240601
FORWARDED_SUFFIX = "#forwarded"

SOURCES = ("enron-berkeley", "enron-maildir", "spamassassin", "written")


# ---------------------------------------------------------------------------
# Training


def train(
    examples: Sequence[tuple[ParsedMessage, Mapping[str, bool]]],
    groups: Sequence[str],
    *,
    n_splits: int = 5,
    labels: Sequence[str] = LABELS,
    make_pipeline: Callable[[], Pipeline] = build_pipeline,
    sources: Sequence[str] | None = None,
    trusted: Sequence[bool] | None = None,
    repeats: int = DEFAULT_REPEATS,
) -> tuple[Pipeline, dict[str, Any]]:
    """Grouped cross-validation for metrics and thresholds, then a fit on all the data.

    Returns the fitted pipeline and a metrics dict (see ``cv_metrics``).
    Thresholds and metrics come from the out-of-fold scores of the
    ``trusted`` examples only (all of them when not given). ``make_pipeline`` must end with a step named "classify"
    whose ``fit`` takes ``groups`` (as ``build_pipeline()``'s does), so that
    calibration inside each fit also keeps mailboxes whole. The
    cross-validation runs over ``repeats`` partitions of the groups
    (``group_partitions``): the thresholds are chosen on all their scores,
    the figures are those of the first partition.
    """
    if len(examples) != len(groups):
        raise ValueError(f"{len(examples)} examples but {len(groups)} groups")
    messages = [m for m, _ in examples]
    y = label_matrix([lab for _, lab in examples], labels)
    partitions = group_partitions(groups, n_splits=n_splits, repeats=repeats)
    oofs = []
    for number, folds in enumerate(partitions, 1):
        if len(partitions) > 1:
            log.info("partition %d/%d", number, len(partitions))
        oofs.append(out_of_fold(messages, y, groups, n_splits=n_splits, make_pipeline=make_pipeline, folds=folds))
    keep = np.ones(len(messages), dtype=bool) if trusted is None else np.asarray(trusted, dtype=bool)
    metrics = cv_metrics(
        y[keep],
        oofs[0][keep],
        more_scores=[oof[keep] for oof in oofs[1:]],
        labels=labels,
        languages=[m.language for m, k in zip(messages, keep, strict=True) if k],
        sources=None if sources is None else [s for s, k in zip(sources, keep, strict=True) if k],
    )
    metrics["cv"] = {
        "folds": min(n_splits, len(set(groups))),
        "partitions": len(partitions),
        "partition_seed": PARTITION_SEED,
        "grouped_by": "mailbox (Enron user, SpamAssassin folder, written file) or sender",
        "scored": int(keep.sum()),
        "left_out_of_metrics": int((~keep).sum()),
    }
    started = time.monotonic()
    final = make_pipeline()
    final.fit(messages, y, classify__groups=np.asarray(groups))
    log.info("final fit done (%d messages, %.0f s)", len(messages), time.monotonic() - started)
    return final, metrics


def evaluation_set(source: str, language: str) -> str:
    """The set a training message is judged in: Enron (both copies), written mail by language, SpamAssassin."""
    if source.startswith("enron"):
        return "enron"
    if source == "written":
        return f"written {language}"
    return source


def label_matrix(labelled: Sequence[Mapping[str, bool]], labels: Sequence[str] = LABELS) -> np.ndarray[Any, Any]:
    return np.array([[int(bool(lab.get(label, False))) for label in labels] for lab in labelled], dtype=np.int8)


def group_partitions(
    groups: Sequence[str], *, n_splits: int = 5, repeats: int = DEFAULT_REPEATS, seed: int = PARTITION_SEED
) -> list[np.ndarray[Any, np.dtype[np.int64]]]:
    """``repeats`` assignments of every message to a fold, each keeping a group in one fold.

    The first is scikit-learn's GroupKFold (the partition of every card
    before repeats); the others put the groups in a seeded random order and
    give each in turn to the fold with the fewest messages so far, so that
    folds stay about the same size and none is empty.
    """
    group_array = np.asarray(groups)
    splits = min(n_splits, len(set(group_array.tolist())))
    first = np.zeros(len(group_array), dtype=np.int64)
    for fold, (_, test_idx) in enumerate(GroupKFold(n_splits=splits).split(group_array, groups=group_array)):
        first[test_idx] = fold
    partitions = [first]
    names, inverse, sizes = np.unique(group_array, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    for _ in range(1, repeats):
        load = np.zeros(splits, dtype=np.int64)
        fold_of = np.zeros(len(names), dtype=np.int64)
        for g in rng.permutation(len(names)):
            fold_of[g] = int(np.argmin(load))
            load[fold_of[g]] += sizes[g]
        partitions.append(fold_of[inverse])
    return partitions


def out_of_fold(
    messages: Sequence[ParsedMessage],
    y: np.ndarray[Any, Any],
    groups: Sequence[str],
    *,
    n_splits: int = 5,
    make_pipeline: Callable[[], Pipeline] = build_pipeline,
    folds: np.ndarray[Any, Any] | None = None,
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Scores for every message from a pipeline fitted on the folds that hold none of its group.

    ``folds`` gives each message's fold (``group_partitions``); by default
    scikit-learn's GroupKFold with ``n_splits`` folds.
    """
    group_array = np.asarray(groups)
    if folds is None:
        folds = group_partitions(groups, n_splits=n_splits, repeats=1)[0]
    splits = int(folds.max()) + 1
    oof = np.zeros(y.shape, dtype=np.float64)
    started = time.monotonic()
    for fold in range(splits):
        train_idx, test_idx = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        pipeline = make_pipeline()
        pipeline.fit([messages[i] for i in train_idx.tolist()], y[train_idx], classify__groups=group_array[train_idx])
        oof[test_idx] = pipeline.predict_proba([messages[i] for i in test_idx.tolist()])
        elapsed = time.monotonic() - started
        log.info("fold %d/%d done (%d test messages, %.0f s)", fold + 1, splits, len(test_idx), elapsed)
    return oof


def cv_metrics(
    y: np.ndarray[Any, Any],
    scores: np.ndarray[Any, Any],
    *,
    labels: Sequence[str] = LABELS,
    languages: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    more_scores: Sequence[np.ndarray[Any, Any]] = (),
) -> dict[str, Any]:
    """Thresholds and language offsets (``operating_points``), and metrics at them per label, language and source.

    ``sources`` names the set each message belongs to (``evaluation_set``):
    the flagged-ordinary-mail cap holds in each set, not only on average.
    ``ordinary_flagged`` is the share of messages with neither label that
    would get at least one: what a user notices first. The figures are
    those of the scores as shipped, each language's shift applied. The
    thresholds for an out-of-fold precision of TARGET_PRECISION are kept
    too, as ``strict_thresholds``, for owners who would rather miss more.
    ``more_scores`` are out-of-fold scores of the same messages from other
    partitions into folds: the thresholds (strict ones too) are chosen on
    all the scores together, as if each partition's were more mail, and
    the figures are those of ``scores``.
    """
    rounds = 1 + len(more_scores)
    all_y = np.concatenate([y] * rounds)
    all_scores = np.concatenate([scores, *more_scores])
    all_languages = None if languages is None else list(languages) * rounds
    all_sources = None if sources is None else list(sources) * rounds
    thresholds, reason, offsets = operating_points(
        all_y, all_scores, languages=all_languages, sources=all_sources, labels=labels
    )
    if offsets:
        all_scores = shift_by_language(all_scores, all_languages or [], offset_arrays(offsets, labels))
    scores = all_scores[: len(y)]
    metrics: dict[str, Any] = {
        "thresholds": thresholds,
        "threshold_rule": (
            f"highest mean out-of-fold F1 of the labels while flagging at most {MAX_ORDINARY_FLAGGED:.0%} "
            "of ordinary mail (with either label) in every set"
            + (", each language with enough mail at its own point (language_offsets)" if offsets else "")
            + (f", on the out-of-fold scores of {rounds} partitions into folds pooled" if more_scores else "")
        ),
        "language_offsets": offsets,
        "strict_thresholds": {},
        "target_precision": TARGET_PRECISION,
    }
    for j, label in enumerate(labels):
        metrics["strict_thresholds"][label] = strict_threshold(all_y[:, j], all_scores[:, j])[0]
        metrics[label] = _label_metrics(y[:, j], scores[:, j], thresholds[label], reason, sources)
    cut = np.array([thresholds[label] for label in labels])
    flagged: np.ndarray[Any, Any] = np.asarray((scores >= cut).any(axis=1))
    ordinary: np.ndarray[Any, Any] = ~np.asarray(y.astype(bool).any(axis=1))
    metrics["ordinary_flagged"] = _share(flagged[ordinary])
    if languages is not None:
        metrics["by_language"] = _breakdown(y, scores, cut, flagged, ordinary, languages, labels)
    if sources is not None:
        metrics["by_source"] = _breakdown(y, scores, cut, flagged, ordinary, sources, labels)
    return metrics


def operating_points(
    y: np.ndarray[Any, Any],
    scores: np.ndarray[Any, Any],
    *,
    languages: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    labels: Sequence[str] = LABELS,
) -> tuple[dict[str, float], str, dict[str, dict[str, float]]]:
    """The thresholds, why, and the log-odds shift per language and label that gives a language its own point.

    Thresholds come from ``choose_thresholds`` on the mail of the most
    common language (with the mail too short to tell, "unknown"). Another
    language with at least MIN_SET_SIZE ordinary messages and
    MIN_LANGUAGE_POSITIVES positives of every label (that has any) gets thresholds of its
    own, chosen the same way on its mail alone; the shift moves its
    thresholds onto the base ones, so that one threshold per label, in the
    card and the config, serves every language. Any other language's mail
    joins the base choice, so the cap on ordinary mail flagged covers it.
    """
    n = len(y)
    language_array = np.asarray(languages if languages is not None else [UNKNOWN_LANGUAGE] * n)
    source_array = np.asarray(sources if sources is not None else [""] * n)
    ordinary = ~np.asarray(y.astype(bool).any(axis=1))
    found = Counter(language_array.tolist())
    base_language = found.most_common(1)[0][0] if found else UNKNOWN_LANGUAGE
    candidates = [
        lang
        for lang in sorted(found)
        if lang not in (base_language, UNKNOWN_LANGUAGE)
        and int((ordinary & (language_array == lang)).sum()) >= MIN_SET_SIZE
    ]
    # A language stands apart only with a point of its own for every label: one judged at the
    # base point must be in the base choice, or its ordinary mail would escape the cap.
    own_choices: dict[str, ThresholdChoice] = {}
    present = [j for j in range(len(labels)) if y[:, j].any()]  # a label nobody has cannot be judged anyway
    for lang in candidates:
        rows = language_array == lang
        own = choose_thresholds(y[rows], scores[rows], sets=source_array[rows].tolist())
        if not own.fallback and all(int(y[rows, j].sum()) >= MIN_LANGUAGE_POSITIVES for j in present):
            own_choices[lang] = own
    base_rows = ~np.isin(language_array, list(own_choices))
    base = choose_thresholds(y[base_rows], scores[base_rows], sets=source_array[base_rows].tolist())
    thresholds = dict(zip(labels, base.thresholds, strict=True))
    offsets: dict[str, dict[str, float]] = {}
    if base.fallback:
        return thresholds, base.reason, offsets
    for lang, own in own_choices.items():
        for j, label in enumerate(labels):
            if own.thresholds[j] != base.thresholds[j]:
                shift = log_odds(base.thresholds[j]) - log_odds(own.thresholds[j])
                offsets.setdefault(lang, {})[label] = round(float(shift), 4)
    return thresholds, base.reason, offsets


def _breakdown(
    y: np.ndarray[Any, Any],
    scores: np.ndarray[Any, Any],
    cut: np.ndarray[Any, Any],
    flagged: np.ndarray[Any, Any],
    ordinary: np.ndarray[Any, Any],
    keys: Sequence[str],
    labels: Sequence[str],
) -> dict[str, Any]:
    """The same metrics for each value of ``keys`` (a language, a source), at the overall thresholds."""
    key_array = np.asarray(keys)
    out: dict[str, Any] = {}
    for key in sorted(set(key_array.tolist())):
        rows = key_array == key
        entry: dict[str, Any] = {"messages": int(rows.sum()), "ordinary_flagged": _share(flagged[rows & ordinary])}
        for j, label in enumerate(labels):
            truth = y[rows, j]
            entry[label] = {
                "positives": int(truth.sum()),
                "average_precision": _average_precision(truth, scores[rows, j]),
                "at_threshold": _prf(truth, scores[rows, j] >= cut[j]),
            }
        out[key] = entry
    return out


def metric_lines(metrics: Mapping[str, Any], labels: Sequence[str] = LABELS) -> list[str]:
    """One line per label of a metrics dict (``cv_metrics``): positives, AP, threshold and its figures."""
    lines = []
    for label in labels:
        m = metrics[label]
        t = m["at_threshold"]
        ap = "-" if m["average_precision"] is None else f"{m['average_precision']:.3f}"
        lines.append(
            f"{label}: {m['positives']} positives, AP {ap}, threshold {m['threshold']:.4f} "
            f"({m['threshold_reason']}): precision {t['precision']:.2f} recall {t['recall']:.2f} F1 {t['f1']:.2f}"
        )
    return lines


def _share(flags: np.ndarray[Any, Any]) -> float | None:
    return round(float(flags.mean()), 4) if flags.size else None


def _average_precision(truth: np.ndarray[Any, Any], scores: np.ndarray[Any, Any]) -> float | None:
    return round(float(average_precision_score(truth, scores)), 4) if truth.any() else None


class ThresholdChoice(NamedTuple):
    """What ``choose_thresholds`` chose: one threshold per label, why, and whether it fell back."""

    thresholds: tuple[float, ...]
    reason: str
    fallback: bool = False


def choose_thresholds(
    y: np.ndarray[Any, Any],
    scores: np.ndarray[Any, Any],
    *,
    sets: Sequence[str] | None = None,
    cap: float = MAX_ORDINARY_FLAGGED,
) -> ThresholdChoice:
    """One threshold per label: the best mean out-of-fold F1 that flags at most ``cap`` of ordinary mail.

    Ordinary mail has no label; a message counts as flagged when any label
    reaches its threshold, which is what the owner sees. With ``sets``, the
    cap holds in every set (Enron, written English, written French...), so
    that one kind of mail cannot hide behind the others (sets with fewer
    than MIN_SET_SIZE ordinary messages are too small to judge alone).
    Every combination of thresholds from 0.05 to 0.99 is tried; ties go to
    the higher thresholds. A threshold must leave at least
    MIN_PREDICTED_AT_THRESHOLD messages above it, and a label without
    positives keeps FALLBACK_THRESHOLD. Why F1 rather than a precision of
    0.95: at that precision most of the ploy stays in the inbox, while a
    message moved wrongly is only moved, never lost, and goes back with one
    drag (see the README).
    """
    truth = np.asarray(y, dtype=bool)
    n_labels = truth.shape[1]
    plain = ~truth.any(axis=1)
    set_array = np.zeros(len(truth), dtype=np.int8) if sets is None else np.asarray(sets)
    groups = [(set_array == key) & plain for key in sorted(set(set_array.tolist()))]
    groups = [rows for rows in groups if rows.sum() >= MIN_SET_SIZE] or [plain]
    grid = np.round(np.arange(5, 100) / 100, 2)
    candidates: list[list[tuple[float, float, list[np.ndarray[Any, Any]]]]] = []
    for j in range(n_labels):
        options = []
        column = truth[:, j]
        if column.any():
            for threshold in grid:
                predicted = scores[:, j] >= threshold
                if int(predicted.sum()) < MIN_PREDICTED_AT_THRESHOLD:
                    break
                f1 = float(_prf(column, predicted)["f1"])
                options.append((float(threshold), f1, [predicted[rows] for rows in groups]))
        if not options:
            options = [(FALLBACK_THRESHOLD, 0.0, [scores[rows, j] >= FALLBACK_THRESHOLD for rows in groups])]
        candidates.append(options)
    best: tuple[float, float, tuple[float, ...]] | None = None
    for combo in itertools.product(*candidates):
        if any(np.logical_or.reduce([c[2][g] for c in combo]).mean() > cap for g in range(len(groups))):
            continue
        key = (round(sum(c[1] for c in combo) / n_labels, 6), sum(c[0] for c in combo))
        if best is None or key > best[:2]:
            best = (*key, tuple(c[0] for c in combo))
    if best is None or best[0] == 0.0:
        why = f"no thresholds flag at most {cap:.0%} of ordinary mail: fallback"
        return ThresholdChoice((FALLBACK_THRESHOLD,) * n_labels, why, fallback=True)
    why = f"best mean out-of-fold F1 ({best[0]:.2f}) with at most {cap:.0%} of ordinary mail flagged in each set"
    return ThresholdChoice(best[2], why)


def strict_threshold(
    truth: np.ndarray[Any, Any], scores: np.ndarray[Any, Any], target: float = TARGET_PRECISION
) -> tuple[float, str]:
    """The lowest threshold whose out-of-fold precision reaches ``target`` (max recall at that precision).

    At least MIN_PREDICTED_AT_THRESHOLD messages must score above it, so
    that a handful of lucky top scores cannot set it. Falls back to
    FALLBACK_THRESHOLD when the target is out of reach.
    """
    if truth.sum() == 0:
        return FALLBACK_THRESHOLD, "no positives: fallback"
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    best: float | None = None
    for p, t in zip(precision[:-1], thresholds, strict=True):
        if p >= target and int((scores >= t).sum()) >= MIN_PREDICTED_AT_THRESHOLD:
            best = float(t)
            break
    if best is None:
        return FALLBACK_THRESHOLD, f"precision {target} not reached: fallback"
    rounded_up = math.ceil(best * 10000) / 10000
    return min(max(rounded_up, 0.05), 0.99), f"lowest threshold with out-of-fold precision >= {target}"


def _label_metrics(
    truth: np.ndarray[Any, Any],
    scores: np.ndarray[Any, Any],
    threshold: float,
    reason: str,
    sources: Sequence[str] | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "positives": int(truth.sum()),
        "average_precision": _average_precision(truth, scores),
        "at_0.5": _prf(truth, scores >= 0.5),
        "threshold": threshold,
        "threshold_reason": reason,
        "at_threshold": _prf(truth, scores >= threshold),
    }
    if sources is not None:
        src = np.asarray(sources)
        predicted = scores >= threshold
        out["false_positives_by_source"] = dict(Counter(src[predicted & (truth == 0)].tolist()))
        out["recall_by_source"] = {
            s: round(float(predicted[(src == s) & (truth == 1)].mean()), 3)
            for s in sorted(set(src[truth == 1].tolist()))
        }
    return out


def _prf(truth: np.ndarray[Any, Any], predicted: np.ndarray[Any, Any]) -> dict[str, float | int]:
    """The card's form of ``evaluate.counts``: a figure without a denominator is written as 0."""
    c = counts(truth == 1, predicted)
    return {
        "precision": round(c.precision or 0.0, 4),
        "recall": round(c.recall or 0.0, 4),
        "f1": round(c.f1 or 0.0, 4),
        "tp": c.tp,
        "fp": c.fp,
    }


# ---------------------------------------------------------------------------
# Label files


@dataclass(frozen=True)
class LabelRow:
    """One row of a label file: a message id in a source, its labels, or None when excluded ("?")."""

    source: str
    id: str
    labels: Mapping[str, bool] | None
    note: str


def parse_flag(value: str, where: str) -> bool | None:
    """1/0, yes/no, true/false; "?" (or empty) means undecided: keep the message out of training."""
    v = value.strip().lower()
    if v in ("1", "yes", "y", "true"):
        return True
    if v in ("0", "no", "n", "false"):
        return False
    if v in ("?", ""):
        return None
    raise PloyError(f"{where}: {value!r} is not a label; use 1, 0 or ?")


def read_label_file(path: Path, *, id_column: str = "id", source: str | None = None) -> list[LabelRow]:
    """Rows of a label CSV (``source,id,...`` or ``path,...``) with one column per label.

    UTF-8, with or without the byte order mark spreadsheets write. A quote
    that never closes (it would swallow every row after it) and a row with
    more non-empty fields than the header names are PloyErrors naming the
    line; a stray quote inside a field is read as it always was.
    """
    text = path.read_text(encoding="utf-8-sig")
    try:
        records = _csv_records(text, strict=True)
    except csv.Error as exc:
        _refuse_csv(path, exc)
        try:
            records = _csv_records(text, strict=False)
        except csv.Error as again:
            raise PloyError(f"{path}:{getattr(again, 'line', '?')}: not readable as CSV ({again})") from None
    if not records:
        raise PloyError(f"{path}: empty; expected a header with the columns {id_column}, {', '.join(LABELS)}")
    header = records[0][1]
    missing = {id_column, *LABELS} - set(header)
    if missing:
        found = ", ".join(header) or "none"
        raise PloyError(f"{path}: missing column(s) {', '.join(sorted(missing))} (found: {found})")
    rows: list[LabelRow] = []
    blank: list[int] = []
    for line, values in records[1:]:
        if len(values) > len(header) and any(v.strip() for v in values[len(header) :]):
            raise PloyError(f"{path}:{line}: more fields than the header names; quote a value that holds a comma")
        row = dict(zip(header, values, strict=False))
        if any(not (row.get(label) or "").strip() for label in LABELS):
            blank.append(line)
        where = f"{path}:{line}"
        flags = {label: parse_flag(row.get(label) or "", where) for label in LABELS}
        decided = None if any(v is None for v in flags.values()) else {k: bool(v) for k, v in flags.items()}
        rows.append(
            LabelRow(
                source=source or (row.get("source") or "").strip(),
                id=(row.get(id_column) or "").strip(),
                labels=decided,
                note=(row.get("note") or "").strip(),
            )
        )
    if blank:
        log.warning(
            "%s: %d rows leave a label empty (line %s%s): read as '?', undecided, and left out",
            path,
            len(blank),
            ", ".join(map(str, blank[:3])),
            ", ..." if len(blank) > 3 else "",
        )
    return rows


def _refuse_csv(path: Path, exc: csv.Error) -> None:
    """Raise a PloyError naming the line for a CSV error that reading leniently would not cure."""
    line = getattr(exc, "line", "?")
    if "unexpected end of data" in str(exc):
        raise PloyError(f"{path}:{line}: a quote opened on or after this line never closes") from None
    if "field larger than field limit" in str(exc):
        raise PloyError(
            f"{path}:{line}: a field of more than {csv.field_size_limit():,} characters begins on or after this "
            "line; a quote that never closes would make one"
        ) from None


def _csv_records(text: str, *, strict: bool) -> list[tuple[int, list[str]]]:
    """(line, fields) of each non-blank record; a csv.Error carries the line its record began on as ``line``."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=strict)
    records: list[tuple[int, list[str]]] = []
    while True:
        begins = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return records
        except csv.Error as exc:
            exc.line = begins  # type: ignore[attr-defined]
            raise
        if any(v.strip() for v in values):
            records.append((reader.line_num - sum(v.count("\n") for v in values), values))


def load_written(root: Path = WRITTEN) -> list[Example]:
    """Project-written .eml files listed in ``root/labels.csv`` and ``root/labels-*.csv``.

    Columns: path (relative to ``root``), article_share, favour_request,
    lang, note. The CV group is the sender's address, so that a
    networker's drip of several messages stays on one side of a split.
    Rows whose file is missing are skipped with a warning, so that a label
    file being written alongside its messages never breaks a training run.
    """
    examples: list[Example] = []
    seen: set[str] = set()
    for label_file in sorted(root.glob("labels*.csv")):
        for row in read_label_file(label_file, id_column="path", source="written"):
            if row.labels is None or row.id in seen:
                continue
            file = (root / row.id).resolve()
            if root.resolve() not in file.parents or not file.is_file():
                log.warning("%s: %s is listed but not found; skipped", label_file.name, row.id)
                continue
            seen.add(row.id)
            message = parse_message(file.read_bytes())
            group = f"written:{message.sender or row.id}"
            examples.append(Example("written", row.id, message, row.labels, group, file))
    return examples


# ---------------------------------------------------------------------------
# The first model's corpus

_ORIGIN = re.compile(rb"^X-Origin:[ \t]*(\S+)", re.M | re.I)


def _source_root(corpus: Path, source: str) -> Path:
    if source not in SOURCES[:3]:
        raise PloyError(f"unknown corpus source {source!r}; expected one of {', '.join(SOURCES[:3])}")
    return corpus / source


def _group(source: str, rel: str, data: bytes) -> str:
    """The CV group: the Enron user (from the maildir path or X-Origin), else the SpamAssassin folder."""
    if source == "enron-maildir":
        return "enron:" + rel.split("/", 1)[0].lower()
    if source == "enron-berkeley":
        match = _ORIGIN.search(data[:8192])
        if match:
            return "enron:" + match.group(1).decode("ascii", "replace").lower()
        return "enron-berkeley:" + rel.rsplit("/", 1)[0]
    return "spamassassin:" + rel.split("/")[-2]


def normal_id(source: str, item_id: str) -> str:
    """A corpus id as ``_corpus_files`` spells it (SpamAssassin ids may omit their "data/" folder)."""
    if source == "spamassassin" and not item_id.startswith("data/"):
        return "data/" + item_id
    return item_id


def _load(corpus: Path, source: str, item_id: str) -> tuple[ParsedMessage, str, Path] | None:
    rel, _, variant = normal_id(source, item_id).partition("#")
    file = _source_root(corpus, source) / rel
    try:
        data = file.read_bytes()
    except OSError as exc:
        log.warning("%s/%s: cannot read (%s); skipped", source, rel, exc.strerror or exc)
        return None
    message = parse_message(data)
    if variant:
        if "#" + variant != FORWARDED_SUFFIX:
            raise PloyError(f"{source}/{item_id}: unknown variant #{variant}; only {FORWARDED_SUFFIX} exists")
        inner = forwarded_message(message)
        if inner is None:
            log.warning("%s/%s: no forwarded or quoted message found; skipped", source, item_id)
            return None
        message = inner
    return message, _group(source, rel, data), file


def _corpus_files(corpus: Path, source: str) -> list[str]:
    root = _source_root(corpus, source)
    if source == "enron-berkeley":
        files = root.glob("enron_with_categories/*/*.txt")
    elif source == "spamassassin":
        files = root.glob("data/*/*.txt")
    else:
        files = (p for p in root.glob("*/inbox/**/*") if p.is_file())
    return sorted(p.relative_to(root).as_posix() for p in files)


def read_labels(files: Sequence[Path]) -> dict[tuple[str, str], LabelRow]:
    """Label rows keyed by (source, id); a later file's row replaces an earlier one's for the same id."""
    rows: dict[tuple[str, str], LabelRow] = {}
    for file in files:
        for row in read_label_file(file):
            rows[(row.source, normal_id(row.source, row.id))] = row
    return rows


def label_files(first: Path = FIRST_LABELS, real: Path = REAL_LABELS) -> list[Path]:
    """The shipped model's label files, in the order they override each other.

    ``models/first-labels.csv`` came first; ``models/labels/real-part*.csv``
    were read one by one against LABELS.md later, and settle the cases the
    first file left open (a press clipping mailed to a distribution list is
    bulk, so No; a clipping a person sends to a few colleagues is a share).
    """
    return [first, *sorted(real.glob("real-part*.csv"))]


def labelled_examples(
    corpus: Path = DEFAULT_CORPUS,
    files: Sequence[Path] | None = None,
    written: Path = WRITTEN,
    *,
    maildir_sample: int = MAILDIR_SAMPLE,
    seed: int = SAMPLE_SEED,
) -> list[Example]:
    """The shipped model's training set, read from the corpus.

    - every decided row of the label files (``label_files()``; rows marked
      "?" are kept out of training altogether; ``#forwarded`` ids use the
      message embedded in a forward or reply);
    - the project-written mail under ``written``;
    - all of SpamAssassin that is not listed, as negatives: it is list
      traffic, commercial bulk and spam, all No by the label guide;
    - every other enron-berkeley message and a seeded random sample of
      ``maildir_sample`` enron-maildir messages, taken as negatives without
      being read (``trusted=False``): a few of them are shares the labels
      missed, so they train the model but never count in its metrics.

    Exact duplicates (same subject and text, or same Message-ID) are kept
    once, labelled examples first.
    """
    if not corpus.is_dir():
        raise PloyError(f"{corpus}: corpus folder not found; pass --corpus")
    rows = read_labels(label_files() if files is None else files)
    listed = {(source, item_id.partition("#")[0]) for source, item_id in rows}
    examples: list[Example] = []
    for row in rows.values():
        if row.labels is None:
            continue
        loaded = _load(corpus, row.source, row.id)
        if loaded is not None:
            message, group, file = loaded
            examples.append(Example(row.source, row.id, message, row.labels, group, file))
    examples.extend(load_written(written))
    negative = dict.fromkeys(LABELS, False)
    maildir = _corpus_files(corpus, "enron-maildir")
    sample = sorted(random.Random(seed).sample(maildir, min(maildir_sample, len(maildir))))
    for source, ids, trusted in (
        ("spamassassin", _corpus_files(corpus, "spamassassin"), True),
        ("enron-berkeley", _corpus_files(corpus, "enron-berkeley"), False),
        ("enron-maildir", sample, False),
    ):
        for item_id in ids:
            if (source, item_id) in listed:
                continue
            loaded = _load(corpus, source, item_id)
            if loaded is not None:
                message, group, file = loaded
                examples.append(Example(source, item_id, message, negative, group, file, trusted=trusted))
    return deduplicate(examples)


def deduplicate(examples: Iterable[Example]) -> list[Example]:
    """Keep the first of messages with the same Message-ID or the same subject and text.

    A copy labelled otherwise than the one kept (the same mail filed under
    two label folders, say) is named in a warning: one of the two labels
    is a mistake the owner will want to mend. Mail taken as ordinary
    without being read (``trusted=False``) is never a conflict.
    """
    kept: list[Example] = []
    seen: dict[str, Example] = {}
    for example in examples:
        m = example.message
        if m.error:
            continue
        text = f"{m.subject}\x00{m.own_text[:2000]}\x00{m.forwarded_text[:1000]}"
        keys = {"t:" + hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()}
        if m.message_id and not example.id.endswith(FORWARDED_SUFFIX):
            keys.add("m:" + m.message_id)
        first = next((seen[key] for key in keys if key in seen), None)
        if first is not None:
            if first.trusted and example.trusted and dict(first.labels) != dict(example.labels):
                log.warning(
                    "%s is the same message as %s but labelled %s, not %s; the first is kept",
                    example.id,
                    first.id,
                    _label_names(example.labels),
                    _label_names(first.labels),
                )
            continue
        seen.update(dict.fromkeys(keys, example))
        kept.append(example)
    return kept


def _label_names(labels: Mapping[str, bool]) -> str:
    return "+".join(label for label in LABELS if labels.get(label)) or "neither"


def training_summary(examples: Sequence[Example], files: Sequence[Path] = ()) -> dict[str, Any]:
    """Counts for the card: messages by source and language, positives per label by source."""
    by_source = Counter(e.source for e in examples)
    by_language = Counter(e.message.language for e in examples)
    by_both: dict[str, dict[str, int]] = {}
    for e in examples:
        by_both.setdefault(e.source, {}).setdefault(e.message.language, 0)
        by_both[e.source][e.message.language] += 1
    positives = {label: dict(Counter(e.source for e in examples if e.labels.get(label))) for label in LABELS}
    positives_by_language = {
        label: dict(Counter(e.message.language for e in examples if e.labels.get(label))) for label in LABELS
    }
    return {
        "messages": len(examples),
        "hand_labelled": sum(1 for e in examples if e.trusted),
        "assumed_ordinary": sum(1 for e in examples if not e.trusted),
        "by_source": dict(sorted(by_source.items())),
        "by_language": dict(sorted(by_language.items())),
        "by_source_and_language": {k: dict(sorted(v.items())) for k, v in sorted(by_both.items())},
        "positives_by_source": positives,
        "positives_by_language": positives_by_language,
        "embedded_messages": sum(1 for e in examples if e.id.endswith(FORWARDED_SUFFIX)),
        "groups": len({e.group for e in examples}),
        "label_files": [_repo_relative(f) for f in files],
        "note": "ids and labels only are stored in the repository; text is read from ../shared/corpus",
    }


def _repo_relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def build_default_model(
    corpus: Path = DEFAULT_CORPUS,
    out: Path | None = None,
    *,
    written: Path = WRITTEN,
    maildir_sample: int = MAILDIR_SAMPLE,
    seed: int = SAMPLE_SEED,
    n_splits: int = 5,
    repeats: int = DEFAULT_REPEATS,
) -> dict[str, Any]:
    """Rebuild the shipped model from the corpus and the label files; returns its card."""
    files = label_files()
    examples = labelled_examples(corpus, files, written, maildir_sample=maildir_sample, seed=seed)
    log.info("%d training messages", len(examples))
    pipeline, metrics = train(
        [(e.message, e.labels) for e in examples],
        [e.group for e in examples],
        n_splits=n_splits,
        sources=[evaluation_set(e.source, e.message.language) for e in examples],
        trusted=[e.trusted for e in examples],
        repeats=repeats,
    )
    summary = training_summary(examples, files)
    summary["maildir_sample"] = {"size": maildir_sample, "seed": seed}
    return ModelBundle.save(
        pipeline,
        out or default_model_path(),
        thresholds=metrics["thresholds"],
        metrics=metrics,
        training_summary=summary,
        language_offsets=metrics["language_offsets"],
    )


# ---------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m filter.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--default-model", action="store_true", help="rebuild the shipped model")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the corpus folder (../shared/corpus)")
    parser.add_argument("--out", type=Path, default=None, help="bundle folder to write (default: models/default)")
    parser.add_argument("--written", type=Path, default=WRITTEN, help="written mail folder (models/written)")
    parser.add_argument("--sample", type=int, default=MAILDIR_SAMPLE, help="random enron-maildir negatives")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="partitions into folds (thresholds)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not args.default_model:
        parser.print_usage(sys.stderr)
        print("give --default-model to rebuild the shipped model", file=sys.stderr)
        return UsageError.exit_code
    try:
        card = build_default_model(
            args.corpus,
            args.out,
            written=args.written,
            maildir_sample=args.sample,
            seed=args.seed,
            n_splits=args.folds,
            repeats=args.repeats,
        )
    except PloyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    out = args.out or default_model_path()
    print(f"wrote {out} ({card['size_bytes'] / 1e6:.1f} MB, sha256 {card['sha256'][:12]})")
    print("\n".join(metric_lines(card["metrics"], card["labels"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
