"""Checkpoints and the decision log, in SQLite at ``state_path``.

What makes "never twice, never skipped" hold across crashes:

* UIDs are only meaningful together with the folder's UIDVALIDITY (RFC 9051
  section 2.3.1.1), so every row is keyed by (account, mailbox, uidvalidity).
* A message is marked *handled* only after its action succeeded on the
  server, in the same transaction as its decision-log row.
* Before a move, an *intent* row is written (and committed). A crash between
  the server's move and the handled row leaves the intent behind; on the next
  start ``runner`` looks the message up on the server (by its fingerprint) and
  finishes or redoes the move, instead of guessing.
* When UIDVALIDITY changes, the old UIDs are void; messages are then matched
  to earlier decisions by their fingerprint key (Message-ID and size), so mail
  already judged is not judged again and mail never seen is not skipped.

Only identifiers, scores and decisions are stored: no subject, no body.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, ParamSpec, TypeVar

from filter.errors import StateError
from filter.mailbox import Fingerprint

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS epochs (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL,
    first_seen REAL NOT NULL, next_uid INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (account, mailbox, uidvalidity)
);
CREATE TABLE IF NOT EXISTS handled (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,
    fp_key TEXT NOT NULL, action TEXT NOT NULL,
    PRIMARY KEY (account, mailbox, uidvalidity, uid)
);
CREATE INDEX IF NOT EXISTS handled_fp ON handled (account, mailbox, fp_key);
CREATE TABLE IF NOT EXISTS intents (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,
    fp_key TEXT NOT NULL, message_id TEXT NOT NULL, size INTEGER NOT NULL, internaldate TEXT,
    target TEXT NOT NULL, decision TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (account, mailbox, uidvalidity, uid)
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL, account TEXT NOT NULL, mailbox TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL, message_id_hash TEXT NOT NULL,
    scores TEXT NOT NULL, action TEXT NOT NULL, target TEXT, reasons TEXT NOT NULL
);
"""


def message_id_hash(message_id: str) -> str:
    """A short, stable digest of a Message-ID, so the log can correlate without storing it."""
    return hashlib.sha256(message_id.strip().encode("utf-8", "replace")).hexdigest()[:16] if message_id else ""


def fingerprint_key(fp: Fingerprint) -> str:
    """The identity of a message that survives COPY, MOVE and a UIDVALIDITY change.

    Message-ID plus size when there is a Message-ID; else size plus
    INTERNALDATE (which COPY and MOVE keep, RFC 9051 section 2.3.3).
    """
    if fp.message_id:
        return f"m:{message_id_hash(fp.message_id)}:{fp.size}"
    date = fp.internaldate.isoformat() if fp.internaldate else "-"
    return f"d:{fp.size}:{date}"


@dataclass(frozen=True)
class DecisionRecord:
    """One row of the decision log as written by the runner."""

    uid: int
    message_id: str
    scores: Mapping[str, float]
    action: str
    target: str | None
    keywords: Sequence[str]
    reasons: Sequence[str]


@dataclass(frozen=True)
class Intent:
    """A move that was started and not yet confirmed."""

    uid: int
    fingerprint: Fingerprint
    target: str
    decision: DecisionRecord


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _serialised(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a State method under the object's mutex: account threads share one connection."""

    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with args[0]._mutex:  # type: ignore[attr-defined]
            return method(*args, **kwargs)

    wrapper.__doc__ = method.__doc__
    wrapper.__name__ = method.__name__
    return wrapper


class State:
    """The SQLite state of one ployfilter installation.

    One process holds it at a time: ``open`` takes an exclusive lock on a
    sibling ``.lock`` file, so a second daemon started by mistake fails fast
    instead of moving the same mail twice. Within the process, the account
    threads share it; every public method runs under one mutex.
    """

    def __init__(self, path: Path, db: sqlite3.Connection, lock: IO[bytes] | None) -> None:
        self.path = path
        self._db = db
        self._lock = lock
        self._mutex = threading.RLock()

    @classmethod
    def open(cls, path: Path, *, lock: bool = True) -> State:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StateError(f"state_path: cannot create {path.parent} ({exc.strerror})") from exc
        lock_file: IO[bytes] | None = None
        if lock:
            try:
                lock_file = open(str(path) + ".lock", "ab")  # noqa: SIM115 - held for the object's life
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StateError(f"state_path: {path} is in use by another ployfilter process; stop it first") from exc
            except OSError as exc:
                raise StateError(f"state_path: cannot lock {path} ({exc.strerror})") from exc
        try:
            db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            _init_schema(db, path)
            os.chmod(path, 0o600)
        except sqlite3.Error as exc:
            raise StateError(f"state_path: {path} is not a usable SQLite database ({exc})") from exc
        return cls(path, db, lock_file)

    @classmethod
    def in_memory(cls) -> State:
        """A state that lives as long as the process: for dry-run, which must leave no trace."""
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        _init_schema(db, Path(":memory:"))
        return cls(Path(":memory:"), db, None)

    @_serialised
    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # Epochs (UIDVALIDITY) ---------------------------------------------------

    @_serialised
    def known_uidvalidities(self, account: str, mailbox: str) -> list[int]:
        rows = self._db.execute(
            "SELECT uidvalidity FROM epochs WHERE account=? AND mailbox=? ORDER BY first_seen",
            (account, mailbox),
        )
        return [r[0] for r in rows]

    @_serialised
    def start_epoch(self, account: str, mailbox: str, uidvalidity: int, now: float) -> None:
        self._db.execute("INSERT OR IGNORE INTO epochs VALUES (?, ?, ?, ?, 1)", (account, mailbox, uidvalidity, now))

    @_serialised
    def scanned_to(self, account: str, mailbox: str, uidvalidity: int) -> int:
        """The first UID of this epoch not yet scanned: every lower UID is handled."""
        row = self._db.execute(
            "SELECT next_uid FROM epochs WHERE account=? AND mailbox=? AND uidvalidity=?",
            (account, mailbox, uidvalidity),
        ).fetchone()
        return 1 if row is None else int(row[0])

    @_serialised
    def advance(self, account: str, mailbox: str, uidvalidity: int, next_uid: int) -> None:
        """Move the scan mark; called once every UID below ``next_uid`` is handled."""
        self._db.execute(
            "UPDATE epochs SET next_uid = MAX(next_uid, ?) WHERE account=? AND mailbox=? AND uidvalidity=?",
            (next_uid, account, mailbox, uidvalidity),
        )

    # Handled UIDs -------------------------------------------------------------

    @_serialised
    def handled_uids(self, account: str, mailbox: str, uidvalidity: int, uids: Iterable[int]) -> set[int]:
        wanted = list(uids)
        found: set[int] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT uid FROM handled WHERE account=? AND mailbox=? AND uidvalidity=? AND uid IN ({marks})",
                (account, mailbox, uidvalidity, *chunk),
            )
            found.update(r[0] for r in rows)
        return found

    @_serialised
    def earlier_action(self, account: str, mailbox: str, fp_key: str) -> str | None:
        """The action last recorded for a message with this fingerprint key, in any epoch."""
        row = self._db.execute(
            "SELECT action FROM handled WHERE account=? AND mailbox=? AND fp_key=? "
            "ORDER BY uidvalidity DESC, uid DESC LIMIT 1",
            (account, mailbox, fp_key),
        ).fetchone()
        return None if row is None else str(row[0])

    def record(
        self,
        account: str,
        mailbox: str,
        uidvalidity: int,
        fp_key: str,
        decision: DecisionRecord,
        now: float,
    ) -> None:
        """Mark a UID handled and log its decision, atomically; clears its intent if any."""
        self.record_many(account, mailbox, uidvalidity, [(fp_key, decision)], now)

    @_serialised
    def record_many(
        self,
        account: str,
        mailbox: str,
        uidvalidity: int,
        decisions: Sequence[tuple[str, DecisionRecord]],
        now: float,
    ) -> None:
        """``record`` for several UIDs in one transaction: one disk sync per batch, not per message."""
        with self._transaction():
            for fp_key, decision in decisions:
                self._db.execute(
                    "INSERT OR REPLACE INTO handled VALUES (?, ?, ?, ?, ?, ?)",
                    (account, mailbox, uidvalidity, decision.uid, fp_key, decision.action),
                )
                self._db.execute(
                    "DELETE FROM intents WHERE account=? AND mailbox=? AND uidvalidity=? AND uid=?",
                    (account, mailbox, uidvalidity, decision.uid),
                )
                self._db.execute(
                    "INSERT INTO decisions (time, account, mailbox, uidvalidity, uid, message_id_hash, scores, action,"
                    " target, reasons) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        now,
                        account,
                        mailbox,
                        uidvalidity,
                        decision.uid,
                        message_id_hash(decision.message_id),
                        json.dumps({k: round(v, 4) for k, v in decision.scores.items()}, sort_keys=True),
                        decision.action,
                        decision.target,
                        json.dumps(list(decision.reasons), ensure_ascii=False),
                    ),
                )

    # Intents ------------------------------------------------------------------

    @_serialised
    def add_intents(self, account: str, mailbox: str, uidvalidity: int, intents: Sequence[Intent], now: float) -> None:
        with self._transaction():
            for it in intents:
                fp = it.fingerprint
                self._db.execute(
                    "INSERT OR REPLACE INTO intents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        account,
                        mailbox,
                        uidvalidity,
                        it.uid,
                        fingerprint_key(fp),
                        fp.message_id,
                        fp.size,
                        fp.internaldate.isoformat() if fp.internaldate else None,
                        it.target,
                        _dump_decision(it.decision),
                        now,
                    ),
                )

    @_serialised
    def intents(self, account: str, mailbox: str) -> list[tuple[int, Intent]]:
        """Unconfirmed moves for this folder, in every epoch, as (uidvalidity, intent)."""
        rows = self._db.execute(
            "SELECT uidvalidity, uid, message_id, size, internaldate, target, decision FROM intents "
            "WHERE account=? AND mailbox=? ORDER BY uidvalidity, uid",
            (account, mailbox),
        ).fetchall()
        out = []
        for uidvalidity, uid, message_id, size, internaldate, target, decision in rows:
            fp = Fingerprint(message_id, size, datetime.fromisoformat(internaldate) if internaldate else None)
            out.append((uidvalidity, Intent(uid, fp, target, _load_decision(decision))))
        return out

    @_serialised
    def drop_intent(self, account: str, mailbox: str, uidvalidity: int, uid: int) -> None:
        self._db.execute(
            "DELETE FROM intents WHERE account=? AND mailbox=? AND uidvalidity=? AND uid=?",
            (account, mailbox, uidvalidity, uid),
        )

    # Reading the log ------------------------------------------------------------

    @_serialised
    def decisions(self, account: str | None = None, since: float = 0.0) -> list[dict[str, object]]:
        query = "SELECT time, account, mailbox, uidvalidity, uid, message_id_hash, scores, action, target, reasons"
        query += " FROM decisions WHERE time >= ?"
        params: list[object] = [since]
        if account is not None:
            query += " AND account = ?"
            params.append(account)
        rows = self._db.execute(query + " ORDER BY id", params).fetchall()
        keys = ("time", "account", "mailbox", "uidvalidity", "uid", "message_id_hash", "scores", "action", "target")
        out: list[dict[str, object]] = []
        for row in rows:
            item: dict[str, object] = dict(zip(keys, row[:9], strict=True))
            item["scores"] = json.loads(row[6])
            item["reasons"] = json.loads(row[9])
            out.append(item)
        return out

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


def _init_schema(db: sqlite3.Connection, path: Path) -> None:
    db.executescript(_SCHEMA)
    row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    if row is None:
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    elif int(row[0]) > SCHEMA_VERSION:
        raise StateError(f"state_path: {path} was written by a newer ployfilter (schema {row[0]})")


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _dump_decision(d: DecisionRecord) -> str:
    return json.dumps(
        {
            "uid": d.uid,
            "message_id": d.message_id,
            "scores": dict(d.scores),
            "action": d.action,
            "target": d.target,
            "keywords": list(d.keywords),
            "reasons": list(d.reasons),
        }
    )


def _load_decision(text: str) -> DecisionRecord:
    d = json.loads(text)
    return DecisionRecord(d["uid"], d["message_id"], d["scores"], d["action"], d["target"], d["keywords"], d["reasons"])
