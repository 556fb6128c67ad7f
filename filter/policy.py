"""Scores + thresholds -> Decision. Pure: no I/O, no clock, no model.

Deciding is kept apart from acting (the runner acts), so ``dry-run`` is the
very same decision with the act left out, and every decision carries
human-readable reasons for the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from filter.config import LABELS

KEYWORDS = {"article_share": "$PloyArticle", "favour_request": "$PloyFavour"}

# When a message is both an article and an ask, it goes where the ask goes:
# the ask is what costs the owner time, and the mix is the ploy itself.
_PRECEDENCE = ("favour_request", "article_share")


@dataclass(frozen=True)
class Decision:
    """What to do with one message, and why.

    ``action`` is one of "move" (to ``target``), "flag" (add ``keywords`` in
    place), "keep" (leave it) or "skip" (could not be judged; left in place).
    """

    action: str
    labels: tuple[str, ...]
    target: str | None
    keywords: tuple[str, ...]
    reasons: tuple[str, ...]


def decide(
    scores: Mapping[str, float],
    thresholds: Mapping[str, float],
    folders: Mapping[str, str],
    mode: str,
) -> Decision:
    """Decide for one message from its scores.

    ``mode`` is the config's ``action``: "move", "flag" or "dry-run" (which
    decides as "move" does; the runner then leaves the act out).
    """
    labels = tuple(label for label in LABELS if scores.get(label, 0.0) >= thresholds[label])
    reasons = tuple(
        f"{label} {scores.get(label, 0.0):.2f} {'>=' if label in labels else '<'} {thresholds[label]:.2f}"
        for label in LABELS
    )
    if not labels:
        return Decision("keep", (), None, (), reasons)
    keywords = tuple(KEYWORDS[label] for label in labels)
    if mode == "flag":
        return Decision("flag", labels, None, keywords, reasons)
    main = next(label for label in _PRECEDENCE if label in labels)
    return Decision("move", labels, folders[main], keywords, reasons)


def skip(reason: str) -> Decision:
    """The decision for a message that could not be read or scored: leave it where it is."""
    return Decision("skip", (), None, (), (reason,))
