"""fetch -> parse -> score -> decide -> act -> record: the loop, for one account.

The order of writes is what keeps mail from being lost, skipped or handled
twice (see ``state.py`` for the records themselves):

1. Every decision of a batch is made before anything is touched.
2. An intent row is committed for every message that will be acted on.
3. The server acts (move, or keywords), grouped by target folder.
4. Each acted-on UID is recorded as handled, clearing its intent; messages
   left in place are recorded too.
5. The scan mark moves past the batch only when the whole batch is recorded.

A crash anywhere leaves either nothing done (the batch is scanned again),
or intents that the next pass resolves by asking the server where the
message now is. A message that cannot be read or scored is recorded as
skipped and left where it is; it never stops the others.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from filter.config import LABELS, WEEKDAYS, AccountConfig, Config
from filter.errors import AuthError, ConnectError, FolderError, MailboxError, PloyError, TargetUnavailable
from filter.mailbox import (
    ConnectionLost,
    Fingerprint,
    Mailbox,
    RawMessage,
    TargetMark,
    header_date,
    header_fields,
)
from filter.message import ParsedMessage, parse_message
from filter.model import Scores
from filter.policy import KEYWORDS, REVIEW_KEYWORD, Decision, SenderHistory, decide, normalise_address, skip
from filter.senders import digest_message, digest_message_id, rank
from filter.state import CARRIED_OVER, RETURNED, DecisionRecord, Intent, State, fingerprint_key, ledger_key

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """What the runner needs of a model: batch scoring (``ModelBundle`` provides it)."""

    def score(self, messages: Sequence[ParsedMessage]) -> list[Scores]: ...


@dataclass(frozen=True)
class Outcome:
    """What happened to one message in a pass; the demo and ``once`` report these."""

    uid: int
    message_id: str
    action: str
    target: str | None
    scores: Mapping[str, float]
    reasons: tuple[str, ...]


@dataclass
class PassReport:
    """The result of one pass over an account's watched folder."""

    account: str
    uidvalidity: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    carried_over: int = 0
    recovered: int = 0
    refused: int = 0  # messages whose move or keywords the server refused: left in place, tried again next pass
    seconds: float = 0.0

    def count(self, action: str) -> int:
        return sum(1 for o in self.outcomes if o.action == action)


def score_each(scorer: Scorer, parsed: Sequence[ParsedMessage], where: str) -> list[Scores | None]:
    """Scores for a batch; None for a message the model fails on, so one bad message cannot stop the rest."""
    if not parsed:
        return []
    try:
        return list(scorer.score(parsed))
    except Exception:  # noqa: BLE001 - retried one by one below
        log.warning("%s: scoring a batch failed; scoring its messages one by one", where)
    out: list[Scores | None] = []
    for p in parsed:
        try:
            out.append(scorer.score([p])[0])
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: a message could not be scored (%s: %s)", where, type(exc).__name__, exc)
            out.append(None)
    return out


def fingerprint_of(raw: RawMessage) -> Fingerprint:
    return Fingerprint(raw.message_id, raw.size, raw.internaldate)


# Sent mail is read in pages of this many messages, so the first look at a large sent folder
# is done in steps that each commit their progress.
SENT_PAGE = 2000
# One-by-one fetches of a message the server failed to return before, before it is skipped: FETCH_TRIES
# that the server ended (a BYE, an error), or NETWORK_TRIES that a lost connection ended (a server process
# that dies over the message looks like that). Tries are counted in units, NETWORK_TRIES to a message.
FETCH_TRIES = 3
NETWORK_TRIES = 12
_TRY_UNITS = NETWORK_TRIES // FETCH_TRIES
_DAY = 86400.0
WEEKDAY_NUMBERS = {name: number for number, name in enumerate(WEEKDAYS)}


def sent_time(dated: float | None, arrived: float | None, fallback: float) -> float:
    """When a message was sent: ``dated`` (its Date header's time), else ``arrived``, else ``fallback``.

    ``arrived`` is the server's INTERNALDATE. A Date more than a day after
    it is a sender's wrong clock or a forgery, and the arrival time is used
    instead. An earlier Date is believed: mail moved or imported into the
    folder gets a new INTERNALDATE, and its own date is what orders a
    sender's history.
    """
    if dated is not None and (arrived is None or dated <= arrived + _DAY):
        return dated
    return arrived if arrived is not None else fallback


def last_weekday_start(now: float, weekday: int) -> float:
    """The start (local midnight) of the latest ``weekday`` (0 = Monday) at or before ``now``."""
    today = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today - timedelta(days=(today.weekday() - weekday) % 7)).timestamp()


@dataclass(frozen=True)
class _Judged:
    """A decision with what the ledger needs of its message."""

    decision: Decision
    scores: Mapping[str, float]
    sender: str = ""
    time: float | None = None
    ledger: str = ""


class AccountRunner:
    """Runs passes over one account's watched folder.

    ``mode`` comes from the config's ``action``. In "dry-run" every decision
    is made and logged as "move" would make it, and nothing is sent to the
    server but reads (the caller gives an in-memory State, so no trace is
    left either).
    """

    def __init__(
        self,
        config: Config,
        account: AccountConfig,
        mailbox: Mailbox,
        scorer: Scorer,
        thresholds: Mapping[str, float],
        state: State,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.account = account
        self.mailbox = mailbox
        self.scorer = scorer
        self.thresholds = dict(thresholds)
        self.state = state
        self.clock = clock
        self.dry_run = config.action == "dry-run"
        self.report: PassReport | None = None  # the pass under way, or the last one
        self.tries_counted = 0  # sessions that ended charging a try to a message, ever: how ``once`` sees progress
        self.held: set[int] = set()  # UIDs of this epoch whose earlier action waits for the next pass
        self._sent_folder: str | None = None
        self._sent_looked_up = False
        self._pending: tuple[Config, AccountConfig, dict[str, float]] | None = None

    def reconfigure(self, config: Config, account: AccountConfig, thresholds: Mapping[str, float]) -> None:
        """Take a reloaded configuration; it applies from the next pass (any thread may call this)."""
        self._pending = (config, account, dict(thresholds))

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        self.config, self.account, self.thresholds = pending
        self.dry_run = self.config.action == "dry-run"
        self._sent_looked_up = False
        self.prepare()

    # One pass -----------------------------------------------------------------

    def prepare(self) -> None:
        """After each (re)connect: make sure the target folders exist (move mode only)."""
        self._sent_looked_up = False
        if self.config.action == "move":
            folders = set(self.account.folders.values())
            if self.account.review_folder is not None:
                folders.add(self.account.review_folder)
            for folder in sorted(folders):
                self.mailbox.ensure_folder(folder)

    def pass_once(self, should_stop: Callable[[], bool] = lambda: False) -> PassReport:
        """Handle every message of the watched folder not handled yet."""
        self.report = None
        self._apply_pending()
        name, watch = self.account.name, self.account.watch
        started = time.monotonic()
        # Both open other folders, so they come before the watched folder is selected.
        self.follow_sent(should_stop)
        self._digest_if_due()
        status = self.mailbox.select(watch)
        uv = status.uidvalidity
        report = self.report = PassReport(name, uv)
        known = self.state.known_uidvalidities(name, watch)
        current: dict[str, list[tuple[int, str]]] | None = None
        if known and uv not in known:
            log.warning(
                "%s: UIDVALIDITY of %s changed from %s to %d; matching messages to earlier decisions",
                name,
                watch,
                known[-1],
                uv,
            )
            current = self._current_fingerprints(uv)
            report.carried_over = self._carry_over(uv, current)
        # Only once the carry-over is committed: one cut short is done again in full next time.
        self.state.start_epoch(name, watch, uv, self.clock())
        report.recovered = self._recover_intents(uv, current)
        # Messages whose action the server refused wait for the next pass's recovery, not for a second judgement.
        waiting = {intent.uid for intent_uv, intent in self.state.intents(name, watch) if intent_uv == uv} | self.held
        while not should_stop():
            start = self.state.scanned_to(name, watch, uv)
            found = self.mailbox.search_uids(start)
            handled = self.state.handled_uids(name, watch, uv, found)
            todo = [uid for uid in found if uid not in handled and uid not in waiting]
            if not todo:
                if found:
                    self.state.advance(name, watch, uv, max(found) + 1)
                break
            for i in range(0, len(todo), self.config.batch_size):
                if should_stop():
                    break
                batch = todo[i : i + self.config.batch_size]
                report.outcomes.extend(self._batch(uv, batch))
                if i + len(batch) == len(todo):
                    self.state.advance(name, watch, uv, max(found) + 1)
        report.seconds = time.monotonic() - started
        return report

    def _batch(self, uv: int, uids: Sequence[int]) -> list[Outcome]:
        """Judge and act on these UIDs: together, but one at a time those whose fetch failed before.

        A server may end the session over a message it cannot read (Dovecot
        does), so a batch whose fetch failed is taken apart: the messages
        not fetched alone yet go first, then each of the others, the least
        tried first, so that every readable one is judged and acted on
        before the one at fault ends the session again.
        """
        name, watch = self.account.name, self.account.watch
        tries = self.state.fetch_tries(name, watch, uv, uids)
        fresh = [uid for uid in uids if uid not in tries]
        outcomes = self._judge(uv, fresh, None) if fresh else []
        try:
            for uid in _least_tried_first(tries):
                outcomes += self._judge(uv, [uid], tries[uid])
        except Exception:
            if self.report is not None:  # what was done before the session ended still counts in the report
                self.report.outcomes.extend(outcomes)
            raise
        return sorted(outcomes, key=lambda o: o.uid)

    def _judge(self, uv: int, uids: Sequence[int], tries: int | None) -> list[Outcome]:
        """Fetch, judge and act on these UIDs (one UID tried ``tries`` times before, or a batch)."""
        name, watch = self.account.name, self.account.watch
        raws, unreadable = self._fetch(uv, uids, tries)
        fetched = {raw.uid for raw in raws} | set(unreadable)
        for uid in uids:
            if uid not in fetched:
                log.info(
                    "%s: uid=%d vanished before it could be fetched (moved or deleted by another client)", name, uid
                )
        acting: list[tuple[RawMessage, DecisionRecord]] = []
        left: list[tuple[RawMessage, DecisionRecord]] = []
        for raw, judged in zip(raws, self._decide(raws), strict=True):
            (acting if judged.decision.action in ("move", "flag") else left).append((raw, _record(raw, judged)))
        if acting and not self.dry_run:
            self.state.add_intents(
                name,
                watch,
                uv,
                [Intent(raw.uid, fingerprint_of(raw), r.target or "", r) for raw, r in acting],
                self.clock(),
            )
        outcomes = self._finish(uv, left + [_unreadable(uid, uv) for uid in unreadable])
        self.state.fetch_settled(name, watch, uv, unreadable)
        groups: dict[tuple[str, str | None, tuple[str, ...]], list[tuple[RawMessage, DecisionRecord]]] = {}
        for raw, r in acting:
            groups.setdefault((r.action, r.target, tuple(r.keywords)), []).append((raw, r))
        for (action, target, keywords), group in groups.items():
            group_uids = [raw.uid for raw, _ in group]
            if not self.dry_run:
                try:
                    # Keywords first: MOVE and COPY carry a message's flags along (RFC 6851, RFC 9051 6.4.7).
                    self.mailbox.add_keywords(group_uids, keywords)
                    if action == "move" and target is not None:
                        self.mailbox.move(group_uids, target, *self._marking(uv, group_uids))
                except MailboxError as exc:  # a lost connection still ends the pass
                    self._refused(group_uids, exc)
                    continue
            outcomes.extend(self._finish(uv, group))
        return outcomes

    def _refused(self, uids: Sequence[int], exc: MailboxError) -> None:
        """The server refused to act on these UIDs (a full quota, a read-only folder): say so, and go on.

        Their intents stay, so each pass's recovery tries again; meanwhile
        the messages stay where they are, and the rest of the mail is judged.
        """
        log.error(
            "%s: the server refused to act on UIDs %s (%s); they stay in place, tried again each pass",
            self.account.name,
            ",".join(str(uid) for uid in uids),
            exc,
        )
        if self.report is not None:
            self.report.refused += len(uids)

    def _twin_still_moved(self, raw: RawMessage, key: str) -> bool:
        """Whether this message, like one moved earlier, is another message and not that one brought back.

        A move or a copy keeps a message's arrival time (INTERNALDATE), so:

        * arriving at a time no moved message with its key arrived at, it is
          the same mail delivered again (an MTA's retry, a fetch repeated)
          while the moved one is still where it went, and is judged as new;
          gone from there, it was brought back by a client that copies by
          APPEND;
        * arriving when a moved one did, it is a look-alike (mail with no
          Message-ID, of one size, arriving in one second) when the target
          still holds one like it that is not byte-identical; a
          byte-identical copy there means the owner copied it back (or the
          server shows one message in two folders, as Gmail's labels do):
          brought back, and left alone.

        Moves recorded before arrival times were kept count as the second case.
        """
        name, watch = self.account.name, self.account.watch
        target = self.state.moved_to(name, watch, key)
        if target is None:
            return False
        fp = fingerprint_of(raw)
        arrivals = {_utc_text(when) for when in self.state.moved_arrivals(name, watch, key)}
        try:
            if arrivals and fp.internaldate is not None and _arrived(fp) not in arrivals:
                return self.mailbox.contains(target, replace(fp, internaldate=None))
            return self.mailbox.contains(target, fp) and not self.mailbox.contains(target, fp, raw.uid)
        except FolderError:
            return False  # the folder is gone: what was moved there is gone too
        except MailboxError as exc:  # the folder will not open: take it as brought back, and leave it
            log.warning("%s: cannot look in %s (%s); a message moved there before stays", name, target, exc)
            return False

    def _fetch(self, uv: int, uids: Sequence[int], tries: int | None) -> tuple[list[RawMessage], list[int]]:
        """The messages of these UIDs, and those given up on: a batch, or one UID tried ``tries`` times.

        A batch whose fetch fails has its UIDs noted, to be fetched one at
        a time from then on (see ``_batch``). Each such try is counted in
        the state before it is made, so that a try that ends the process
        counts. A message is recorded as skipped, and left where it is, so
        that the others go on, after FETCH_TRIES tries that the server
        ended, or NETWORK_TRIES that a lost connection ended: a network
        that drops now and then must not cost a readable message its
        judgement, but a server process that dies over the message (a crash
        looks like a lost connection) must not stop the passes for good.
        """
        name, watch = self.account.name, self.account.watch
        cap = self.config.max_message_bytes
        if tries is None:
            with self._noted_if_failing(uv, uids):
                return self.mailbox.fetch(uids, cap), []
        (uid,) = uids
        if tries >= NETWORK_TRIES:
            log.error(
                "%s: uid=%d: the server failed to return it, try after try; skipped, and left in place", name, uid
            )
            return [], [uid]
        with self._charged(uv, uid):
            raws = self.mailbox.fetch([uid], cap)
        self.state.fetch_settled(name, watch, uv, [uid])
        return raws, []

    @contextmanager
    def _noted_if_failing(self, uv: int, uids: Sequence[int]) -> Iterator[None]:
        """A read of several messages: should it fail, each of them is read alone from then on (see ``_batch``)."""
        try:
            yield
        except (ConnectionLost, MailboxError):
            self.state.fetch_failed(self.account.name, self.account.watch, uv, uids)
            self.tries_counted += 1
            raise

    @contextmanager
    def _charged(self, uv: int, uid: int | None) -> Iterator[None]:
        """A read of (or action on) one message that may end the session: a try is charged to it first.

        Charged before it is made, so that a try that ends the process
        counts; a lost connection that the server may not have caused (the
        network) costs a unit only. The caller takes the charge back
        (``_take_back``), or settles the message, as the outcome warrants.
        With no UID (a message no longer here) nothing is charged or counted.
        """
        if uid is None:
            yield
            return
        name, watch = self.account.name, self.account.watch
        self.state.fetch_trying(name, watch, uv, uid, _TRY_UNITS)
        try:
            yield
        except ConnectionLost as exc:
            if not exc.by_server:
                self.state.fetch_trying(name, watch, uv, uid, 1 - _TRY_UNITS)
            self.tries_counted += 1
            raise

    def _take_back(self, uv: int, uid: int | None) -> None:
        """Take back the try ``_charged`` charged to ``uid``: what it was charged for did not end the session."""
        if uid is not None:
            self.state.fetch_trying(self.account.name, self.account.watch, uv, uid, -_TRY_UNITS)

    def _decide(self, raws: Sequence[RawMessage]) -> list[_Judged]:
        """Decisions for a batch, in UID order, each seeing the sender history left by the ones before it."""
        name, watch = self.account.name, self.account.watch
        judged: list[_Judged | None] = [None] * len(raws)
        readable: list[tuple[int, ParsedMessage]] = []
        keys = [fingerprint_key(fingerprint_of(raw)) for raw in raws]
        for i, raw in enumerate(raws):
            earlier = self.state.earlier_action(name, watch, keys[i])
            if earlier == "move" and not self._twin_still_moved(raw, keys[i]):
                reason = f"{RETURNED}; left in place"
                judged[i] = _Judged(Decision("keep", (), None, (), (reason,)), {})
                continue
            parsed = parse_message(raw.data)
            if parsed.error:
                judged[i] = _Judged(skip(f"unreadable message ({parsed.error}); left in place"), {})
                continue
            readable.append((i, parsed))
        # Shares and asks judged earlier in this batch are not in the ledger yet.
        batch: dict[str, list[tuple[str, float, str]]] = {}
        for (i, parsed), scores in zip(
            readable, score_each(self.scorer, [p for _, p in readable], self.account.name), strict=True
        ):
            if scores is None:
                judged[i] = _Judged(skip("the model could not score this message; left in place"), {})
                continue
            sender = normalise_address(parsed.sender)
            raw = raws[i]
            # The Date from the header item (``data`` may be cut before it); from ``data`` if there is none.
            dated = raw.dated if raw.dated is not None else header_date(header_fields(raw.data))
            when = sent_time(dated, raw.internaldate.timestamp() if raw.internaldate else None, self.clock())
            own = ledger_key(keys[i], sender, dated)
            d = decide(
                scores.values,
                self.thresholds,
                self.account.folders,
                self.config.action,
                sender=sender,
                history=self._history(sender, batch.get(sender, []), when, own),
                policy=self.config.policy,
                now=when,
                review_folder=self.account.review_folder,
            )
            if sender:
                batch.setdefault(sender, []).extend((label, when, own) for label in d.labels)
            if raws[i].truncated:
                d = replace(d, reasons=(*d.reasons, f"judged on the first {len(raws[i].data)} of {raws[i].size} bytes"))
            judged[i] = _Judged(d, scores.values, sender, when, own)
        return [j if j is not None else _Judged(skip("not judged"), {}) for j in judged]

    def _history(self, sender: str, batch: Sequence[tuple[str, float, str]], when: float, own: str) -> SenderHistory:
        """What came from ``sender`` up to ``when`` (the message's own time), this batch's earlier ones included.

        Mail dated later, in the ledger from another account or brought back
        by the owner, never counts towards an earlier message's judgement,
        and a message never counts towards its own (``own``, its ledger key:
        a copy in another account, or in this batch); mail of the same second
        does count, and a message in both the batch and the ledger once.
        """
        if not sender:
            return SenderHistory()
        firsts: dict[tuple[str, str], float] = {}  # one entry per message and label, however many copies
        for label, t, key in batch:
            if t <= when and key != own:
                firsts[(key, label)] = min(t, firsts.get((key, label), t))
        earlier = [(label, t) for (_, label), t in firsts.items()]
        # What the batch counts, and the message itself, are not counted again from the ledger.
        known = self.state.history(sender, before=when, exclude={own, *(key for key, _ in firsts)})
        return SenderHistory(
            shares=tuple(sorted((*known.shares, *(t for label, t in earlier if label == "article_share")))),
            asks=tuple(sorted((*known.asks, *(t for label, t in earlier if label == "favour_request")))),
            last_sent=known.last_sent,
        )

    # The owner's sent mail and the digest ------------------------------------------

    def follow_sent(self, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Read what the owner sent since the last look into the ledger; returns how many messages were read.

        The folder is ``accounts[].sent``, else the one marked ``\\Sent``
        (RFC 6154). Only recipients' addresses and dates are kept. A folder
        that is missing or unreadable, or that the server will not search or
        fetch, is logged and skipped: the filter then works without
        reciprocity for this pass, as it would with no sent folder at all.
        """
        name = self.account.name
        folder = self.account.sent
        if folder is None:
            if not self._sent_looked_up:
                self._sent_folder = self.mailbox.find_sent_folder()
                self._sent_looked_up = True
                if self._sent_folder is None:
                    log.info("%s: no folder is marked \\Sent; set accounts[].sent to follow your sent mail", name)
            folder = self._sent_folder
        if folder is None:
            return 0
        checkpoint = self.state.sent_checkpoint(name, folder)
        first = checkpoint[1] if checkpoint else 1
        read = 0
        try:
            while True:
                uidvalidity, messages, next_uid = self.mailbox.read_sent(folder, first, SENT_PAGE)
                if checkpoint is not None and uidvalidity != checkpoint[0] and first != 1:
                    log.info("%s: UIDVALIDITY of %s changed; reading it again from the start", name, folder)
                    checkpoint, first = None, 1
                    continue
                rows = [(m.key, address, m.time) for m in messages for address in m.recipients]
                self.state.record_sent(name, rows)
                self.state.set_sent_checkpoint(name, folder, uidvalidity, next_uid)
                read += len(messages)
                if len(messages) < SENT_PAGE or should_stop():
                    break
                first = next_uid
        except MailboxError as exc:  # FolderError included; a lost connection still ends the pass
            log.warning("%s: cannot read the sent folder (%s); going on without it", name, exc)
            return read
        if read:
            log.info("%s: read %d sent messages from %s", name, read, folder)
        return read

    def _digest_if_due(self) -> bool:
        """Append the weekly digest when its weekday has come since the last one; True when done.

        A digest the server refuses (a folder it will not create, a full
        quota) is logged and tried again at the next pass: it never stops
        the filtering.
        """
        digest = self.config.digest
        if digest is None or self.dry_run:
            return False
        name, now = self.account.name, self.clock()
        last = self.state.last_digest(name)
        if last is None:
            self.state.set_last_digest(name, now)  # the first digest covers the week from here
            return False
        slot = last_weekday_start(now, WEEKDAY_NUMBERS[digest.weekday])
        if last >= slot:
            return False
        decisions = self.state.decisions(name, since=last)
        moved = {label: 0 for label in LABELS}
        reviewed = kept = 0
        for d in decisions:
            labels, keywords = d["labels"], d["keywords"]
            assert isinstance(labels, list) and isinstance(keywords, list)
            if REVIEW_KEYWORD in keywords:
                reviewed += 1
            elif d["action"] in ("move", "flag") and any(k in KEYWORDS.values() for k in keywords):
                # By keyword, not label: a blocked sender's message is moved with a keyword and no label.
                for label, keyword in KEYWORDS.items():
                    moved[label] += keyword in keywords
            elif d["action"] == "keep" and labels:
                kept += 1
        pattern_shares = self.config.policy.pattern_shares
        top = rank(self.state.senders(since=last), pattern_shares=pattern_shares, limit=digest.senders)
        try:
            # Already there when it was appended before a crash: this slot's digest goes in once.
            if not self.mailbox.has_message_id(digest.folder, digest_message_id(name, slot)):
                data = digest_message(
                    account=name,
                    to_address=self.account.username,
                    now=now,
                    moved=moved,
                    kept=kept,
                    reviewed=reviewed,
                    top=top,
                    pattern_shares=pattern_shares,
                    period_days=max(1, round((now - last) / _DAY)),
                    slot=slot,
                    flagged=self.config.action == "flag",
                )
                self.mailbox.append(digest.folder, data)
                log.info("%s: weekly digest appended to %s", name, digest.folder)
        except MailboxError as exc:  # a digest must never stop the filtering; it is tried again next pass
            log.warning("%s: the weekly digest could not be added to %s (%s)", name, digest.folder, exc)
            return False
        self.state.set_last_digest(name, now)
        return True

    def _finish(self, uv: int, done: Sequence[tuple[RawMessage, DecisionRecord]]) -> list[Outcome]:
        """Record what was done with these messages, in one transaction, and log each."""
        if self.dry_run:
            done = [
                (raw, replace(r, action=f"would-{r.action}") if r.action in ("move", "flag") else r) for raw, r in done
            ]
        rows = [(fingerprint_key(fingerprint_of(raw)), r) for raw, r in done]
        self.state.record_many(self.account.name, self.account.watch, uv, rows, self.clock())
        outcomes = []
        for raw, r in done:
            log.info(
                "%s: uid=%d %s%s [%s]",
                self.account.name,
                raw.uid,
                r.action,
                f" -> {r.target}" if r.target else "",
                "; ".join(r.reasons),
            )
            outcomes.append(Outcome(raw.uid, raw.message_id, r.action, r.target, r.scores, tuple(r.reasons)))
        return outcomes

    # Recovery -------------------------------------------------------------------

    def _current_fingerprints(self, uv: int) -> dict[str, list[tuple[int, str]]]:
        """fingerprint key -> (UID, arrival time) of every message now in the watched folder, by UID.

        Twins (one Message-ID and size, or no Message-ID and one size and
        arrival second) share a key, and each keeps its UID. Reading a
        message's Message-ID may end the session as fetching it does (see
        ``_fetch``): the same counted tries apply, and a message given up
        on is left out here and skipped by the scan.
        """
        name, watch = self.account.name, self.account.watch
        uids = self.mailbox.search_uids(1)
        tries = self.state.fetch_tries(name, watch, uv, uids)
        found: dict[int, Fingerprint] = {}
        fresh = [uid for uid in uids if uid not in tries]
        for i in range(0, len(fresh), 1000):
            chunk = fresh[i : i + 1000]
            with self._noted_if_failing(uv, chunk):
                found.update(self.mailbox.fingerprints(chunk))
        for uid in _least_tried_first(tries):
            if tries[uid] >= NETWORK_TRIES:
                continue
            with self._charged(uv, uid):
                found.update(self.mailbox.fingerprints([uid]))
            # A header read that works charges nothing, and leaves the row: the scan's own count stands.
            self._take_back(uv, uid)
        out: dict[str, list[tuple[int, str]]] = {}
        for uid, fp in sorted(found.items()):
            out.setdefault(fingerprint_key(fp), []).append((uid, _arrived(fp) or ""))
        return out

    def _carry_over(self, uv: int, current: Mapping[str, Sequence[tuple[int, str]]]) -> int:
        """After a UIDVALIDITY change: mark messages judged in an earlier epoch as handled.

        A message an unconfirmed action of an earlier epoch will claim
        (``_intent_uids``) is left to that action's recovery.
        """
        name, watch = self.account.name, self.account.watch
        everything = sorted((uid, key) for key, entries in current.items() for uid, _ in entries)
        done = self.state.handled_uids(name, watch, uv, [uid for uid, _ in everything])
        intents = self.state.intents(name, watch)
        claimed = set(self._intent_uids(uv, current, intents).values())
        claimed |= {intent.uid for intent_uv, intent in intents if intent_uv == uv}
        rows = []
        for uid, key in everything:
            if uid in done or uid in claimed:
                continue
            earlier = self.state.earlier_action(name, watch, key)
            if earlier is not None:
                reason = f"{CARRIED_OVER} ({earlier}) before UIDVALIDITY changed to {uv}"
                rows.append((key, DecisionRecord(uid, "", {}, earlier, None, (), (reason,))))
        self.state.record_many(name, watch, uv, rows, self.clock())
        log.info("%s: %d messages carried over to UIDVALIDITY %d", name, len(rows), uv)
        return len(rows)

    def _marking(self, uv: int, uids: Sequence[int]) -> tuple[Callable[[], None], Callable[[TargetMark], None]]:
        """What ``move`` calls once the server confirmed a COPY, and just before it: both are noted in the state."""
        name, watch = self.account.name, self.account.watch
        return (
            lambda: self.state.mark_copied(name, watch, uv, uids),
            lambda mark: self.state.mark_copying(name, watch, uv, uids, mark),
        )

    def _intent_uids(
        self,
        uv: int,
        current: Mapping[str, Sequence[tuple[int, str]]],
        intents: Sequence[tuple[int, Intent]] | None = None,
    ) -> dict[tuple[int, int], int]:
        """(epoch, UID) of each unconfirmed action of an earlier epoch -> its message's UID now, where found.

        Each takes its own message among those with its fingerprint key: the
        one that arrived when it did first (twins, or the same mail again),
        else the first left.
        """
        if intents is None:
            intents = self.state.intents(self.account.name, self.account.watch)
        taken = {intent.uid for intent_uv, intent in intents if intent_uv == uv}
        everything = [uid for entries in current.values() for uid, _ in entries]
        taken |= self.state.handled_uids(self.account.name, self.account.watch, uv, everything)  # judged already
        out: dict[tuple[int, int], int] = {}
        for intent_uv, intent in intents:
            if intent_uv == uv:
                continue
            entries = [entry for entry in current.get(fingerprint_key(intent.fingerprint), ()) if entry[0] not in taken]
            arrived = _arrived(intent.fingerprint)
            chosen = next((uid for uid, when in entries if when == arrived), entries[0][0] if entries else None)
            if chosen is not None:
                taken.add(chosen)
                out[(intent_uv, intent.uid)] = chosen
        return out

    def _recover_intents(self, uv: int, current: Mapping[str, Sequence[tuple[int, str]]] | None) -> int:
        """Resolve moves and flags that were started but not confirmed before a crash.

        Under a new UIDVALIDITY each intent is given its own message among
        those with its fingerprint key, the one that arrived when it did
        first, so that twins are each resolved. Each intent is read first
        (is its message here, is its copy in the target?), then acted on.
        The reads may end the session or be refused as fetching may: they
        are counted as ``_fetch`` counts its tries, and a message that
        cannot be read is at last given up on (``_give_up_intent``). An
        action the server refuses leaves its intent for the next pass, and
        its message out of the scan (``self.held``).
        """
        name, watch = self.account.name, self.account.watch
        intents = self.state.intents(name, watch)
        if any(intent_uv != uv for intent_uv, _ in intents):
            if current is None:
                current = self._current_fingerprints(uv)
            # An action that found its message belongs to that message's UID from now on, whatever happens next.
            for (intent_uv, intent_uid), claimed in self._intent_uids(uv, current, intents).items():
                self.state.rebase_intent(name, watch, (intent_uv, intent_uid), (uv, claimed))
            intents = self.state.intents(name, watch)
        self.held = set()
        recovered = 0
        for intent_uv, intent in intents:
            uid: int | None = intent.uid if intent_uv == uv else None  # None: an earlier epoch's, message gone
            if uid is not None:
                tries = self.state.fetch_tries(name, watch, uv, [uid]).get(uid, 0)
                if tries >= NETWORK_TRIES:
                    self._give_up_intent(uv, intent_uv, intent, uid)
                    continue
                self.state.fetch_failed(name, watch, uv, [uid])  # a row to count in, if it has none
            try:
                with self._charged(uv, uid):
                    found, own_copy = self._recovery_reads(uv, intent_uv, intent, uid)
            except TargetUnavailable as exc:  # the target would not open: no fault of the message
                self._hold(uv, uid, intent, exc)
                continue
            except MailboxError as exc:  # reading the message was refused: the try counts, as for a fetch
                log.warning(
                    "%s: uid=%d: could not be read to finish its interrupted action (%s)", name, intent.uid, exc
                )
                if uid is not None:
                    self.held.add(uid)
                    if self.state.fetch_tries(name, watch, uv, [uid]).get(uid, 0) >= NETWORK_TRIES:
                        self._give_up_intent(uv, intent_uv, intent, uid)
                continue
            # Read: the charge is taken back, and the action charged afresh. It may end the session (a server
            # process dying as it moves the message), while a refused action (a full quota) is not the message's.
            self._take_back(uv, uid)
            try:
                with self._charged(uv, uid):
                    self._recover_intent(uv, intent_uv, intent, found, own_copy)
            except MailboxError as exc:
                self._hold(uv, uid, intent, exc)
                continue
            if uid is not None:
                self.state.fetch_settled(name, watch, uv, [uid])
            recovered += 1
        return recovered

    def _hold(self, uv: int, uid: int | None, intent: Intent, exc: MailboxError) -> None:
        """The server refused what recovering ``intent`` needed, at no fault of its message: it waits, uncharged."""
        self._take_back(uv, uid)
        if uid is not None:
            self.held.add(uid)
        self._refused([intent.uid], exc)

    def _recovery_reads(self, uv: int, intent_uv: int, intent: Intent, uid: int | None) -> tuple[int | None, bool]:
        """(the intent's message here, or None; whether the target holds this move's own copy of it)."""
        found = uid
        if intent_uv == uv:
            present = self.mailbox.fingerprints([intent.uid]).get(intent.uid)
            found = intent.uid if present and fingerprint_key(present) == fingerprint_key(intent.fingerprint) else None
        own_copy = intent.decision.action == "move" and found is not None and self._own_copy_in_target(intent, found)
        return found, own_copy

    def _give_up_intent(self, uv: int, intent_uv: int, intent: Intent, uid: int) -> None:
        """Settle, left where it is, a message whose interrupted action could not be finished for want of reading it.

        A move whose COPY reached the target is recorded as a move (the
        original stays beside the copy, a duplicate and never a loss), so
        that the owner's later corrections count as for any move; anything
        else as skipped.
        """
        name, watch = self.account.name, self.account.watch
        fp = intent.fingerprint
        copied = intent.decision.action == "move" and intent.copied
        if intent.decision.action == "move" and not copied and intent.copy_start is not None:
            try:
                copied = self.mailbox.contains(intent.target, fp, since=intent.copy_start)
            except MailboxError:
                copied = False
        if copied:
            reason = "its copy is in the target; the original, where still here, could not be read and stays"
            record = replace(intent.decision, uid=uid, reasons=(*intent.decision.reasons, reason), arrived=_arrived(fp))
        else:
            reason = "the server failed to return it, try after try, to finish an interrupted action; left in place"
            record = replace(
                intent.decision,
                uid=uid,
                action="skip",
                target=None,
                keywords=(),
                reasons=(*intent.decision.reasons, reason),
            )
        log.error("%s: uid=%d: %s", name, uid, reason)
        self.state.record(name, watch, uv, fingerprint_key(fp), record, self.clock())
        self.state.drop_intent(name, watch, intent_uv, intent.uid)
        self.state.fetch_settled(name, watch, uv, [uid])

    def _recover_intent(self, uv: int, intent_uv: int, intent: Intent, uid: int | None, own_copy: bool) -> None:
        """Finish, redo or confirm one interrupted action on ``uid`` (None: the message is no longer here)."""
        name, watch = self.account.name, self.account.watch
        fp = intent.fingerprint
        decision = intent.decision
        if decision.action == "move":
            if uid is not None and own_copy:
                self.mailbox.remove_copied([uid])
                note = "copy found in the target after an interruption; original removed"
            elif uid is not None:
                # The folder may be gone by now (renamed in the config, deleted by the owner).
                self.mailbox.ensure_folder(intent.target)
                self.mailbox.add_keywords([uid], decision.keywords)
                self.mailbox.move([uid], intent.target, *self._marking(intent_uv, [intent.uid]))
                note = "move redone after an interruption"
            elif self.mailbox.contains(intent.target, fp):
                note = "move confirmed after an interruption"
            else:
                note = "message left the folder by other means before the move was confirmed"
        else:
            if uid is not None:
                self.mailbox.add_keywords([uid], decision.keywords)
            note = "keywords set after an interruption" if uid is not None else "message left the folder"
        log.info("%s: uid=%d recovered: %s", name, intent.uid, note)
        record = replace(
            decision,
            uid=uid if uid is not None else intent.uid,
            reasons=(*decision.reasons, note),
            arrived=_arrived(fp) or decision.arrived,
        )
        self.state.record(name, watch, uv if uid is not None else intent_uv, fingerprint_key(fp), record, self.clock())
        # Only after the record is safe: under a new UIDVALIDITY it went to the message's new UID.
        self.state.drop_intent(name, watch, intent_uv, intent.uid)

    def _own_copy_in_target(self, intent: Intent, uid: int) -> bool:
        """Whether the target holds the copy this interrupted move made of ``uid``, byte for byte.

        The same mail may have been there already (a Sieve "fileinto :copy",
        a twin delivered twice), and that one is not this move's: a copy
        counts when the server confirmed the COPY, or when it arrived after
        the COPY was sent (its UID at or above the target's UIDNEXT noted
        just before). Otherwise the move is redone, and at worst the target
        holds a second copy; the original is never removed on a guess.
        """
        if intent.copied:
            return self.mailbox.contains(intent.target, intent.fingerprint, uid)
        if intent.copy_start is not None:
            return self.mailbox.contains(intent.target, intent.fingerprint, uid, since=intent.copy_start)
        return False

    # The daemon ---------------------------------------------------------------

    def run_forever(self, stop: threading.Event, *, rng: random.Random | None = None) -> None:
        """Connect, pass, wait for mail, forever; reconnect with backoff on any connection error.

        A refused login or a failed certificate check on the very first
        connection is raised (a config problem the owner must fix); after a
        first success every error is retried, since servers restart, rotate
        certificates and drop sessions.
        """
        backoff = Backoff(maximum=self.config.reconnect_max, rng=rng or random.Random())
        connected_once = False
        while not stop.is_set():
            try:
                self.mailbox.connect()
                self.prepare()
                connected_once = True
                while not stop.is_set():
                    self.pass_once(stop.is_set)
                    backoff.reset()  # only a whole pass proves the account works, not a login
                    idle = "IDLE" in self.mailbox.capabilities()
                    timeout = self.config.idle_renew if idle else self.config.poll_interval
                    self.mailbox.wait_for_change(timeout, stop.is_set)
            except ConnectionLost as exc:
                log.warning("%s: connection lost (%s)", self.account.name, exc)
            except (AuthError, ConnectError) as exc:
                if not connected_once:
                    raise
                log.error("%s: %s; trying again", self.account.name, exc)
            except PloyError as exc:
                log.error("%s: %s", self.account.name, exc)
            finally:
                self.mailbox.close()
            if stop.is_set():
                break
            delay = backoff.next()
            log.info("%s: reconnecting in %.1f s", self.account.name, delay)
            stop.wait(delay)


class Backoff:
    """Exponential backoff with full jitter: 1, 2, 4 ... ``maximum`` seconds, each scaled by 0.5-1.0."""

    def __init__(self, maximum: float, rng: random.Random, initial: float = 1.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.rng = rng
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        base = min(self.maximum, self.initial * float(2 ** min(self.attempt, 30)))
        self.attempt += 1
        return base * self.rng.uniform(0.5, 1.0)


def _unreadable(uid: int, uv: int) -> tuple[RawMessage, DecisionRecord]:
    """A message the server would not return, as a skipped one: nothing of it is known but its UID."""
    raw = RawMessage(uid, uv, (), 0, None, b"", False, "")
    reason = "the server failed to return it, try after try; left in place"
    return raw, DecisionRecord(uid, "", {}, "skip", None, (), (reason,))


def _record(raw: RawMessage, judged: _Judged) -> DecisionRecord:
    d = judged.decision
    return DecisionRecord(
        raw.uid,
        raw.message_id,
        dict(judged.scores),
        d.action,
        d.target,
        d.keywords,
        d.reasons,
        sender=judged.sender,
        labels=d.labels,
        date=judged.time,
        ledger=judged.ledger,
        arrived=_arrived(raw),
    )


def _least_tried_first(tries: Mapping[int, int]) -> list[int]:
    """UIDs whose fetch failed before, the least tried first (then by UID)."""
    return sorted(tries, key=lambda uid: (tries[uid], uid))


def _utc_iso(when: datetime) -> str:
    """``when`` as a UTC instant in ISO 8601; a time without a zone is taken as UTC."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def _utc_text(when: str) -> str:
    """An ISO 8601 time as the UTC instant ``_arrived`` writes (rows kept before it wrote UTC)."""
    try:
        return _utc_iso(datetime.fromisoformat(when))
    except ValueError:
        return when


def _arrived(message: RawMessage | Fingerprint) -> str | None:
    """A message's arrival time (INTERNALDATE) as a UTC instant in ISO 8601, whatever zone the server wrote."""
    return None if message.internaldate is None else _utc_iso(message.internaldate)
