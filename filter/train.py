"""Labelled mail -> grouped cross-validation -> a fitted pipeline, thresholds and metrics -> a bundle.

Cross-validation is grouped by mailbox (an Enron user, a SpamAssassin
folder, one written file), so that no person's mail is on both sides of a
split: a filter is always used on mail from people it has not seen.
Default thresholds are chosen on the out-of-fold scores, aiming at a
precision of 0.95, because a wrongly moved message costs the owner more
than one left in the inbox.

The repository stores ids and labels only (``models/first-labels.csv``,
``models/written/labels*.csv``); message text is read from the corpus at
training time. ``python -m filter.train --first-model`` rebuilds the
shipped model from them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
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
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline

from filter.config import LABELS
from filter.errors import PloyError, UsageError
from filter.features import build_pipeline
from filter.message import ParsedMessage, forwarded_message, parse_message
from filter.model import ModelBundle, default_model_path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
FIRST_LABELS = REPO / "models" / "first-labels.csv"
WRITTEN = REPO / "models" / "written"

TARGET_PRECISION = 0.95
FALLBACK_THRESHOLD = 0.8
MIN_PREDICTED_AT_THRESHOLD = 5
MAILDIR_SAMPLE = 3000
SAMPLE_SEED = 20240601
FORWARDED_SUFFIX = "#forwarded"

SOURCES = ("enron-berkeley", "enron-maildir", "spamassassin", "written")


@dataclass(frozen=True)
class Example:
    """One labelled message: where it came from, its parse, its labels and its CV group."""

    source: str
    id: str
    message: ParsedMessage
    labels: Mapping[str, bool]
    group: str


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
) -> tuple[Pipeline, dict[str, Any]]:
    """Grouped cross-validation for metrics and thresholds, then a fit on all the data.

    Returns the fitted pipeline and a metrics dict with, per label, the
    out-of-fold precision, recall and F1 at 0.5 and at the chosen default
    threshold (``metrics["thresholds"]``), and the average precision.
    ``make_pipeline`` must end with a step named "classify" whose ``fit``
    takes ``groups`` (as ``build_pipeline()``'s does), so that calibration
    inside each fit also keeps mailboxes whole.
    """
    if len(examples) != len(groups):
        raise ValueError(f"{len(examples)} examples but {len(groups)} groups")
    messages = [m for m, _ in examples]
    y = np.array([[int(bool(lab.get(label, False))) for label in labels] for _, lab in examples], dtype=np.int8)
    group_array = np.asarray(groups)
    splits = min(n_splits, len(set(groups)))
    oof = np.zeros(y.shape, dtype=np.float64)
    started = time.monotonic()
    for fold, (train_idx, test_idx) in enumerate(GroupKFold(n_splits=splits).split(messages, y, group_array)):
        pipeline = make_pipeline()
        pipeline.fit([messages[i] for i in train_idx], y[train_idx], classify__groups=group_array[train_idx])
        oof[test_idx] = pipeline.predict_proba([messages[i] for i in test_idx])
        elapsed = time.monotonic() - started
        log.info("fold %d/%d done (%d test messages, %.0f s)", fold + 1, splits, len(test_idx), elapsed)
    metrics: dict[str, Any] = {
        "cv": {"folds": splits, "grouped_by": "mailbox (Enron user, SpamAssassin folder, written file)"},
        "thresholds": {},
        "target_precision": TARGET_PRECISION,
    }
    for j, label in enumerate(labels):
        threshold, reason = choose_threshold(y[:, j], oof[:, j])
        metrics["thresholds"][label] = threshold
        metrics[label] = _label_metrics(y[:, j], oof[:, j], threshold, reason, sources)
    final = make_pipeline()
    final.fit(messages, y, classify__groups=group_array)
    log.info("final fit done (%d messages, %.0f s in all)", len(messages), time.monotonic() - started)
    return final, metrics


def choose_threshold(
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
        "average_precision": round(float(average_precision_score(truth, scores)), 4) if truth.any() else None,
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
    tp = int((predicted & (truth == 1)).sum())
    fp = int((predicted & (truth == 0)).sum())
    fn = int((~predicted & (truth == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "tp": tp, "fp": fp}


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
    """Rows of a label CSV (``source,id,...`` or ``path,...``) with one column per label."""
    rows: list[LabelRow] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {id_column, *LABELS} - set(reader.fieldnames or ())
        if missing:
            raise PloyError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for n, row in enumerate(reader, start=2):
            where = f"{path}:{n}"
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
    return rows


def load_written(root: Path = WRITTEN) -> list[Example]:
    """Project-written .eml files listed in ``root/labels.csv`` and ``root/labels-*.csv``.

    Columns: path (relative to ``root``), article_share, favour_request,
    lang, note. Rows whose file is missing are skipped with a warning, so
    that a label file being written alongside its messages never breaks a
    training run.
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
            examples.append(Example("written", row.id, message, row.labels, f"written:{row.id}"))
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


def _load(corpus: Path, source: str, item_id: str) -> tuple[ParsedMessage, str] | None:
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
    return message, _group(source, rel, data)


def _corpus_files(corpus: Path, source: str) -> list[str]:
    root = _source_root(corpus, source)
    if source == "enron-berkeley":
        files = root.glob("enron_with_categories/*/*.txt")
    elif source == "spamassassin":
        files = root.glob("data/*/*.txt")
    else:
        files = (p for p in root.glob("*/inbox/**/*") if p.is_file())
    return sorted(p.relative_to(root).as_posix() for p in files)


def first_model_examples(
    corpus: Path = DEFAULT_CORPUS,
    labels_file: Path = FIRST_LABELS,
    written: Path = WRITTEN,
    *,
    maildir_sample: int = MAILDIR_SAMPLE,
    seed: int = SAMPLE_SEED,
) -> list[Example]:
    """The first model's training set, read from the corpus.

    - every row of ``labels_file`` (hand-checked positives and hard
      negatives; ``#forwarded`` ids use the message embedded in a forward
      or reply; rows marked "?" are kept out of training altogether);
    - every other enron-berkeley message, as a negative;
    - a seeded random sample of ``maildir_sample`` enron-maildir messages,
      as negatives (drawn from all of them, so that labelling more ids
      does not change which others are drawn; listed ids keep their label);
    - all of SpamAssassin (easy, hard ham, including the rssfeeds@ items,
      and spam), as negatives: bulk and spam are No for both labels;
    - the project-written mail under ``written``.

    Exact duplicates (same subject and text, or same Message-ID) are kept
    once, labelled examples first.
    """
    if not corpus.is_dir():
        raise PloyError(f"{corpus}: corpus folder not found; pass --corpus")
    rows = read_label_file(labels_file)
    listed = {(r.source, normal_id(r.source, r.id).partition("#")[0]) for r in rows}
    examples: list[Example] = []
    for row in rows:
        if row.labels is None:
            continue
        loaded = _load(corpus, row.source, row.id)
        if loaded is not None:
            examples.append(Example(row.source, row.id, loaded[0], row.labels, loaded[1]))
    examples.extend(load_written(written))
    negative = dict.fromkeys(LABELS, False)
    maildir = _corpus_files(corpus, "enron-maildir")
    sample = sorted(random.Random(seed).sample(maildir, min(maildir_sample, len(maildir))))
    for source, ids in (
        ("enron-berkeley", _corpus_files(corpus, "enron-berkeley")),
        ("enron-maildir", sample),
        ("spamassassin", _corpus_files(corpus, "spamassassin")),
    ):
        for item_id in ids:
            if (source, item_id) in listed:
                continue
            loaded = _load(corpus, source, item_id)
            if loaded is not None:
                examples.append(Example(source, item_id, loaded[0], negative, loaded[1]))
    return deduplicate(examples)


def deduplicate(examples: Iterable[Example]) -> list[Example]:
    """Keep the first of messages with the same Message-ID or the same subject and text."""
    kept: list[Example] = []
    seen: set[str] = set()
    for example in examples:
        m = example.message
        if m.error:
            continue
        text = f"{m.subject}\x00{m.own_text[:2000]}\x00{m.forwarded_text[:1000]}"
        keys = {"t:" + hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()}
        if m.message_id and not example.id.endswith(FORWARDED_SUFFIX):
            keys.add("m:" + m.message_id)
        if keys & seen:
            continue
        seen.update(keys)
        kept.append(example)
    return kept


def training_summary(examples: Sequence[Example], labels_file: Path = FIRST_LABELS) -> dict[str, Any]:
    """Counts for the card: messages by source and language, positives per label by source."""
    by_source = Counter(e.source for e in examples)
    by_language = Counter(e.message.language for e in examples)
    by_both: dict[str, dict[str, int]] = {}
    for e in examples:
        by_both.setdefault(e.source, {}).setdefault(e.message.language, 0)
        by_both[e.source][e.message.language] += 1
    positives = {label: dict(Counter(e.source for e in examples if e.labels.get(label))) for label in LABELS}
    forwarded = sum(1 for e in examples if e.id.endswith(FORWARDED_SUFFIX))
    try:
        label_file = labels_file.resolve().relative_to(REPO).as_posix()
    except ValueError:
        label_file = str(labels_file)
    return {
        "messages": len(examples),
        "by_source": dict(sorted(by_source.items())),
        "by_language": dict(sorted(by_language.items())),
        "by_source_and_language": {k: dict(sorted(v.items())) for k, v in sorted(by_both.items())},
        "positives_by_source": positives,
        "embedded_messages": forwarded,
        "groups": len({e.group for e in examples}),
        "label_file": label_file,
        "note": "ids and labels only are stored in the repository; text is read from ../shared/corpus",
    }


def build_first_model(
    corpus: Path = DEFAULT_CORPUS,
    out: Path | None = None,
    *,
    labels_file: Path = FIRST_LABELS,
    written: Path = WRITTEN,
    maildir_sample: int = MAILDIR_SAMPLE,
    seed: int = SAMPLE_SEED,
    n_splits: int = 5,
) -> dict[str, Any]:
    """Rebuild the shipped model from the corpus and the label files; returns its card."""
    examples = first_model_examples(corpus, labels_file, written, maildir_sample=maildir_sample, seed=seed)
    log.info("%d training messages", len(examples))
    pipeline, metrics = train(
        [(e.message, e.labels) for e in examples],
        [e.group for e in examples],
        n_splits=n_splits,
        sources=[e.source for e in examples],
    )
    summary = training_summary(examples, labels_file)
    summary["maildir_sample"] = {"size": maildir_sample, "seed": seed}
    return ModelBundle.save(
        pipeline,
        out or default_model_path(),
        thresholds=metrics["thresholds"],
        metrics=metrics,
        training_summary=summary,
    )


# ---------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m filter.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--first-model", action="store_true", help="rebuild the shipped first model")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the corpus folder (../shared/corpus)")
    parser.add_argument("--out", type=Path, default=None, help="bundle folder to write (default: models/default)")
    parser.add_argument("--labels", type=Path, default=FIRST_LABELS, help="id/label file (models/first-labels.csv)")
    parser.add_argument("--written", type=Path, default=WRITTEN, help="written mail folder (models/written)")
    parser.add_argument("--sample", type=int, default=MAILDIR_SAMPLE, help="random enron-maildir negatives")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not args.first_model:
        parser.print_usage(sys.stderr)
        print("give --first-model to rebuild the shipped model", file=sys.stderr)
        return UsageError.exit_code
    try:
        card = build_first_model(
            args.corpus,
            args.out,
            labels_file=args.labels,
            written=args.written,
            maildir_sample=args.sample,
            seed=args.seed,
            n_splits=args.folds,
        )
    except PloyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    out = args.out or default_model_path()
    print(f"wrote {out} ({card['size_bytes'] / 1e6:.1f} MB, sha256 {card['sha256'][:12]})")
    for label in card["labels"]:
        m = card["metrics"][label]
        t = m["at_threshold"]
        print(
            f"{label}: {m['positives']} positives, AP {m['average_precision']}, threshold {m['threshold']}: "
            f"precision {t['precision']:.2f} recall {t['recall']:.2f} F1 {t['f1']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
