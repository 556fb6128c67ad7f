"""The SQLite state: checkpoints per UIDVALIDITY, intents, the decision log, the lock, the sender ledger."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from filter.errors import StateError
from filter.mailbox import Fingerprint, TargetMark
from filter.senders import SenderRow
from filter.state import SCHEMA_VERSION, DecisionRecord, Intent, State, fingerprint_key, ledger_key, message_id_hash

FP = Fingerprint("<a@example.org>", 1200, datetime(2026, 1, 2, tzinfo=UTC))


def record(uid: int, action: str = "keep") -> DecisionRecord:
    return DecisionRecord(uid, "<a@example.org>", {"article_share": 0.1}, action, None, (), ("r",))


def test_fingerprint_key_uses_message_id_and_size() -> None:
    assert fingerprint_key(FP) == fingerprint_key(Fingerprint("<a@example.org>", 1200, None))
    assert fingerprint_key(FP) != fingerprint_key(Fingerprint("<a@example.org>", 1201, None))


def test_fingerprint_key_without_message_id_uses_date() -> None:
    a = Fingerprint("", 10, datetime(2026, 1, 2, tzinfo=UTC))
    b = Fingerprint("", 10, datetime(2026, 1, 3, tzinfo=UTC))
    assert fingerprint_key(a) != fingerprint_key(b)


def test_handled_uids_are_kept_per_uidvalidity(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    state.record("home", "INBOX", 7, "k", record(5), now=1.0)
    assert state.handled_uids("home", "INBOX", 7, [4, 5, 6]) == {5}
    assert state.handled_uids("home", "INBOX", 8, [5]) == set()


def test_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    state = State.open(path)
    state.start_epoch("home", "INBOX", 7, now=1.0)
    state.advance("home", "INBOX", 7, 42)
    state.close()
    again = State.open(path)
    assert again.scanned_to("home", "INBOX", 7) == 42
    assert again.known_uidvalidities("home", "INBOX") == [7]


def test_scan_mark_never_moves_back(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    state.start_epoch("home", "INBOX", 7, now=1.0)
    state.advance("home", "INBOX", 7, 42)
    state.advance("home", "INBOX", 7, 10)
    assert state.scanned_to("home", "INBOX", 7) == 42


def test_second_process_is_refused_by_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    first = State.open(path)
    with pytest.raises(StateError, match="in use by another ployfilter process"):
        State.open(path)
    first.close()
    State.open(path).close()


def test_record_clears_the_intent(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    state.add_intents("home", "INBOX", 7, [Intent(5, FP, "Articles", record(5, "move"))], now=1.0)
    assert [(uv, i.uid, i.target) for uv, i in state.intents("home", "INBOX")] == [(7, 5, "Articles")]
    state.record("home", "INBOX", 7, fingerprint_key(FP), record(5, "move"), now=2.0)
    assert state.intents("home", "INBOX") == []


def test_intent_keeps_its_fingerprint(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    state.add_intents("home", "INBOX", 7, [Intent(5, FP, "Articles", record(5, "move"))], now=1.0)
    ((_, intent),) = state.intents("home", "INBOX")
    assert intent.fingerprint == FP
    assert intent.decision.action == "move"


def test_an_intent_marked_copied_says_so_until_it_is_settled(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    intents = [Intent(uid, FP, "Articles", record(uid, "move")) for uid in (5, 6)]
    state.add_intents("home", "INBOX", 7, intents, now=1.0)
    state.mark_copied("home", "INBOX", 7, [5])
    assert [(i.uid, i.copied) for _, i in state.intents("home", "INBOX")] == [(5, True), (6, False)]
    state.record("home", "INBOX", 7, fingerprint_key(FP), record(5, "move"), now=2.0)
    state.drop_intent("home", "INBOX", 7, 6)
    state.add_intents("home", "INBOX", 7, intents, now=3.0)  # the same UIDs again: nothing copied yet
    assert [(i.uid, i.copied) for _, i in state.intents("home", "INBOX")] == [(5, False), (6, False)]


def test_an_intent_keeps_the_target_s_mark_from_before_its_copy_until_it_is_settled(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    intents = [Intent(uid, FP, "Articles", record(uid, "move")) for uid in (5, 6)]
    state.add_intents("home", "INBOX", 7, intents, now=1.0)
    state.mark_copying("home", "INBOX", 7, [5], TargetMark(3, 40))
    state.mark_copying("home", "INBOX", 7, [5], TargetMark(3, 41))  # the move redone: the later mark holds
    assert [(i.uid, i.copy_start) for _, i in state.intents("home", "INBOX")] == [(5, TargetMark(3, 41)), (6, None)]
    state.drop_intent("home", "INBOX", 7, 5)
    state.add_intents("home", "INBOX", 7, intents, now=2.0)
    assert [(i.uid, i.copy_start) for _, i in state.intents("home", "INBOX")] == [(5, None), (6, None)]


def test_the_arrival_times_of_moved_messages_are_kept_by_key(tmp_path: Path) -> None:
    from dataclasses import replace

    state = State.open(tmp_path / "s.sqlite3")
    key = fingerprint_key(FP)
    state.record("home", "INBOX", 7, key, replace(record(5, "move"), arrived="2026-03-02T10:00:00+00:00"), now=1.0)
    state.record("home", "INBOX", 7, key, replace(record(6, "keep"), arrived="2026-03-02T12:00:00+00:00"), now=2.0)
    state.record("home", "INBOX", 7, key, replace(record(8, "move"), arrived="2026-03-02T11:00:00+00:00"), now=3.0)
    assert state.moved_arrivals("home", "INBOX", key) == {"2026-03-02T10:00:00+00:00", "2026-03-02T11:00:00+00:00"}
    assert state.moved_arrivals("home", "Other", key) == set()


def test_earlier_action_is_found_across_epochs(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    state.record("home", "INBOX", 7, fingerprint_key(FP), record(5, "move"), now=1.0)
    assert state.earlier_action("home", "INBOX", fingerprint_key(FP)) == "move"
    assert state.earlier_action("home", "INBOX", "other") is None


def test_decision_log_stores_a_hash_not_the_message_id(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    state = State.open(path)
    state.record("home", "INBOX", 7, "k", record(5), now=1.0)
    (row,) = state.decisions()
    assert row["message_id_hash"] == message_id_hash("<a@example.org>")
    assert row["scores"] == {"article_share": 0.1}
    state.close()
    dump = "\n".join(sqlite3.connect(path).iterdump())
    assert "a@example.org" not in dump


def test_state_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    State.open(path)
    assert path.stat().st_mode & 0o077 == 0


def test_in_memory_state_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    state = State.in_memory()
    state.record("home", "INBOX", 7, "k", record(5), now=1.0)
    assert list(tmp_path.iterdir()) == []


def test_not_a_database_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="not a usable SQLite database"):
        State.open(path)


# The sender ledger ------------------------------------------------------------

DAY = 86400.0

# The schema as ployfilter 1 wrote it, before the sender ledger.
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE epochs (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL,
    first_seen REAL NOT NULL, next_uid INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (account, mailbox, uidvalidity)
);
CREATE TABLE handled (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,
    fp_key TEXT NOT NULL, action TEXT NOT NULL,
    PRIMARY KEY (account, mailbox, uidvalidity, uid)
);
CREATE INDEX handled_fp ON handled (account, mailbox, fp_key);
CREATE TABLE intents (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,
    fp_key TEXT NOT NULL, message_id TEXT NOT NULL, size INTEGER NOT NULL, internaldate TEXT,
    target TEXT NOT NULL, decision TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (account, mailbox, uidvalidity, uid)
);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL, account TEXT NOT NULL, mailbox TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL, message_id_hash TEXT NOT NULL,
    scores TEXT NOT NULL, action TEXT NOT NULL, target TEXT, reasons TEXT NOT NULL
);
INSERT INTO meta VALUES ('schema', '1');
"""


def judged(uid: int, sender: str, labels: tuple[str, ...], date: float | None) -> DecisionRecord:
    action = "move" if labels else "keep"
    return DecisionRecord(uid, f"<{uid}@x>", {}, action, None, (), (), sender=sender, labels=labels, date=date)


def test_a_message_recorded_twice_counts_once() -> None:
    state = State.in_memory()
    state.record("home", "INBOX", 7, "k1", judged(1, "ann@example.org", ("article_share",), 10 * DAY), now=1.0)
    state.record("home", "Articles", 9, "k1", judged(3, "ann@example.org", ("article_share",), 10 * DAY), now=2.0)
    assert state.history("ann@example.org").shares == (10 * DAY,)
    (row,) = state.senders()
    assert row.shares == 1


def test_a_message_keeps_its_first_judgement_in_the_ledger() -> None:
    state = State.in_memory()
    state.record("home", "INBOX", 7, "k1", judged(1, "ann@example.org", (), 10 * DAY), now=1.0)
    state.record("home", "INBOX", 8, "k1", judged(1, "ann@example.org", ("favour_request",), 10 * DAY), now=2.0)
    (row,) = state.senders()
    assert (row.shares, row.asks, row.other) == (0, 0, 1)


def test_a_message_with_both_labels_counts_as_share_and_ask() -> None:
    state = State.in_memory()
    both = ("article_share", "favour_request")
    state.record("home", "INBOX", 7, "k1", judged(1, "ann@example.org", both, 10 * DAY), now=1.0)
    history = state.history("ann@example.org")
    assert (history.shares, history.asks) == ((10 * DAY,), (10 * DAY,))


def test_records_without_sender_or_date_leave_the_ledger_alone() -> None:
    state = State.in_memory()
    state.record("home", "INBOX", 7, "k1", judged(1, "", ("article_share",), 10 * DAY), now=1.0)
    state.record("home", "INBOX", 7, "k2", judged(2, "ann@example.org", ("article_share",), None), now=1.0)
    assert state.senders() == []


def test_ledger_rows_roll_back_with_the_decision() -> None:
    state = State.in_memory()
    good = ("k1", judged(1, "ann@example.org", ("article_share",), 10 * DAY))
    bad = ("k2", judged(2**63, "ann@example.org", ("favour_request",), 11 * DAY))  # a UID SQLite cannot hold
    with pytest.raises(OverflowError):
        state.record_many("home", "INBOX", 7, [good, bad], now=1.0)
    assert state.senders() == []
    assert state.handled_uids("home", "INBOX", 7, [1, 2]) == set()


def test_history_is_sorted_and_normalises_the_address() -> None:
    state = State.in_memory()
    for uid, when, label in [(1, 30.0, "article_share"), (2, 10.0, "article_share"), (3, 20.0, "favour_request")]:
        state.record("home", "INBOX", 7, f"k{uid}", judged(uid, "Ann <Ann@Example.org>", (label,), when), now=1.0)
    state.record("home", "INBOX", 7, "k4", judged(4, "ann@example.org", (), 40.0), now=1.0)
    history = state.history("ANN@example.org")
    assert history.shares == (10.0, 30.0)
    assert history.asks == (20.0,)
    assert history.last_sent is None


def test_history_before_leaves_out_later_mail() -> None:
    state = State.in_memory()
    for uid, when in [(1, 10.0), (2, 20.0), (3, 30.0)]:
        state.record("home", "INBOX", 7, f"k{uid}", judged(uid, "ann@example.org", ("article_share",), when), now=1.0)
    assert state.history("ann@example.org", before=25.0).shares == (10.0, 20.0)
    assert state.history("ann@example.org", before=30.0).shares == (10.0, 20.0, 30.0)  # the same second counts


def test_history_can_leave_out_the_message_being_judged() -> None:
    state = State.in_memory()
    key = "m:" + "a" * 16 + ":900"
    state.record("home", "INBOX", 7, key, judged(1, "ann@example.org", ("article_share",), 10.0), now=1.0)
    state.record(
        "home", "INBOX", 7, "m:" + "b" * 16 + ":900", judged(2, "ann@example.org", ("article_share",), 10.0), now=1.0
    )
    own = ledger_key(key, "ann@example.org", 10.0)
    assert state.history("ann@example.org", before=10.0, exclude=[own]).shares == (10.0,)


def test_messages_that_reuse_a_message_id_count_apart() -> None:
    state = State.in_memory()
    for uid, when in [(1, 10.0), (2, 20.0), (3, 30.0)]:  # seconds apart: one hour, three messages
        key = "m:" + "c" * 16 + f":{900 + uid}"
        state.record("home", "INBOX", 7, key, judged(uid, "ann@example.org", ("article_share",), when), now=1.0)
    assert state.history("ann@example.org").shares == (10.0, 20.0, 30.0)


def test_history_spans_accounts() -> None:
    state = State.in_memory()
    state.record("home", "INBOX", 7, "k1", judged(1, "ann@example.org", ("article_share",), 10.0), now=1.0)
    state.record("work", "INBOX", 3, "k2", judged(1, "ann@example.org", ("favour_request",), 20.0), now=1.0)
    history = state.history("ann@example.org")
    assert (history.shares, history.asks) == ((10.0,), (20.0,))


def test_a_message_delivered_to_two_accounts_counts_once() -> None:
    state = State.in_memory()
    state.record("home", "INBOX", 7, "k1", judged(1, "ann@example.org", ("article_share",), 10.0), now=1.0)
    state.record("work", "INBOX", 3, "k1", judged(9, "ann@example.org", ("article_share",), 12.0), now=1.0)
    assert state.history("ann@example.org").shares == (10.0,)
    assert state.senders()[0].shares == 1


def test_history_last_sent_is_the_latest_mail_to_the_address() -> None:
    state = State.in_memory()
    state.record_sent("home", [("s1", "ann@example.org", 5.0), ("s2", "Ann <ANN@example.org>", 50.0)])
    state.record_sent("work", [("s3", "ann@example.org", 20.0), ("s3", "bob@example.org", 20.0)])
    assert state.history("ann@example.org").last_sent == 50.0
    assert state.history("ann@example.org", before=10.0).last_sent == 50.0
    assert state.history("carol@example.org").last_sent is None


def test_reading_the_same_sent_message_again_adds_nothing() -> None:
    state = State.in_memory()
    state.record_sent("home", [("s1", "ann@example.org", 5.0), ("s1", "bob@example.org", 5.0)])
    state.record_sent("home", [("s1", "ann@example.org", 5.0)])
    rows = {row.address: row for row in state.senders()}
    assert rows["ann@example.org"].sent_count == 1
    assert rows["bob@example.org"].sent_count == 1


def test_senders_sums_received_and_sent_per_address() -> None:
    state = State.in_memory()
    for uid, label in enumerate(["article_share", "article_share", "favour_request", ""]):
        labels = (label,) if label else ()
        state.record("home", "INBOX", 7, f"k{uid}", judged(uid, "ann@example.org", labels, 10.0 + uid), now=1.0)
    state.record_sent("home", [("s1", "ann@example.org", 5.0), ("s2", "dan@example.org", 6.0)])
    assert state.senders() == [
        SenderRow("ann@example.org", 2, 1, 1, 10.0, 13.0, 1, 5.0, 2),
        SenderRow("dan@example.org", 0, 0, 0, None, None, 1, 6.0),
    ]


def test_senders_since_limits_received_mail_but_not_replies() -> None:
    state = State.in_memory()
    state.record("home", "INBOX", 7, "k1", judged(1, "ann@example.org", ("article_share",), 10.0), now=1.0)
    state.record("home", "INBOX", 7, "k2", judged(2, "ann@example.org", ("favour_request",), 100.0), now=1.0)
    state.record("home", "INBOX", 7, "k3", judged(3, "bob@example.org", ("article_share",), 20.0), now=1.0)
    state.record_sent("home", [("s1", "ann@example.org", 5.0), ("s2", "dan@example.org", 6.0)])
    assert state.senders(since=50.0) == [SenderRow("ann@example.org", 0, 1, 0, 100.0, 100.0, 1, 5.0)]


def test_sent_checkpoint_round_trips_and_never_moves_back() -> None:
    state = State.in_memory()
    assert state.sent_checkpoint("home", "Sent") is None
    state.set_sent_checkpoint("home", "Sent", 7, 40)
    state.set_sent_checkpoint("home", "Sent", 7, 30)
    assert state.sent_checkpoint("home", "Sent") == (7, 40)
    assert state.sent_checkpoint("work", "Sent") is None


def test_new_sent_uidvalidity_resets_the_checkpoint() -> None:
    state = State.in_memory()
    state.set_sent_checkpoint("home", "Sent", 7, 40)
    state.set_sent_checkpoint("home", "Sent", 8, 1)
    assert state.sent_checkpoint("home", "Sent") == (8, 1)


def test_last_digest_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    state = State.open(path)
    assert state.last_digest("home") is None
    state.set_last_digest("home", 100.0)
    state.set_last_digest("home", 200.0)
    state.close()
    again = State.open(path)
    assert again.last_digest("home") == 200.0
    assert again.last_digest("work") is None


def test_version_1_database_gains_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(V1_SCHEMA)
    old.execute("INSERT INTO epochs VALUES ('home', 'INBOX', 7, 1.0, 42)")
    old.commit()
    old.close()
    state = State.open(path)
    assert state.scanned_to("home", "INBOX", 7) == 42
    state.record("home", "INBOX", 7, "k1", judged(1, "ann@example.org", ("article_share",), 10.0), now=1.0)
    assert state.history("ann@example.org").shares == (10.0,)
    state.close()
    (version,) = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    assert version == str(SCHEMA_VERSION) == "4"


def test_intents_written_before_the_ledger_still_load(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(V1_SCHEMA)
    old_fields = {"uid": 5, "message_id": "<a@x>", "scores": {}, "action": "move", "target": "A", "keywords": []}
    decision = json.dumps({**old_fields, "reasons": []})
    old.execute("INSERT INTO intents VALUES ('home', 'INBOX', 7, 5, 'k', '<a@x>', 10, NULL, 'A', ?, 1.0)", (decision,))
    old.commit()
    old.close()
    ((_, intent),) = State.open(path).intents("home", "INBOX")
    assert (intent.decision.sender, intent.decision.labels, intent.decision.date) == ("", (), None)


def test_intent_keeps_the_ledger_fields() -> None:
    state = State.in_memory()
    decision = judged(5, "ann@example.org", ("article_share", "favour_request"), 10.0)
    state.add_intents("home", "INBOX", 7, [Intent(5, FP, "Articles", decision)], now=1.0)
    ((_, intent),) = state.intents("home", "INBOX")
    loaded = intent.decision
    assert (loaded.sender, loaded.labels, loaded.date) == (decision.sender, decision.labels, decision.date)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    State.open(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StateError, match="newer ployfilter"):
        State.open(path)


def test_a_reader_reads_beside_the_daemon_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    daemon = State.open(path)  # holds the lock
    daemon.record("home", "INBOX", 7, "k1", judged(1, "ann@example.org", ("article_share",), 10.0), now=1.0)
    reader = State.open_reader(path)
    assert reader.history("ann@example.org").shares == (10.0,)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.advance("home", "INBOX", 7, 9)
    reader.close()
    daemon.close()


def test_a_reader_leaves_an_older_state_for_the_daemon_to_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(V1_SCHEMA)
    old.commit()
    old.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match=r"older ployfilter \(schema 1, now 4\); restart the daemon"):
        State.open_reader(path)
    assert path.read_bytes() == before
    assert sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE name='received'").fetchone() is None


def test_a_reader_refuses_what_is_not_a_state(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StateError, match="not a readable ployfilter state"):
        State.open_reader(junk)
    with pytest.raises(StateError, match="not a readable ployfilter state"):
        State.open_reader(tmp_path / "absent.sqlite3")


def test_no_table_has_room_for_subjects_or_text(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    State.open(path).close()
    db = sqlite3.connect(path)
    tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    columns = {col[1] for table in tables for col in db.execute(f"PRAGMA table_info({table})")}
    assert {"received", "sent", "sent_checkpoints", "digests"} <= set(tables)
    assert not columns & {"subject", "body", "text", "content", "snippet", "preview"}


def test_the_pattern_column_counts_only_unanswered_shares_before_an_ask() -> None:
    state = State.in_memory()
    times = {"ask first": [("favour_request", 10.0), ("article_share", 20.0), ("article_share", 30.0)]}
    times["shares, reply, shares, ask"] = [
        ("article_share", 10.0),
        ("article_share", 20.0),
        ("article_share", 40.0),
        ("article_share", 50.0),
        ("favour_request", 60.0),
    ]
    for n, events in enumerate(times.values()):
        address = f"s{n}@example.org"
        for i, (label, when) in enumerate(events):
            state.record("home", "INBOX", 7, f"k{n}-{i}", judged(i, address, (label,), when), now=1.0)
    state.record_sent("home", [("r1", "s1@example.org", 30.0)])
    rows = {r.address: r.before_ask for r in state.senders()}
    assert rows == {"s0@example.org": 0, "s1@example.org": 2}


def test_a_version_2_ledger_is_rekeyed_so_copies_in_two_accounts_count_once(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    State.open(path).close()
    db = sqlite3.connect(path)
    mid = "d" * 16
    rows = [("home", f"m:{mid}:1200"), ("work", f"m:{mid}:1234"), ("home", "d:800:-")]
    db.executemany(
        "INSERT INTO received VALUES (?, 'ann@example.org', 10.0, 'article_share', ?)", [(a, k) for a, k in rows]
    )
    db.execute("UPDATE meta SET value='2' WHERE key='schema'")
    db.commit()
    db.close()
    state = State.open(path)
    assert state.history("ann@example.org").shares == (10.0, 10.0)  # the two copies once, the other message once
    assert state.senders()[0].shares == 2
    state.close()
    (version,) = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    assert version == "4"


def test_a_version_2_ledger_gets_addresses_in_today_s_form(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    State.open(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO received VALUES ('home', 'kai@xn--bcher-kva.de', 10.0, 'article_share', 'k1')")
    db.execute("INSERT INTO sent VALUES ('home', 's1', 'kai@xn--bcher-kva.de', 5.0)")
    db.execute("UPDATE meta SET value='2' WHERE key='schema'")
    db.commit()
    db.close()
    state = State.open(path)
    history = state.history("kai@bücher.de")
    assert (history.shares, history.last_sent) == ((10.0,), 5.0)
    state.close()


def test_the_pattern_column_counts_shares_of_the_ask_s_own_second() -> None:
    state = State.in_memory()
    for i, label in enumerate(["article_share", "article_share", "favour_request"]):
        state.record("home", "INBOX", 7, f"k{i}", judged(i, "ann@example.org", (label,), 10.0), now=1.0)
    assert state.senders()[0].before_ask == 2


def test_copies_the_old_key_had_merged_stay_one_message_after_the_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    State.open(path).close()
    db = sqlite3.connect(path)
    old = "m:" + "e" * 16 + ":0a1b2c3d4e5f"  # one schema 3 key for two Date-less copies, arrived apart
    db.execute("INSERT INTO received VALUES ('home', 'ann@example.org', 3600.0, 'article_share', ?)", (old,))
    db.execute("INSERT INTO received VALUES ('work', 'ann@example.org', 4500.0, 'article_share', ?)", (old,))
    db.execute("UPDATE meta SET value='3' WHERE key='schema'")
    db.commit()
    db.close()
    state = State.open(path)
    assert state.senders()[0].shares == 1
    state.close()


def test_a_reader_without_write_access_to_the_folder_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # as another user, with no daemon holding the -shm file, SQLite cannot create it; root cannot be refused,
    # so the refusal is played here
    path = tmp_path / "s.sqlite3"
    State.open(path).close()

    def refused(*args: object, **kwargs: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(sqlite3, "connect", refused)
    monkeypatch.setattr("filter.state.os.access", lambda *args: False)
    with pytest.raises(StateError, match=r"is not writable for this user.*run as the daemon's user"):
        State.open_reader(path)


def test_a_new_state_and_its_journal_are_private_in_a_folder_others_can_read(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    state = State.open(tmp_path / "s.sqlite3")
    state.add_intents("home", "INBOX", 7, [Intent(5, FP, "Articles", record(5, "move"))], now=1.0)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.glob("s.sqlite3*") if p.suffix != ".lock"}
    assert set(modes) >= {"s.sqlite3", "s.sqlite3-wal"} and set(modes.values()) == {0o600}, modes
