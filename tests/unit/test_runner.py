"""The loop's bookkeeping, against an in-memory mail store.

These tests pin down the order of writes (intent, act, record, advance)
with crashes injected between the steps. The same properties are proven
against a real Dovecot in tests/integration; this file makes every crash
point reachable, which killing a process at random cannot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime

import pytest

from filter.config import Config, parse_config
from filter.errors import FolderError, MailboxError
from filter.imap import sent_message_of
from filter.mailbox import ConnectionLost, Fingerprint, MailboxStatus, RawMessage, SentMessage, TargetMark
from filter.message import ParsedMessage
from filter.model import Scores
from filter.runner import FETCH_TRIES, NETWORK_TRIES, AccountRunner, Backoff
from filter.state import State

ARTICLES, REQUESTS = "Networking/Articles", "Networking/Requests"


class Crash(Exception):
    """Stands for the process dying at a chosen point."""


@dataclass
class Folder:
    uidvalidity: int = 1
    uidnext: int = 1
    messages: dict[int, tuple[bytes, set[str]]] = field(default_factory=dict)

    def add(self, data: bytes, flags: Sequence[str] = ()) -> int:
        uid = self.uidnext
        self.messages[uid] = (data, set(flags))
        self.uidnext += 1
        return uid


class Server:
    """A mail store with IMAP's UID semantics, shared by successive sessions."""

    def __init__(self, *, move: bool = True) -> None:
        self.folders: dict[str, Folder] = {"INBOX": Folder()}
        self.has_move = move
        self.fetch_failures: list[ConnectionLost] = []  # raised, one per fetch of UID 1, while there are any

    def all_bodies(self) -> list[bytes]:
        return sorted(data for f in self.folders.values() for data, _ in f.messages.values())


class FakeMailbox:
    def __init__(self, server: Server, crash_at: str | None = None) -> None:
        self.server = server
        self.selected: Folder | None = None
        self.crash_at = crash_at
        self.commands: list[str] = []

    def _point(self, name: str) -> None:
        if self.crash_at == name:
            raise Crash(name)

    def connect(self) -> None:
        self.commands.append("LOGIN")

    def close(self) -> None:
        pass

    def capabilities(self) -> frozenset[str]:
        return frozenset({"IMAP4REV1", "UIDPLUS"} | ({"MOVE"} if self.server.has_move else set()))

    def select(self, folder: str) -> MailboxStatus:
        self.selected = self.server.folders[folder]
        return MailboxStatus(self.selected.uidvalidity, self.selected.uidnext, len(self.selected.messages))

    def _folder(self) -> Folder:
        assert self.selected is not None
        return self.selected

    def search_uids(self, first_uid: int = 1) -> list[int]:
        return sorted(uid for uid in self._folder().messages if uid >= first_uid)

    def fingerprints(self, uids: Sequence[int]) -> dict[int, Fingerprint]:
        f = self._folder()
        return {uid: _fp(f.messages[uid][0]) for uid in uids if uid in f.messages}

    def fetch(self, uids: Sequence[int], max_bytes: int) -> list[RawMessage]:
        f = self._folder()
        if 1 in uids and self.server.fetch_failures:
            raise self.server.fetch_failures.pop(0)
        self.commands.append("FETCH")
        out = []
        for uid in uids:
            if uid in f.messages:
                data, flags = f.messages[uid]
                fp = _fp(data)
                out.append(
                    RawMessage(
                        uid,
                        f.uidvalidity,
                        tuple(flags),
                        len(data),
                        fp.internaldate,
                        data[:max_bytes],
                        len(data) > max_bytes,
                        fp.message_id,
                    )
                )
        return out

    def contains(
        self, folder: str, fingerprint: Fingerprint, original: int | None = None, since: TargetMark | None = None
    ) -> bool:
        target = self.server.folders.get(folder)
        if target is None or (since is not None and since.uidvalidity != target.uidvalidity):
            return False
        same = None if original is None else self._folder().messages.get(original, (None,))[0]
        first = 1 if since is None else since.uidnext

        def alike(other: Fingerprint) -> bool:  # no INTERNALDATE asked for: any
            return (other.message_id, other.size) == (fingerprint.message_id, fingerprint.size) and (
                fingerprint.internaldate is None or other.internaldate == fingerprint.internaldate
            )

        return any(
            uid >= first and alike(_fp(d)) and (original is None or d == same)
            for uid, (d, _) in target.messages.items()
        )

    def ensure_folder(self, folder: str) -> None:
        self.server.folders.setdefault(folder, Folder())

    def move(
        self,
        uids: Sequence[int],
        folder: str,
        copied: Callable[[], None] | None = None,
        copying: Callable[[TargetMark], None] | None = None,
    ) -> None:
        f, target = self._folder(), self.server.folders[folder]
        self.commands.append(f"MOVE {list(uids)} {folder}")
        if copying is not None:
            copying(TargetMark(target.uidvalidity, target.uidnext))
        if self.server.has_move:
            for uid in uids:  # MOVE never leaves a message in both folders
                target.add(*f.messages.pop(uid))
                self._point("after-copy")
        else:
            for uid in uids:
                target.add(*f.messages[uid])
            self._point("copy-unanswered")  # the COPY was made, and its answer lost
            if copied is not None:
                copied()
            self._point("after-copy")
            for uid in uids:
                f.messages[uid][1].add("\\Deleted")
                self._point("after-store")
                del f.messages[uid]
        self._point("after-move")

    def remove_copied(self, uids: Sequence[int]) -> None:
        self.commands.append(f"REMOVE {list(uids)}")
        for uid in uids:
            del self._folder().messages[uid]

    def add_keywords(self, uids: Sequence[int], keywords: Sequence[str]) -> None:
        for uid in uids:
            self._folder().messages[uid][1].update(keywords)
        self._point("after-flag")

    def find_sent_folder(self) -> str | None:
        return None

    def read_sent(self, folder: str, first_uid: int, limit: int = 5000) -> tuple[int, list[SentMessage], int]:
        self.selected = None
        if folder not in self.server.folders:
            raise FolderError(f"folder {folder!r} does not exist")
        f = self.server.folders[folder]
        uids = sorted(uid for uid in f.messages if uid >= first_uid)
        batch = uids[:limit]
        read = [sent_message_of(uid, f.messages[uid][0], len(f.messages[uid][0]), _DATE) for uid in batch]
        return f.uidvalidity, read, batch[-1] + 1 if len(uids) > limit else max(first_uid, f.uidnext)

    def append(self, folder: str, data: bytes, keywords: Sequence[str] = ()) -> None:
        self.server.folders.setdefault(folder, Folder()).add(data, keywords)

    def has_message_id(self, folder: str, message_id: str) -> bool:
        self.selected = None
        target = self.server.folders.get(folder)
        return target is not None and any(_fp(d).message_id == message_id for d, _ in target.messages.values())

    def wait_for_change(self, timeout: float, should_stop: Callable[[], bool]) -> bool:
        return False


_DATE = datetime(2026, 1, 1, tzinfo=UTC)


def _fp(data: bytes) -> Fingerprint:
    """Message-ID, size, and as INTERNALDATE the Date header (a server's arrival time), else a fixed date."""
    headers = BytesHeaderParser().parsebytes(data)
    date = parsedate_to_datetime(str(headers["Date"])) if headers.get("Date") else _DATE
    return Fingerprint(str(headers.get("Message-ID", "")).strip(), len(data), date)


class SubjectScorer:
    """Scores from the subject: 'article' and 'favour' mark the labels."""

    def score(self, messages: Sequence[ParsedMessage]) -> list[Scores]:
        out = []
        for m in messages:
            if "explode" in m.subject:
                raise ValueError("cannot score")
            subject = m.subject.lower()
            out.append(
                Scores(
                    {
                        "article_share": 0.99 if "article" in subject else 0.01,
                        "favour_request": 0.99 if "favour" in subject else 0.01,
                    }
                )
            )
        return out


def mail(n: int, subject: str) -> bytes:
    return (
        f"From: s{n}@example.org\r\nTo: owner@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <m{n}@example.org>\r\n\r\nBody number {n}.\r\n"
    ).encode()


def config(action: str = "move", batch_size: int = 3) -> Config:
    return parse_config(
        {
            "accounts": [
                {"name": "home", "host": "127.0.0.1", "security": "plain", "username": "u", "password_env": "X"}
            ],
            "action": action,
            "batch_size": batch_size,
        }
    )


def runner(
    server: Server, state: State, *, action: str = "move", crash_at: str | None = None, batch_size: int = 3
) -> AccountRunner:
    cfg = config(action, batch_size)
    r = AccountRunner(
        cfg,
        cfg.accounts[0],
        FakeMailbox(server, crash_at),
        SubjectScorer(),
        {"article_share": 0.8, "favour_request": 0.8},
        state,
    )
    r.prepare()
    return r


def seed(server: Server, count: int = 7) -> list[bytes]:
    subjects = ["an article", "hello", "a favour", "lunch", "article and favour", "report", "article"]
    datas = [mail(i, subjects[i % len(subjects)]) for i in range(count)]
    for d in datas:
        server.folders["INBOX"].add(d)
    return datas


def folder_ids(server: Server, name: str) -> list[str]:
    return sorted(_fp(d).message_id for d, _ in server.folders[name].messages.values())


def test_pass_moves_labelled_mail_and_keeps_the_rest() -> None:
    server = Server()
    seed(server)
    report = runner(server, State.in_memory()).pass_once()
    assert folder_ids(server, ARTICLES) == ["<m0@example.org>", "<m6@example.org>"]
    assert folder_ids(server, REQUESTS) == ["<m2@example.org>", "<m4@example.org>"]
    assert folder_ids(server, "INBOX") == ["<m1@example.org>", "<m3@example.org>", "<m5@example.org>"]
    assert report.count("move") == 4 and report.count("keep") == 3


def test_second_pass_changes_nothing() -> None:
    server, state = Server(), State.in_memory()
    seed(server)
    runner(server, state).pass_once()
    before = {name: folder_ids(server, name) for name in server.folders}
    second = runner(server, state)
    assert second.pass_once().outcomes == []
    assert {name: folder_ids(server, name) for name in server.folders} == before
    assert "FETCH" not in second.mailbox.commands  # type: ignore[attr-defined]


def test_new_mail_after_a_pass_is_handled() -> None:
    server, state = Server(), State.in_memory()
    seed(server, 3)
    runner(server, state).pass_once()
    server.folders["INBOX"].add(mail(50, "new article"))
    report = runner(server, state).pass_once()
    assert [o.uid for o in report.outcomes] == [4]
    assert "<m50@example.org>" in folder_ids(server, ARTICLES)


def test_dry_run_touches_nothing() -> None:
    server = Server()
    seed(server)
    report = runner(server, State.in_memory(), action="dry-run").pass_once()
    assert report.count("would-move") == 4
    assert len(server.folders["INBOX"].messages) == 7
    assert all(len(f.messages) == 0 for name, f in server.folders.items() if name != "INBOX")


def test_flag_mode_adds_keywords_in_place() -> None:
    server = Server()
    seed(server, 3)
    runner(server, State.in_memory(), action="flag").pass_once()
    flags = {uid: flags for uid, (_, flags) in server.folders["INBOX"].messages.items()}
    assert flags == {1: {"$PloyArticle"}, 2: set(), 3: {"$PloyFavour"}}


@pytest.mark.parametrize(
    ("move", "crash_at"),
    [
        (True, "after-copy"),
        (True, "after-move"),
        (False, "copy-unanswered"),
        (False, "after-copy"),
        (False, "after-store"),
        (False, "after-move"),
    ],
)
def test_crash_mid_move_then_restart_handles_each_message_once(move: bool, crash_at: str) -> None:
    server, state = Server(move=move), State.in_memory()
    datas = seed(server)
    with pytest.raises(Crash):
        runner(server, state, crash_at=crash_at).pass_once()
    runner(server, state).pass_once()
    assert server.all_bodies() == sorted(datas)
    assert folder_ids(server, ARTICLES) == ["<m0@example.org>", "<m6@example.org>"]
    assert folder_ids(server, REQUESTS) == ["<m2@example.org>", "<m4@example.org>"]
    assert runner(server, state).pass_once().outcomes == []


def test_a_copy_in_a_target_recreated_since_the_copy_is_not_taken_for_the_move_s_own() -> None:
    """Under another UIDVALIDITY no UID places a copy before or after the COPY: the move is redone."""
    server, state = Server(move=False), State.in_memory()
    data = mail(1, "an article")
    server.folders["INBOX"].add(data)
    server.folders[ARTICLES] = Folder()
    with pytest.raises(Crash):
        runner(server, state, crash_at="copy-unanswered").pass_once()
    recreated = Folder(uidvalidity=2)
    for kept, flags in server.folders[ARTICLES].messages.values():
        recreated.add(kept, flags)
    server.folders[ARTICLES] = recreated
    assert runner(server, state).pass_once().recovered == 1
    assert server.folders["INBOX"].messages == {}
    assert [d for d, _ in server.folders[ARTICLES].messages.values()] == [data, data]


def test_crash_after_flagging_then_restart_records_once() -> None:
    server, state = Server(), State.in_memory()
    seed(server, 3)
    with pytest.raises(Crash):
        runner(server, state, action="flag", crash_at="after-flag").pass_once()
    report = runner(server, state, action="flag").pass_once()
    assert report.recovered >= 1
    flagged = [d for d in state.decisions() if d["action"] == "flag"]
    assert sorted(d["uid"] for d in flagged) == [1, 3]


def test_uidvalidity_change_judges_only_unseen_mail() -> None:
    server, state = Server(), State.in_memory()
    seed(server, 4)
    runner(server, state).pass_once()
    inbox = server.folders["INBOX"]
    kept = [data for data, _ in inbox.messages.values()]
    fresh = Folder(uidvalidity=99)
    fresh.add(mail(70, "another article"))
    for data in kept:
        fresh.add(data)
    server.folders["INBOX"] = fresh
    report = runner(server, state).pass_once()
    assert report.carried_over == len(kept)
    assert [o.uid for o in report.outcomes] == [1]
    assert folder_ids(server, "INBOX") == sorted(_fp(d).message_id for d in kept)
    assert "<m70@example.org>" in folder_ids(server, ARTICLES)


def test_twins_judged_before_a_uidvalidity_change_are_both_carried_over() -> None:
    server, state = Server(), State.in_memory()
    twin = mail(1, "hello")
    server.folders["INBOX"].add(twin)
    server.folders["INBOX"].add(twin)
    assert [o.action for o in runner(server, state).pass_once().outcomes] == ["keep", "keep"]
    fresh = Folder(uidvalidity=99)
    fresh.add(twin)
    fresh.add(twin)
    server.folders["INBOX"] = fresh
    report = runner(server, state).pass_once()
    assert (report.carried_over, report.outcomes) == (2, [])


def test_message_returned_by_the_owner_stays() -> None:
    server, state = Server(), State.in_memory()
    seed(server, 1)
    runner(server, state).pass_once()
    ((data, _),) = server.folders[ARTICLES].messages.values()
    server.folders[ARTICLES].messages.clear()
    server.folders["INBOX"].add(data)
    report = runner(server, state).pass_once()
    assert [o.action for o in report.outcomes] == ["keep"]
    assert "returned" in report.outcomes[0].reasons[0]
    assert len(server.folders["INBOX"].messages) == 1


def test_a_target_folder_that_will_not_open_does_not_stop_the_pass() -> None:
    server, state = Server(), State.in_memory()
    seed(server, 1)
    runner(server, state).pass_once()
    ((data, _),) = server.folders[ARTICLES].messages.values()
    server.folders["INBOX"].add(data)  # brought back, while the target cannot be examined

    class Closed(FakeMailbox):
        def contains(self, folder: str, *args: object, **kwargs: object) -> bool:
            raise MailboxError(f"EXAMINE {folder} => NO [NOPERM]")

    cfg = config()
    r = AccountRunner(
        cfg, cfg.accounts[0], Closed(server), SubjectScorer(), {"article_share": 0.8, "favour_request": 0.8}, state
    )
    r.prepare()
    assert [o.action for o in r.pass_once().outcomes] == ["keep"]


def _runner_with(mailbox: FakeMailbox, state: State) -> AccountRunner:
    cfg = config()
    r = AccountRunner(
        cfg, cfg.accounts[0], mailbox, SubjectScorer(), {"article_share": 0.8, "favour_request": 0.8}, state
    )
    r.prepare()
    return r


def test_an_interrupted_move_whose_message_the_server_will_not_read_is_given_up_in_the_end() -> None:
    server, state = Server(move=False), State.in_memory()
    seed(server, 1)
    with pytest.raises(Crash):
        runner(server, state, crash_at="after-copy").pass_once()  # copied, and noted so; the original stays

    class Refusing(FakeMailbox):
        def fingerprints(self, uids: Sequence[int]) -> dict[int, Fingerprint]:
            if 1 in uids:
                raise MailboxError("FETCH => NO Some messages could not be FETCHed")
            return super().fingerprints(uids)

    for _ in range(FETCH_TRIES - 1):
        _runner_with(Refusing(server), state).pass_once()
        assert state.intents("home", "INBOX")  # still waiting, each refusal counted
    _runner_with(Refusing(server), state).pass_once()  # the last try: given up at once
    assert state.intents("home", "INBOX") == []
    assert [d["action"] for d in state.decisions()] == ["move"]  # its copy is in the target: a move, kept beside
    assert folder_ids(server, "INBOX") == folder_ids(server, ARTICLES) == ["<m0@example.org>"]


def test_a_waiting_move_is_charged_little_for_connections_lost_while_moving() -> None:
    """A lost connection while moving costs a unit: a flaky network must not give a readable message up soon,
    but a move that kills the server process every time must not stop the account for good either."""
    server, state = Server(), State.in_memory()
    seed(server, 1)

    class Dropping(FakeMailbox):
        def move(self, *args: object, **kwargs: object) -> None:
            raise ConnectionLost("socket error: reset")

    for _ in range(NETWORK_TRIES):  # the first in the scan, the others in recovery
        with pytest.raises(ConnectionLost):
            _runner_with(Dropping(server), state).pass_once()
    assert state.intents("home", "INBOX")  # still waiting
    _runner_with(FakeMailbox(server), state).pass_once()
    assert folder_ids(server, ARTICLES) == ["<m0@example.org>"]


def test_unreadable_messages_are_skipped_and_others_go_on() -> None:
    server = Server()
    inbox = server.folders["INBOX"]
    inbox.add(b"")
    inbox.add(mail(1, "explode"))
    inbox.add(mail(2, "an article"))
    report = runner(server, State.in_memory()).pass_once()
    assert [o.action for o in report.outcomes] == ["skip", "skip", "move"]
    assert len(inbox.messages) == 2


def test_connection_lost_mid_pass_resumes_without_repeats() -> None:
    server, state = Server(), State.in_memory()
    datas = seed(server, 7)

    class Flaky(FakeMailbox):
        calls = 0

        def fetch(self, uids: Sequence[int], max_bytes: int) -> list[RawMessage]:
            Flaky.calls += 1
            if Flaky.calls == 2:
                raise ConnectionLost("reset by peer")
            return super().fetch(uids, max_bytes)

    cfg = config(batch_size=3)
    r = AccountRunner(
        cfg, cfg.accounts[0], Flaky(server), SubjectScorer(), {"article_share": 0.8, "favour_request": 0.8}, state
    )
    r.prepare()
    with pytest.raises(ConnectionLost):
        r.pass_once()
    r.pass_once()
    assert server.all_bodies() == sorted(datas)
    assert sorted(d["uid"] for d in state.decisions()) == list(range(1, 8))


def test_backoff_grows_to_its_maximum_with_jitter() -> None:
    import random

    b = Backoff(maximum=8, rng=random.Random(1))
    delays = [b.next() for _ in range(6)]
    assert all(0.5 * cap <= d <= cap for d, cap in zip(delays, [1, 2, 4, 8, 8, 8], strict=True))
    b.reset()
    assert b.next() <= 1


def test_an_error_after_login_backs_off_more_each_time_until_a_pass_succeeds() -> None:
    import random
    import threading

    server, state = Server(), State.in_memory()
    r = runner(server, state)
    waits: list[float] = []
    stop = threading.Event()
    passes = iter([MailboxError("SELECT => [NONEXISTENT] no such folder")] * 4 + [None])

    def pass_once(should_stop: Callable[[], bool] = lambda: False) -> None:
        failure = next(passes, None)
        if failure is not None:
            raise failure
        stop.set()

    class Waits(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout or 0.0)
            return False

    r.pass_once = pass_once  # type: ignore[method-assign,assignment]
    stop.wait = Waits().wait  # type: ignore[method-assign]
    r.run_forever(stop, rng=random.Random(0))
    assert len(waits) == 4
    assert all(0.5 * cap <= w <= cap for w, cap in zip(waits, [1, 2, 4, 8], strict=True))


def _pass_through_failures(server: Server, state: State) -> list[str]:
    """Passes until one completes, each failed one playing a reconnection; the actions of UID 1."""
    for _ in range(30):
        try:
            report = runner(server, state).pass_once()
        except ConnectionLost:
            continue
        return [o.action for o in report.outcomes if o.uid == 1]
    raise AssertionError("no pass completed")


def test_a_message_the_network_keeps_failing_on_is_not_given_up() -> None:
    server, state = Server(), State.in_memory()
    seed(server, 3)
    server.fetch_failures = [ConnectionLost("socket error: EOF") for _ in range(1 + 2 * FETCH_TRIES)]
    assert _pass_through_failures(server, state) == ["move"]


def test_a_message_the_connection_always_drops_on_is_skipped_after_more_tries() -> None:
    """A server process that dies over one message looks like a lost connection: it must not stop every pass."""
    server, state = Server(), State.in_memory()
    seed(server, 3)
    server.fetch_failures = [ConnectionLost("socket error: EOF") for _ in range(1 + NETWORK_TRIES)]
    assert _pass_through_failures(server, state) == ["skip"]
    assert folder_ids(server, REQUESTS) == ["<m2@example.org>"]


def test_the_readable_messages_of_a_failed_batch_are_fetched_before_the_one_at_fault() -> None:
    server, state = Server(), State.in_memory()
    seed(server, 3)
    server.fetch_failures = [ConnectionLost("FETCH failed", by_server=True) for _ in range(3)]
    for _ in range(2):  # the batch fails; then UID 1, tried first of three untried
        with pytest.raises(ConnectionLost):
            runner(server, state).pass_once()
    assert folder_ids(server, REQUESTS) == []
    with pytest.raises(ConnectionLost):  # UIDs 2 and 3 are judged and acted on before UID 1 fails again
        runner(server, state).pass_once()
    assert folder_ids(server, REQUESTS) == ["<m2@example.org>"]


def test_a_message_the_server_keeps_failing_on_is_skipped_after_its_tries() -> None:
    server, state = Server(), State.in_memory()
    seed(server, 3)
    server.fetch_failures = [ConnectionLost("FETCH failed", by_server=True) for _ in range(1 + FETCH_TRIES)]
    assert _pass_through_failures(server, state) == ["skip"]
    assert folder_ids(server, "INBOX") == ["<m0@example.org>", "<m1@example.org>"]  # UID 1 is left where it is
    assert folder_ids(server, REQUESTS) == ["<m2@example.org>"]  # and the others went on


def test_arrival_times_compare_as_instants_whatever_offset_they_were_written_with() -> None:
    from filter.runner import _utc_text

    assert _utc_text("2026-03-02T11:00:00+01:00") == _utc_text("2026-03-02T10:00:00+00:00")
    assert _utc_text("2026-03-02T10:00:00") == "2026-03-02T10:00:00+00:00"
    assert _utc_text("not a time") == "not a time"
