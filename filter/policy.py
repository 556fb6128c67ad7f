"""Scores + sender history + the owner's lists -> Decision. Pure: no I/O, no clock, no model.

Deciding is kept apart from acting (the runner acts), so ``dry-run`` is the
very same decision with the act left out, and every decision carries
human-readable reasons for the log: addresses, scores and label names only,
never what the message says.

The text alone cannot tell whether mail is unsolicited; the relationship can.
So the rules apply in this order:

1. A sender on the allow list is left in place, whatever the scores.
2. Each label's threshold is adjusted for this sender: lowered while they
   drip articles (``drip``), raised for a correspondent under
   ``correspondents: stricter``. The labels are those whose score reaches the
   adjusted threshold.
3. Mail from a correspondent (the owner wrote to them recently) is left in
   place under ``correspondents: keep``.
4. A sender on the block list is moved (or flagged) whatever the scores.
5. An ask that follows unanswered article shares is marked with
   ``$PloyPattern``: the give-then-ask ploy itself.
6. Mail that just misses a threshold goes to review (``review_band``).
7. Otherwise labelled mail is moved to its label's folder, or flagged.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from fnmatch import fnmatchcase

from filter.config import LABELS, PolicyConfig

KEYWORDS = {"article_share": "$PloyArticle", "favour_request": "$PloyFavour"}
PATTERN_KEYWORD = "$PloyPattern"
REVIEW_KEYWORD = "$PloyReview"

# When a message is both an article and an ask, it goes where the ask goes:
# the ask is what costs the owner time, and the mix is the ploy itself.
_PRECEDENCE = ("favour_request", "article_share")

# However far the history moves a threshold, it stays inside these bounds: a
# threshold of 0 would label every message, one above 1 none.
_LOWEST, _HIGHEST = 0.01, 0.99
_DAY = 86400.0
_DEFAULT_POLICY = PolicyConfig()


@dataclass(frozen=True)
class SenderHistory:
    """What the ledger knows of one sender before the message being judged (times in epoch seconds).

    ``shares`` and ``asks``: when mail from this address was labelled
    article_share or favour_request; ``last_sent``: when the owner last wrote
    to this address (None: never, as far as the sent folder shows).
    """

    shares: tuple[float, ...] = ()
    asks: tuple[float, ...] = ()
    last_sent: float | None = None


@dataclass(frozen=True)
class Decision:
    """What to do with one message, and why.

    ``action`` is one of "move" (to ``target``), "flag" (add ``keywords`` in
    place), "keep" (leave it) or "skip" (could not be judged; left in place).
    ``labels`` are the labels whose score reached the sender's threshold, even
    when the action is "keep" (allowed sender, correspondent): the ledger
    records what a sender sends, whatever was done with it. ``keywords`` are
    what a move or flag adds; a kept message gets none.
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
    *,
    sender: str = "",
    history: SenderHistory | None = None,
    policy: PolicyConfig = _DEFAULT_POLICY,
    now: float = 0.0,
    review_folder: str | None = None,
) -> Decision:
    """Decide for one message from its scores, its sender and what the ledger knows of them.

    ``mode`` is the config's ``action``: "move", "flag" or "dry-run" (which
    decides as "move" does; the runner then leaves the act out). ``sender``
    is the From address, bare or with a display name; ``now`` is the time of
    judging in epoch seconds, against which the history's times are read.
    Without a sender, a history or a policy, this is the plain comparison of
    scores with thresholds.
    """
    history = history or SenderHistory()
    address = normalise_address(sender)
    allowed = matches(address, policy.allow)
    blocked = matches(address, policy.block)
    reasons: list[str] = []
    if allowed is not None:
        reasons.append(f"sender {address} is on the allow list ({allowed})")

    shift = 0.0
    adjustments: list[str] = []
    recent = _recent_shares(history, policy, now)
    if policy.drip_shares and recent >= policy.drip_shares:
        shift -= policy.drip_lower
        adjustments.append(
            f"drip: {recent} shares in the last {policy.drip_days:g} days lowers thresholds by {policy.drip_lower:.2f}"
        )
    since = _since_last_sent(history, policy, now)
    if since is not None and policy.correspondents == "stricter":
        shift += policy.correspondent_raise
        adjustments.append(
            f"correspondent: you wrote to them {_ago(since)}; thresholds raised by {policy.correspondent_raise:.2f}"
        )
    effective = {label: _adjusted(thresholds[label], shift) for label in LABELS}
    labels = tuple(label for label in LABELS if scores.get(label, 0.0) >= effective[label])
    reasons.extend(
        f"{label} {scores.get(label, 0.0):.2f} {'>=' if label in labels else '<'} {effective[label]:.2f}"
        for label in LABELS
    )
    reasons.extend(adjustments)

    if allowed is not None:
        return Decision("keep", labels, None, (), tuple(reasons))
    if since is not None and policy.correspondents == "keep" and blocked is None:
        reasons.append(f"correspondent: you wrote to them {_ago(since)}; left in place")
        return Decision("keep", labels, None, (), tuple(reasons))

    if blocked is not None:
        reasons.append(f"sender {address} is on the block list ({blocked})")
        main = _main_label(labels) if labels else _higher_scoring(scores)
        keywords = [KEYWORDS[label] for label in labels] or [KEYWORDS[main]]
    elif labels:
        main = _main_label(labels)
        keywords = [KEYWORDS[label] for label in labels]
    else:
        return _review_or_keep(scores, effective, policy, mode, review_folder, reasons)

    unanswered = _unanswered_shares(history)
    if "favour_request" in labels and unanswered >= policy.pattern_shares:
        keywords.append(PATTERN_KEYWORD)
        reasons.append(f"give-then-ask: {unanswered} article shares without a reply, now a favour request")
    if mode == "flag":
        return Decision("flag", labels, None, tuple(keywords), tuple(reasons))
    return Decision("move", labels, folders[main], tuple(keywords), tuple(reasons))


def skip(reason: str) -> Decision:
    """The decision for a message that could not be read or scored: leave it where it is."""
    return Decision("skip", (), None, (), (reason,))


def normalise_address(value: str) -> str:
    """The lower-cased bare address in ``value`` ("ann@example.org" or "Ann <Ann@Example.org>"), else "".

    Never raises: a From header is whatever the sender put there, and one
    that holds no usable address simply matches no list and no history.
    """
    address = parseaddr(value)[1].strip()
    local, at, domain = address.rpartition("@")
    if len(local) > 1 and local.startswith('"') and local.endswith('"'):
        local = local[1:-1]  # "ann.lee"@example.org is ann.lee@example.org (RFC 5322 section 3.4.1)
    domain = canonical_domain(domain)
    if not (local and at and domain) or "@" in local or any(c.isspace() for c in domain):
        return ""
    local = local.lower()
    return f'"{local}"@{domain}' if any(c.isspace() or c in '"(),:;<>[\\]' for c in local) else f"{local}@{domain}"


def canonical_domain(domain: str) -> str:
    """A domain as the ledger and the lists compare it: lower case, no final dot, Unicode (U-label) form.

    An ``xn--`` label is decoded (RFC 3492 punycode) and every label put in
    NFC, so the two spellings of one domain compare equal; no IDNA2003
    mapping is applied, which would make "straße" and "strasse" one. A
    label that does not decode is kept as written.
    """
    labels = domain.strip().rstrip(".").lower().split(".")
    return ".".join(_u_label(label) for label in labels)


def _u_label(label: str) -> str:
    """One label in Unicode; an ``xn--`` label that is not a valid encoding of one stays as written."""
    if label.startswith("xn--"):
        try:
            decoded = label[4:].encode("ascii").decode("punycode")
        except (UnicodeError, ValueError):
            return label
        valid = decoded and not decoded.isascii() and decoded.isprintable()
        if not valid or decoded.encode("punycode").decode("ascii") != label[4:]:
            return label
        label = decoded
    return unicodedata.normalize("NFC", label).lower()


@functools.lru_cache(maxsize=4096)
def _pattern_glob(pattern: str) -> str:
    """A list entry as ``fnmatchcase`` reads it against canonical addresses."""
    head, sep, tail = pattern.lower().rpartition("@")
    return (head + sep + canonical_domain(tail)).replace("[", "[[]")


def matches(address: str, patterns: Sequence[str]) -> str | None:
    """The first of ``patterns`` that ``address`` matches, else None.

    An entry with "@" is matched against the whole address; one without is a
    domain, matched against the part after "@", and also matches that
    domain's subdomains ("example.org" matches "mail.example.org"; write
    "*.example.org" for the subdomains alone). Only "*" and "?" are wildcards.
    """
    address = address.lower()
    local, at, domain = address.rpartition("@")
    if not (local and at and domain):
        return None
    for pattern in patterns:
        glob = _pattern_glob(pattern)
        if "@" in glob:
            if fnmatchcase(address, glob):
                return pattern
        elif fnmatchcase(domain, glob) or fnmatchcase(domain, "*." + glob):
            return pattern
    return None


def _adjusted(threshold: float, shift: float) -> float:
    """``threshold`` moved by ``shift``, kept inside the bounds, and never moved against the shift.

    Rounding keeps 0.8 + 0.15 at 0.95, so that a score of exactly 0.95
    still reaches it (the comparison is inclusive); the review band's lower
    edge is rounded for the same reason.
    """
    if not shift:
        return threshold
    moved = round(min(max(threshold + shift, _LOWEST), _HIGHEST), 9)
    return max(moved, threshold) if shift > 0 else min(moved, threshold)


def _recent_shares(history: SenderHistory, policy: PolicyConfig, now: float) -> int:
    start = now - policy.drip_days * _DAY
    return sum(1 for t in history.shares if start <= t <= now)


def _since_last_sent(history: SenderHistory, policy: PolicyConfig, now: float) -> float | None:
    """Seconds since the owner last wrote to the sender, when that makes them a correspondent; else None."""
    if policy.correspondent_days <= 0 or history.last_sent is None:
        return None
    since = now - history.last_sent
    return since if since <= policy.correspondent_days * _DAY else None


def _unanswered_shares(history: SenderHistory) -> int:
    """Article shares from the sender since the owner last wrote to them (all of them if never)."""
    if history.last_sent is None:
        return len(history.shares)
    return sum(1 for t in history.shares if t > history.last_sent)


def _main_label(labels: Sequence[str]) -> str:
    return next(label for label in _PRECEDENCE if label in labels)


def _higher_scoring(scores: Mapping[str, float]) -> str:
    """The label with the higher score; the ask on a tie, as in ``_PRECEDENCE``."""
    return max(_PRECEDENCE, key=lambda label: scores.get(label, 0.0))


def _review_or_keep(
    scores: Mapping[str, float],
    effective: Mapping[str, float],
    policy: PolicyConfig,
    mode: str,
    review_folder: str | None,
    reasons: list[str],
) -> Decision:
    """No label was reached: mail within ``review_band`` of a threshold is set aside for review, the rest kept."""
    near = [
        label
        for label in _PRECEDENCE
        if policy.review_band > 0 and scores.get(label, 0.0) >= round(effective[label] - policy.review_band, 9)
    ]
    if not near:
        return Decision("keep", (), None, (), tuple(reasons))
    reasons.append(f"review: {near[0]} is within {policy.review_band:.2f} of its threshold")
    if review_folder is not None and mode != "flag":
        return Decision("move", (), review_folder, (REVIEW_KEYWORD,), tuple(reasons))
    return Decision("flag", (), None, (REVIEW_KEYWORD,), tuple(reasons))


def _ago(seconds: float) -> str:
    days = int(max(seconds, 0.0) // _DAY)
    return "today" if days == 0 else "1 day ago" if days == 1 else f"{days} days ago"
