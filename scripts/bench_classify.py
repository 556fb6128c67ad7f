#!/usr/bin/env python3
"""Benchmark classification of real mail files, beside bogofilter.

Prints two tables:
  * speed: ``ployfilter classify --json FILE...`` as one process on a seeded
    sample of corpus files (median of repetitions): the whole command
    (start-up, imports and model load included) and the messages after
    start-up, with CPU time and peak RSS; start-up, imports and model load
    measured apart; bogofilter (Debian's package) on the same files with
    one wordlist per label;
  * accuracy: on one grouped split of the labelled data (no mailbox or
    sender on both sides), a fresh pipeline and a two-class bogofilter per
    label trained on the same training files, scored on the hand-labelled
    messages of the test part: precision, recall, F1, average precision,
    ordinary mail flagged, and training time.

Messages embedded in another (``#forwarded`` ids) have no file of their
own for bogofilter to read, so both tools leave them out. Needs the
research corpus in ../shared/corpus.

    .venv/bin/python scripts/bench_classify.py [--quick] [--speed-only | --accuracy-only]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.metrics import average_precision_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import benchlib  # noqa: E402
from benchlib import Run  # noqa: E402

from filter.config import LABELS  # noqa: E402
from filter.dataset import Example  # noqa: E402
from filter.evaluate import counts  # noqa: E402
from filter.features import build_pipeline  # noqa: E402
from filter.model import CARD_FILE, default_model_path, offset_arrays, shift_by_language  # noqa: E402
from filter.train import (  # noqa: E402
    DEFAULT_CORPUS,
    FORWARDED_SUFFIX,
    cv_metrics,
    evaluation_set,
    label_matrix,
    labelled_examples,
    out_of_fold,
)

SEED = 20240601
SPEED_SHARES = (("enron-maildir", 0.8), ("enron-berkeley", 0.1), ("spamassassin", 0.1))
SPEED_GLOBS = {
    "enron-maildir": "*/**/*",
    "enron-berkeley": "enron_with_categories/*/*.txt",
    "spamassassin": "data/*/*.txt",
}
TEST_SHARE = 0.22

PROBE = """
import json, sys, time
started = time.perf_counter()
import filter.cli, filter.message, filter.runner
from filter.model import ModelBundle, default_model_path
imported = time.perf_counter()
ModelBundle.load(default_model_path())
json.dump({"import": imported - started, "load": time.perf_counter() - imported}, sys.stdout)
"""


def run_child(argv: Sequence[str], output: Path, stdin: bytes | None = None) -> Run:
    """``benchlib.run_child``, stopping on a failed child (bogofilter: 0 spam, 1 ham, 2 unsure; 3 is an error)."""
    run = benchlib.run_child(argv, output, stdin=stdin)
    if run.code not in (0, 1, 2):
        raise SystemExit(f"{' '.join(argv[:3])} ... failed with status {run.code}")
    return run


def median_run(runs: Sequence[Run]) -> Run:
    return Run(
        statistics.median(r.wall for r in runs),
        statistics.median(r.cpu for r in runs),
        max(r.rss for r in runs),
    )


# ---------------------------------------------------------------------------
# Data


def speed_sample(corpus: Path, count: int) -> tuple[list[Path], str]:
    """A seeded sample of corpus files, mostly Enron maildir, with Enron Berkeley and SpamAssassin beside."""
    chosen: list[Path] = []
    parts = []
    for source, share in SPEED_SHARES:
        files = sorted(p for p in (corpus / source).glob(SPEED_GLOBS[source]) if p.is_file())
        take = min(round(count * share), len(files))
        chosen += random.Random(f"{SEED}:{source}").sample(files, take)
        parts.append(f"{take} {source}")
    return [p.resolve() for p in chosen], ", ".join(parts)


def grouped_split(examples: Sequence[Example], share: float, seed: int) -> tuple[list[int], list[int]]:
    """Whole groups to the test part, about ``share`` of each source's messages, so no group is on both sides.

    A group goes with the source most of its messages come from; groups are
    drawn in a seeded order and skipped when they would overshoot a source's
    share by half, so that a few big SpamAssassin folders cannot fill it.
    """
    members: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        members[e.group].append(i)
    by_source: dict[str, list[str]] = defaultdict(list)
    for group, idx in sorted(members.items()):
        by_source[Counter(examples[i].source for i in idx).most_common(1)[0][0]].append(group)
    rng = random.Random(seed)
    test: set[str] = set()
    for _source, groups in sorted(by_source.items()):
        target = share * sum(len(members[g]) for g in groups)
        order = groups[:]
        rng.shuffle(order)
        taken = 0
        for group in order:
            if taken + len(members[group]) <= 1.5 * target:
                test.add(group)
                taken += len(members[group])
            if taken >= target:
                break
        if not taken:
            test.add(min(order, key=lambda g: len(members[g])))
    train_idx = [i for i, e in enumerate(examples) if e.group not in test]
    test_idx = [i for i, e in enumerate(examples) if e.group in test]
    return train_idx, test_idx


# ---------------------------------------------------------------------------
# bogofilter


def bogofilter_version(binary: str) -> str:
    out = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False).stdout.split()
    return out[2] if len(out) > 2 else "?"


def bogofilter_cutoff(binary: str) -> str:
    """The spam_cutoff of bogofilter's built-in configuration (-C): its S verdict is a spamicity at or above it."""
    query = subprocess.run([binary, "-C", "-Q"], capture_output=True, text=True, check=False).stdout
    for line in query.splitlines():
        if line.startswith("spam_cutoff"):
            return f"{float(line.split('=')[1].split('#')[0]):g}"
    return "?"


def file_of(example: Example) -> Path:
    if example.path is None:
        raise SystemExit(f"{example.source}/{example.id}: the labelled data gives no file")
    return example.path


def bogofilter_train(binary: str, root: Path, examples: Sequence[Example], label: str) -> tuple[Path, float]:
    """A wordlist for one label, positives registered as spam and the rest as ham; its registration time."""
    wordlist = root / label
    wordlist.mkdir()
    elapsed = 0.0
    for flag, wanted in (("-s", True), ("-n", False)):
        names = "".join(f"{file_of(e)}\n" for e in examples if bool(e.labels.get(label)) is wanted)
        elapsed += run_child([binary, "-C", "-d", str(wordlist), flag, "-b"], root / "train.out", names.encode()).wall
    return wordlist, elapsed


def bogofilter_score(
    binary: str, wordlist: Path, files: Sequence[Path], out: Path, terse: str
) -> tuple[Run, list[str]]:
    """``bogofilter -T -B FILE...`` (or ``-TT``) against ``wordlist``: the run, and one line per file."""
    run = run_child([binary, "-C", "-d", str(wordlist), terse, "-B", *map(str, files)], out)
    lines = out.read_text().splitlines()
    if len(lines) != len(files):
        raise SystemExit(f"bogofilter printed {len(lines)} lines for {len(files)} files")
    return run, lines


# ---------------------------------------------------------------------------
# Speed


def bench_speed(
    files: Sequence[Path], reps: int, root: Path, bogofilter: str | None, wordlists: dict[str, Path]
) -> tuple[list[tuple[str, Run, float | None]], str]:
    """Rows of (what, run, messages per second) and a line on the checked output."""
    bindir = Path(sys.executable).parent
    ployfilter = str(bindir / "ployfilter")
    ours: list[Run] = []
    probes: list[Run] = []
    parts: list[dict[str, float]] = []
    theirs: dict[str, list[Run]] = {label: [] for label in wordlists}
    checked = ""
    for rep in range(reps):
        print(f"speed: repetition {rep + 1}/{reps}", file=sys.stderr)
        out = root / "classify.jsonl"
        ours.append(run_child([ployfilter, "classify", "--json", *map(str, files)], out))
        checked = check_json(out, files)
        probes.append(run_child([sys.executable, "-c", PROBE], root / "probe.json"))
        parts.append(json.loads((root / "probe.json").read_text()))
        if bogofilter is not None:
            for label, wordlist in wordlists.items():
                theirs[label].append(bogofilter_score(bogofilter, wordlist, files, root / "bogo.out", "-T")[0])
    n = len(files)
    whole, startup = median_run(ours), median_run(probes)
    after = Run(whole.wall - startup.wall, whole.cpu - startup.cpu, whole.rss)
    rows: list[tuple[str, Run, float | None]] = [
        ("start-up: interpreter, imports, model load", startup, None),
        ("  of which imports", Run(statistics.median(p["import"] for p in parts), 0.0, 0.0), None),
        ("  of which model load", Run(statistics.median(p["load"] for p in parts), 0.0, 0.0), None),
        ("ployfilter classify --json: whole command", whole, n / whole.wall),
        ("ployfilter: read, parse, score after start-up", after, n / after.wall),
    ]
    if bogofilter is not None:
        medians = {label: median_run(runs) for label, runs in theirs.items()}
        for label, run in medians.items():
            rows.append((f"bogofilter -T -B, {label} wordlist", run, n / run.wall))
        both = Run(
            sum(r.wall for r in medians.values()),
            sum(r.cpu for r in medians.values()),
            max(r.rss for r in medians.values()),
        )
        rows.append(("bogofilter, both labels (two runs)", both, n / both.wall))
    return rows, checked


def check_json(out: Path, files: Sequence[Path]) -> str:
    """One JSON object per file, in order; counts those with scores and those skipped or failed."""
    lines = out.read_text().splitlines()
    if len(lines) != len(files):
        raise SystemExit(f"ployfilter classify printed {len(lines)} lines for {len(files)} files")
    scored = skipped = 0
    for line, file in zip(lines, files, strict=True):
        obj = json.loads(line)
        if obj.get("file") != str(file):
            raise SystemExit(f"ployfilter classify: line for {obj.get('file')!r} where {file} was expected")
        if obj.get("error") or obj.get("note"):
            skipped += 1
        elif obj.get("scores"):
            scored += 1
    return f"{len(lines)} JSON lines for {len(files)} files: {scored} scored, {skipped} skipped or unreadable"


def print_speed(rows: Sequence[tuple[str, Run, float | None]], files: int, reps: int, floor: float) -> None:
    print(
        f"speed: {files} messages, one process per command, median of {reps}; peak RSS is the child's "
        f"ru_maxrss, started from a launcher of {floor:.0f} MiB (smaller peaks read as that)"
    )
    print()
    print(f"| {'what':<46} | {'wall':>8} | {'msgs/s':>7} | {'CPU':>8} | {'msgs/CPU s':>10} | {'peak RSS':>9} |")
    print(f"|{'-' * 48}|{'-' * 10}|{'-' * 9}|{'-' * 10}|{'-' * 12}|{'-' * 11}|")
    for name, run, rate in rows:
        cpu = f"{run.cpu:>6.2f} s" if run.cpu else ""
        per_cpu = f"{files / run.cpu:.0f}" if run.cpu and rate is not None else ""
        rss = f"{run.rss:>5.0f} MiB" if run.rss else ""
        per = f"{rate:.0f}" if rate is not None else ""
        print(f"| {name:<46} | {run.wall:>6.2f} s | {per:>7} | {cpu:>8} | {per_cpu:>10} | {rss:>9} |")
    print()


# ---------------------------------------------------------------------------
# Accuracy


@dataclass(frozen=True)
class Verdicts:
    """One tool's scores and yes/no per label on the test part, and its training seconds."""

    tool: str
    scores: dict[str, np.ndarray[Any, Any]]
    flagged: dict[str, np.ndarray[Any, Any]]
    cutoff: dict[str, str]
    train_seconds: float


def ployfilter_verdicts(train: Sequence[Example], test: Sequence[Example], folds: int) -> tuple[Verdicts, str]:
    """A fresh pipeline fitted on the training part; thresholds from its out-of-fold scores, or the card's."""
    messages = [e.message for e in train]
    y = label_matrix([e.labels for e in train])
    groups = [e.group for e in train]
    print(f"accuracy: fitting ployfilter's pipeline on {len(train)} messages", file=sys.stderr)
    started = time.perf_counter()
    pipeline = build_pipeline()
    pipeline.fit(messages, y, classify__groups=np.asarray(groups))
    fit_seconds = time.perf_counter() - started
    proba = np.asarray(pipeline.predict_proba([e.message for e in test]), dtype=np.float64)
    if folds:
        print(f"accuracy: {folds}-fold grouped out-of-fold scores on the training part", file=sys.stderr)
        started = time.perf_counter()
        oof = out_of_fold(messages, y, groups, n_splits=folds)
        keep = np.array([e.trusted for e in train])
        sets = [evaluation_set(e.source, e.message.language) for e, k in zip(train, keep, strict=True) if k]
        languages = [e.message.language for e, k in zip(train, keep, strict=True) if k]
        metrics = cv_metrics(y[keep], oof[keep], languages=languages, sources=sets)
        thresholds, offsets = metrics["thresholds"], metrics["language_offsets"]
        how = (
            "ployfilter's thresholds: chosen as the shipped model's (best F1, ordinary mail flagged capped) "
            f"on {folds}-fold grouped out-of-fold scores of the training part "
            f"({time.perf_counter() - started:.0f} s, not in its train time)"
        )
    else:
        card = json.loads((default_model_path() / CARD_FILE).read_text())
        thresholds = {label: float(card["thresholds"][label]) for label in LABELS}
        offsets = card.get("language_offsets", {})
        how = "ployfilter's thresholds: the shipped model's card (chosen on all the data, test part included)"
    proba = shift_by_language(proba, [e.message.language for e in test], offset_arrays(offsets, LABELS))
    return (
        Verdicts(
            "ployfilter",
            {label: proba[:, j] for j, label in enumerate(LABELS)},
            {label: proba[:, j] >= thresholds[label] for j, label in enumerate(LABELS)},
            {label: f"{thresholds[label]:.3f}" for label in LABELS},
            fit_seconds,
        ),
        how,
    )


def bogofilter_verdicts(
    binary: str, wordlists: dict[str, Path], train_seconds: float, test: Sequence[Example], root: Path
) -> Verdicts:
    """bogofilter's own Spam verdict (-T "S") and its spamicity to 16 digits (-TT) for each label's wordlist."""
    files = [file_of(e) for e in test]
    cutoff = f"{bogofilter_cutoff(binary)} (S)"
    scores: dict[str, np.ndarray[Any, Any]] = {}
    flagged: dict[str, np.ndarray[Any, Any]] = {}
    for label, wordlist in wordlists.items():
        _, terse = bogofilter_score(binary, wordlist, files, root / "verdict.out", "-T")
        _, exact = bogofilter_score(binary, wordlist, files, root / "score.out", "-TT")
        flagged[label] = np.array([line.rsplit(" ", 2)[-2] == "S" for line in terse])
        scores[label] = np.array([float(line.rsplit(" ", 1)[-1]) for line in exact])
    return Verdicts("bogofilter", scores, flagged, dict.fromkeys(LABELS, cutoff), train_seconds)


def label_rows(verdicts: Verdicts, test: Sequence[Example]) -> list[tuple[str, ...]]:
    keep = np.array([e.trusted for e in test])
    y = label_matrix([e.labels for e in test])[keep].astype(bool)
    ordinary = ~y.any(axis=1)
    rows: list[tuple[str, ...]] = []
    for j, label in enumerate(LABELS):
        truth = y[:, j]
        flagged = verdicts.flagged[label][keep]
        c = counts(truth, flagged)
        ap = average_precision_score(truth, verdicts.scores[label][keep]) if truth.any() else float("nan")
        rows.append(
            (
                label,
                verdicts.tool,
                verdicts.cutoff[label],
                f"{c.precision or 0.0:.2f}",
                f"{c.recall or 0.0:.2f}",
                f"{c.f1 or 0.0:.2f}",
                f"{ap:.2f}",
                f"{100 * flagged[ordinary].mean():.1f}%",
                f"{c.tp}/{c.positives}",
            )
        )
    return rows


def table_row(cells: Sequence[str], widths: Sequence[int]) -> str:
    """Two text columns left-aligned, the figures right-aligned."""
    padded = (c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    return "| " + " | ".join(padded) + " |"


def print_accuracy(rows: Sequence[tuple[str, ...]], train_times: dict[str, str]) -> None:
    head = ("label", "tool", "cut-off", "precision", "recall", "F1", "AP", "ordinary flagged", "caught")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
    print(table_row(head, widths))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(table_row(row, widths))
    print()
    print(
        "cut-off: ployfilter's threshold, bogofilter's spam_cutoff (its S verdict); AP: average precision of "
        "the scores (bogofilter's spamicity); ordinary flagged: share of the test messages with neither label "
        "that get this one; caught: positives flagged / positives"
    )
    print("training time: " + "; ".join(f"{tool} {spent}" for tool, spent in train_times.items()))
    print()


# ---------------------------------------------------------------------------


def environment(bogofilter: str | None) -> str:
    card = json.loads((default_model_path() / CARD_FILE).read_text())
    load = os.getloadavg()[0]
    bogo = f"bogofilter {bogofilter_version(bogofilter)}" if bogofilter else "bogofilter not installed"
    return (
        f"{datetime.date.today().isoformat()}; model sha256 {card['sha256'][:12]}; {os.cpu_count()} CPUs "
        f"(load {load:.1f} at start); Python {sys.version.split()[0]}; scikit-learn {sklearn.__version__}; {bogo}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the corpus folder (../shared/corpus)")
    parser.add_argument("--messages", type=int, default=None, help="files for the speed part (5000; 1000 quick)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions of the speed part (3; 1 quick)")
    parser.add_argument(
        "--folds",
        type=int,
        default=None,
        help="grouped folds on the training part to choose ployfilter's thresholds (3); 0 takes the card's "
        "(the default with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="1,000 files once, the card's thresholds")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--speed-only", action="store_true", help="skip the accuracy part")
    only.add_argument("--accuracy-only", action="store_true", help="skip the speed part")
    args = parser.parse_args()
    count = args.messages or (1000 if args.quick else 5000)
    reps = args.repeat or (1 if args.quick else 3)
    folds = args.folds if args.folds is not None else (0 if args.quick else 3)
    if not args.corpus.is_dir():
        print(f"{args.corpus}: corpus not found; this benchmark reads real mail from ../shared/corpus", file=sys.stderr)
        return 2
    bogofilter = shutil.which("bogofilter")
    print(environment(bogofilter))
    if bogofilter is None:
        print("bogofilter not found: apt-get install bogofilter")
    print()

    root = Path(tempfile.mkdtemp(prefix="ployfilter-bench-"))
    try:
        wordlists: dict[str, Path] = {}
        bogo_train: dict[str, float] = {}
        train: list[Example] = []
        test: list[Example] = []
        forwarded = 0
        if bogofilter is not None or not args.speed_only:
            print("reading the labelled data", file=sys.stderr)
            labelled = labelled_examples(args.corpus)
            examples = [e for e in labelled if not e.id.endswith(FORWARDED_SUFFIX)]
            forwarded = len(labelled) - len(examples)
            train_idx, test_idx = grouped_split(examples, TEST_SHARE, SEED)
            train, test = [examples[i] for i in train_idx], [examples[i] for i in test_idx]
            if bogofilter is not None:
                for label in LABELS:
                    wordlists[label], bogo_train[label] = bogofilter_train(bogofilter, root, train, label)
        if not args.accuracy_only:
            files, composition = speed_sample(args.corpus, count)
            rows, checked = bench_speed(files, reps, root, bogofilter, wordlists)
            floor = run_child([shutil.which("true") or "/bin/true"], root / "floor.out").rss
            load = os.getloadavg()[0]
            print(f"messages: {composition} (seed {SEED}); {checked}; load {load:.1f} after")
            print_speed(rows, len(files), reps, floor)
        if not args.speed_only:
            mine, how = ployfilter_verdicts(train, test, folds)
            results = label_rows(mine, test)
            times = {"ployfilter": f"{mine.train_seconds:.0f} s (one fit, both labels)"}
            if bogofilter is not None:
                other = bogofilter_verdicts(bogofilter, wordlists, sum(bogo_train.values()), test, root)
                results = [r for pair in zip(results, label_rows(other, test), strict=True) for r in pair]
                times["bogofilter"] = ", ".join(f"{label} {bogo_train[label]:.1f} s" for label in LABELS)
            print(describe_split(train, test, forwarded))
            print(how)
            print()
            print_accuracy(results, times)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def describe_split(train: Sequence[Example], test: Sequence[Example], forwarded: int) -> str:
    trusted = [e for e in test if e.trusted]
    positives = ", ".join(f"{sum(1 for e in trusted if e.labels.get(label))} {label}" for label in LABELS)
    return (
        f"accuracy: grouped split (seed {SEED}, about {TEST_SHARE:.0%} of each source to test, no group on both "
        f"sides): {len(train)} training messages ({len({e.group for e in train})} groups), {len(test)} test "
        f"({len({e.group for e in test})} groups); scored on the {len(trusted)} hand-labelled test messages "
        f"({positives}); {forwarded} embedded #forwarded messages left out for both tools"
    )


if __name__ == "__main__":
    sys.exit(main())
