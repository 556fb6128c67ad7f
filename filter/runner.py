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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from filter.config import AccountConfig, Config
from filter.errors import AuthError, ConnectError, PloyError
from filter.mailbox import ConnectionLost, Fingerprint, Mailbox, RawMessage
from filter.message import ParsedMessage, parse_message
from filter.model import Scores
from filter.policy import Decision, decide, skip
from filter.state import DecisionRecord, Intent, State, fingerprint_key

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

    # One pass -----------------------------------------------------------------

    def prepare(self) -> None:
        """After each (re)connect: make sure the target folders exist (move mode only)."""
        if self.config.action == "move":
            for folder in sorted(set(self.account.folders.values())):
                self.mailbox.ensure_folder(folder)

    def pass_once(self, should_stop: Callable[[], bool] = lambda: False) -> PassReport:
        """Handle every message of the watched folder not handled yet."""
        name, watch = self.account.name, self.account.watch
        started = time.monotonic()
        status = self.mailbox.select(watch)
        uv = status.uidvalidity
        report = PassReport(name, uv)
        known = self.state.known_uidvalidities(name, watch)
        self.state.start_epoch(name, watch, uv, self.clock())
        current: dict[str, int] | None = None
        if known and uv not in known:
            log.warning(
                "%s: UIDVALIDITY of %s changed from %s to %d; matching messages to earlier decisions",
                name,
                watch,
                known[-1],
                uv,
            )
            current = self._current_fingerprints()
            report.carried_over = self._carry_over(uv, current)
        report.recovered = self._recover_intents(uv, current)
        while not should_stop():
            start = self.state.scanned_to(name, watch, uv)
            found = self.mailbox.search_uids(start)
            handled = self.state.handled_uids(name, watch, uv, found)
            todo = [uid for uid in found if uid not in handled]
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
        name, watch = self.account.name, self.account.watch
        raws = self.mailbox.fetch(uids, self.config.max_message_bytes)
        fetched = {raw.uid for raw in raws}
        for uid in uids:
            if uid not in fetched:
                log.info(
                    "%s: uid=%d vanished before it could be fetched (moved or deleted by another client)", name, uid
                )
        acting: list[tuple[RawMessage, DecisionRecord]] = []
        left: list[tuple[RawMessage, DecisionRecord]] = []
        for raw, (d, scores) in zip(raws, self._decide(raws), strict=True):
            (acting if d.action in ("move", "flag") else left).append((raw, _record(raw, d, scores)))
        if acting and not self.dry_run:
            self.state.add_intents(
                name,
                watch,
                uv,
                [Intent(raw.uid, fingerprint_of(raw), r.target or "", r) for raw, r in acting],
                self.clock(),
            )
        outcomes = self._finish(uv, left)
        groups: dict[tuple[str, str | None, tuple[str, ...]], list[tuple[RawMessage, DecisionRecord]]] = {}
        for raw, r in acting:
            groups.setdefault((r.action, r.target, tuple(r.keywords)), []).append((raw, r))
        for (action, target, keywords), group in groups.items():
            group_uids = [raw.uid for raw, _ in group]
            if not self.dry_run:
                if action == "move" and target is not None:
                    self.mailbox.move(group_uids, target)
                else:
                    self.mailbox.add_keywords(group_uids, keywords)
            outcomes.extend(self._finish(uv, group))
        return sorted(outcomes, key=lambda o: o.uid)

    def _decide(self, raws: Sequence[RawMessage]) -> list[tuple[Decision, Mapping[str, float]]]:
        name, watch = self.account.name, self.account.watch
        decisions: list[tuple[Decision, Mapping[str, float]] | None] = [None] * len(raws)
        readable: list[tuple[int, ParsedMessage]] = []
        for i, raw in enumerate(raws):
            earlier = self.state.earlier_action(name, watch, fingerprint_key(fingerprint_of(raw)))
            if earlier == "move":
                reason = "moved earlier and returned to the folder by the owner; left in place"
                decisions[i] = (Decision("keep", (), None, (), (reason,)), {})
                continue
            parsed = parse_message(raw.data)
            if parsed.error:
                decisions[i] = (skip(f"unreadable message ({parsed.error}); left in place"), {})
                continue
            readable.append((i, parsed))
        for (i, _), scores in zip(
            readable, score_each(self.scorer, [p for _, p in readable], self.account.name), strict=True
        ):
            if scores is None:
                decisions[i] = (skip("the model could not score this message; left in place"), {})
                continue
            d = decide(scores.values, self.thresholds, self.account.folders, self.config.action)
            if raws[i].truncated:
                d = Decision(
                    d.action,
                    d.labels,
                    d.target,
                    d.keywords,
                    (*d.reasons, f"judged on the first {len(raws[i].data)} of {raws[i].size} bytes"),
                )
            decisions[i] = (d, scores.values)
        return [d if d is not None else (skip("not judged"), {}) for d in decisions]

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

    def _current_fingerprints(self) -> dict[str, int]:
        """fingerprint key -> UID for every message now in the watched folder."""
        uids = self.mailbox.search_uids(1)
        out: dict[str, int] = {}
        for i in range(0, len(uids), 1000):
            for uid, fp in self.mailbox.fingerprints(uids[i : i + 1000]).items():
                out.setdefault(fingerprint_key(fp), uid)
        return out

    def _carry_over(self, uv: int, current: Mapping[str, int]) -> int:
        """After a UIDVALIDITY change: mark messages judged in an earlier epoch as handled."""
        name, watch = self.account.name, self.account.watch
        rows = []
        for key, uid in sorted(current.items(), key=lambda kv: kv[1]):
            earlier = self.state.earlier_action(name, watch, key)
            if earlier is not None:
                reason = f"already handled ({earlier}) before UIDVALIDITY changed to {uv}"
                rows.append((key, DecisionRecord(uid, "", {}, earlier, None, (), (reason,))))
        self.state.record_many(name, watch, uv, rows, self.clock())
        log.info("%s: %d messages carried over to UIDVALIDITY %d", name, len(rows), uv)
        return len(rows)

    def _recover_intents(self, uv: int, current: Mapping[str, int] | None) -> int:
        """Resolve moves and flags that were started but not confirmed before a crash."""
        name, watch = self.account.name, self.account.watch
        intents = self.state.intents(name, watch)
        for intent_uv, intent in intents:
            fp = intent.fingerprint
            key = fingerprint_key(fp)
            if intent_uv == uv:
                present = self.mailbox.fingerprints([intent.uid]).get(intent.uid)
                uid: int | None = intent.uid if present and fingerprint_key(present) == key else None
            else:
                if current is None:
                    current = self._current_fingerprints()
                uid = current.get(key)
            decision = intent.decision
            if decision.action == "move":
                in_target = self.mailbox.contains(intent.target, fp)
                if uid is not None and in_target:
                    self.mailbox.remove_copied([uid])
                    note = "copy found in the target after an interruption; original removed"
                elif uid is not None:
                    self.mailbox.move([uid], intent.target)
                    note = "move redone after an interruption"
                elif in_target:
                    note = "move confirmed after an interruption"
                else:
                    note = "message left the folder by other means before the move was confirmed"
            else:
                if uid is not None:
                    self.mailbox.add_keywords([uid], decision.keywords)
                note = "keywords set after an interruption" if uid is not None else "message left the folder"
            log.info("%s: uid=%d recovered: %s", name, intent.uid, note)
            record = replace(decision, uid=uid if uid is not None else intent.uid, reasons=(*decision.reasons, note))
            self.state.record(name, watch, uv if uid is not None else intent_uv, key, record, self.clock())
            # Only after the record is safe: under a new UIDVALIDITY it went to the message's new UID.
            self.state.drop_intent(name, watch, intent_uv, intent.uid)
        return len(intents)

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
                backoff.reset()
                while not stop.is_set():
                    self.pass_once(stop.is_set)
                    idle = "IDLE" in self.mailbox.capabilities()
                    timeout = self.config.idle_renew if idle else self.config.poll_interval
                    self.mailbox.wait_for_change(timeout, stop.is_set)
            except ConnectionLost as exc:
                log.warning("%s: connection lost (%s)", self.account.name, exc)
            except (AuthError, ConnectError):
                if not connected_once:
                    raise
                log.exception("%s: the server refused the connection", self.account.name)
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


def _record(raw: RawMessage, d: Decision, scores: Mapping[str, float]) -> DecisionRecord:
    return DecisionRecord(raw.uid, raw.message_id, dict(scores), d.action, d.target, d.keywords, d.reasons)
