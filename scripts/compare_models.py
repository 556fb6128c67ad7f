"""Compare model families by grouped cross-validation on the shipped model's training data.

    .venv/bin/python scripts/compare_models.py [--corpus ../shared/corpus] [--folds 5] [--only NAME ...]

Every candidate sees the same examples and the same grouped folds (no
mailbox on both sides of a split); metrics come from the out-of-fold scores
of the hand-labelled messages only, at thresholds (and language offsets)
chosen as the shipped model's are (``filter.train.operating_points``).
Prints one table per label and one for the share of ordinary mail flagged,
overall and per language.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from filter.features import build_pipeline
from filter.train import DEFAULT_CORPUS, cv_metrics, evaluation_set, label_matrix, labelled_examples, out_of_fold

CANDIDATES: dict[str, Callable[[], Any]] = {
    "logistic": lambda: build_pipeline(family="logistic"),
    "logistic, no char n-grams": lambda: build_pipeline(family="logistic", char_features=0),
    "logistic C=4": lambda: build_pipeline(family="logistic", C=4.0),
    "logistic C=128": lambda: build_pipeline(family="logistic", C=128.0),
    "logistic C=4, no char n-grams": lambda: build_pipeline(family="logistic", C=4.0, char_features=0),
    "logistic, no favour cues": lambda: build_pipeline(family="logistic", cues=False),
    "logistic, shorter texts": lambda: build_pipeline(own_chars=1500, forwarded_chars=1000, char_chars=200),
    "linear SVM": lambda: build_pipeline(family="linear_svm"),
    "linear SVM, no char n-grams": lambda: build_pipeline(family="linear_svm", char_features=0),
    "naive Bayes": lambda: build_pipeline(family="naive_bayes"),
}


SETS = ("enron", "written en", "written fr")


def _f1(metrics: dict[str, Any], key: str, label: str) -> str:
    entry = metrics["by_source"].get(key, {}).get(label, {})
    return f"{entry['at_threshold']['f1']} ({entry['positives']})" if entry else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only", nargs="*", choices=sorted(CANDIDATES), help="candidates to run (default: all)")
    parser.add_argument("--save", type=Path, help="a folder to keep each candidate's out-of-fold scores in")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.corpus.is_dir():
        print(f"{args.corpus}: corpus not found; this comparison needs ../shared/corpus", file=sys.stderr)
        return 2
    if args.save:
        # made before the first candidate's minutes of work, not after them
        args.save.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    examples = labelled_examples(args.corpus)
    messages = [e.message for e in examples]
    y = label_matrix([e.labels for e in examples])
    groups = [e.group for e in examples]
    trusted = np.array([e.trusted for e in examples])
    languages = [e.message.language for e, t in zip(examples, trusted, strict=True) if t]
    sets = [evaluation_set(e.source, e.message.language) for e, t in zip(examples, trusted, strict=True) if t]
    print(
        f"{len(examples)} messages ({int(trusted.sum())} hand-labelled and scored), {len(set(groups))} groups, "
        f"{args.folds} grouped folds; read in {time.monotonic() - started:.0f} s\n"
    )
    rows: list[tuple[str, dict[str, Any], float]] = []
    for name in args.only or CANDIDATES:
        begun = time.monotonic()
        oof = out_of_fold(messages, y, groups, n_splits=args.folds, make_pipeline=CANDIDATES[name])
        metrics = cv_metrics(y[trusted], oof[trusted], languages=languages, sources=sets)
        if args.save:
            np.save(args.save / f"{name.replace(' ', '_').replace(',', '')}.npy", oof)
        rows.append((name, metrics, time.monotonic() - begun))
        print(f"{name}: done in {rows[-1][2]:.0f} s", file=sys.stderr)
    for label in ("article_share", "favour_request"):
        print(f"### {label}\n")
        print("| model | AP | threshold | precision | recall | F1 | F1 enron | F1 written en | F1 written fr | time |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, m, seconds in rows:
            at = m[label]["at_threshold"]
            f1 = [_f1(m, key, label) for key in SETS]
            print(
                f"| {name} | {m[label]['average_precision']} | {m[label]['threshold']} | {at['precision']} | "
                f"{at['recall']} | {at['f1']} | {' | '.join(f1)} | {seconds:.0f} s |"
            )
        print()
    print("### ordinary mail flagged\n")
    print("| model | all | enron | written en | written fr | SpamAssassin |")
    print("|---|---|---|---|---|---|")
    for name, m, _ in rows:
        by = m["by_source"]
        shares = [str(by.get(key, {}).get("ordinary_flagged")) for key in (*SETS, "spamassassin")]
        print(f"| {name} | {m['ordinary_flagged']} | {' | '.join(shares)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
