"""The runner with the sender ledger: sent mail read, history kept, policy applied, digest appended.

The in-memory mail store of test_runner.py stands in for the server; the
same scenario runs against a real Dovecot in tests/integration/test_policy_scenario.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email import message_from_bytes
from typing import Any

from test_runner import ARTICLES, REQUESTS, FakeMailbox, Server, SubjectScorer, folder_ids

from filter.config import Config, parse_config
from filter.errors import MailboxError
from filter.mailbox import header_date, header_fields
from filter.runner import AccountRunner, last_weekday_start, sent_time
from filter.state import State

DAY = 86400.0
NOW = datetime(2026, 3, 12, 9, 0, tzinfo=UTC).timestamp()  # a Thursday
THRESHOLDS = {"article_share": 0.8, "favour_request": 0.8}


def dated(n: int, sender: str, subject: str, when: float, to: str = "owner@example.org") -> bytes:
    date = datetime.fromtimestamp(when, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    return (
        f"From: {sender}\r\nTo: {to}\r\nDate: {date}\r\nSubject: {subject}\r\n"
        f"Message-ID: <p{n}@example.org>\r\n\r\nBody {n}.\r\n"
    ).encode()


def policy_config(**top: Any) -> Config:
    account: dict[str, Any] = {
        "name": "home",
        "host": "127.0.0.1",
        "security": "plain",
        "username": "owner@example.org",
        "password_env": "X",
        "sent": "Sent",
    }
    account.update(top.pop("account", {}))
    return parse_config({"accounts": [account], **top})


def make_runner(server: Server, state: State, cfg: Config, scorer: Any = None, clock: float = NOW) -> AccountRunner:
    r = AccountRunner(
        cfg, cfg.accounts[0], FakeMailbox(server), scorer or SubjectScorer(), THRESHOLDS, state, clock=lambda: clock
    )
    r.prepare()
    return r


def scenario_server() -> Server:
    server = Server()
    server.folders["Sent"] = type(server.folders["INBOX"])()
    server.folders["Sent"].add(
        dated(90, "owner@example.org", "dinner?", NOW - 20 * DAY, to="Friend <friend@example.org>")
    )
    inbox = server.folders["INBOX"]
    inbox.add(dated(1, "friend@example.org", "an article for you", NOW - 4 * DAY))
    for day, n in ((3, 2), (2, 3), (1, 4)):
        inbox.add(dated(n, "Stranger <stranger@growth.example>", f"article {n}", NOW - day * DAY))
    inbox.add(dated(5, "stranger@growth.example", "a favour: coffee, advice, an introduction", NOW - 0.5 * DAY))
    inbox.add(dated(6, "colleague@allowed.example", "an article", NOW - 0.5 * DAY))
    inbox.add(dated(7, "spammy@blocked.example", "hello", NOW - 0.5 * DAY))
    return server


def keywords_of(server: Server, folder: str, message_id: str) -> set[str]:
    for data, flags in server.folders[folder].messages.values():
        if f"Message-ID: {message_id}".encode() in data:
            return flags
    raise AssertionError(f"{message_id} not in {folder}")


def test_the_issue_scenario_friend_stays_stranger_moved_ask_marked() -> None:
    server, state = scenario_server(), State.in_memory()
    cfg = policy_config(allow=["*@allowed.example"], block=["blocked.example"])
    make_runner(server, state, cfg).pass_once()
    assert folder_ids(server, "INBOX") == ["<p1@example.org>", "<p6@example.org>"]
    assert folder_ids(server, ARTICLES) == ["<p2@example.org>", "<p3@example.org>", "<p4@example.org>"]
    # Blocked and labelled neither: the folder of the higher score, the ask's on a tie.
    assert folder_ids(server, REQUESTS) == ["<p5@example.org>", "<p7@example.org>"]
    assert keywords_of(server, REQUESTS, "<p5@example.org>") >= {"$PloyFavour", "$PloyPattern"}
    assert keywords_of(server, ARTICLES, "<p2@example.org>") == {"$PloyArticle"}
    rows = {row.address: row for row in state.senders()}
    assert (rows["stranger@growth.example"].shares, rows["stranger@growth.example"].asks) == (3, 1)
    assert rows["friend@example.org"].sent_count == 1


def test_reasons_explain_each_rule() -> None:
    server, state = scenario_server(), State.in_memory()
    report = make_runner(server, state, policy_config(allow=["*@allowed.example"])).pass_once()
    reasons = {o.message_id: " | ".join(o.reasons) for o in report.outcomes}
    assert "correspondent" in reasons["<p1@example.org>"]
    assert "give-then-ask: 3 article shares" in reasons["<p5@example.org>"]
    assert "allow list" in reasons["<p6@example.org>"]
    assert "drip: 3 shares" in reasons["<p5@example.org>"]


def test_correspondents_stricter_raises_the_threshold_instead() -> None:
    server, state = scenario_server(), State.in_memory()
    make_runner(server, state, policy_config(correspondents={"action": "stricter", "raise": 0.1})).pass_once()
    assert "<p1@example.org>" in folder_ids(server, ARTICLES)  # 0.99 still reaches 0.9


def test_a_drip_lowers_the_threshold_for_that_sender_only() -> None:
    server, state = Server(), State.in_memory()
    inbox = server.folders["INBOX"]
    for n in range(3):
        inbox.add(dated(n, "drip@example.net", "article", NOW - (3 - n) * DAY))
    inbox.add(dated(10, "drip@example.net", "weak", NOW))
    inbox.add(dated(11, "other@example.net", "weak", NOW))

    class Weak(SubjectScorer):
        def score(self, messages: Any) -> Any:
            out = super().score(messages)
            for m, s in zip(messages, out, strict=True):
                if m.subject == "weak":
                    s.values["article_share"] = 0.7  # below 0.8, above 0.8 - 0.15
            return out

    make_runner(server, state, policy_config(), scorer=Weak()).pass_once()
    assert "<p10@example.org>" in folder_ids(server, ARTICLES)
    assert "<p11@example.org>" in folder_ids(server, "INBOX")


def test_review_band_moves_to_the_review_folder_or_flags_in_place() -> None:
    class Near(SubjectScorer):
        def score(self, messages: Any) -> Any:
            out = super().score(messages)
            for s in out:
                s.values["favour_request"] = 0.75
            return out

    server, state = Server(), State.in_memory()
    server.folders["INBOX"].add(dated(1, "a@example.net", "hi", NOW))
    make_runner(
        server, state, policy_config(review_band=0.1, account={"folders": {"review": "Review"}}), scorer=Near()
    ).pass_once()
    assert folder_ids(server, "Review") == ["<p1@example.org>"]
    assert keywords_of(server, "Review", "<p1@example.org>") == {"$PloyReview"}

    server, state = Server(), State.in_memory()
    server.folders["INBOX"].add(dated(1, "a@example.net", "hi", NOW))
    make_runner(server, state, policy_config(review_band=0.1), scorer=Near()).pass_once()
    assert keywords_of(server, "INBOX", "<p1@example.org>") == {"$PloyReview"}


def test_sent_mail_is_followed_between_passes() -> None:
    server, state = Server(), State.in_memory()
    server.folders["Sent"] = type(server.folders["INBOX"])()
    cfg = policy_config()
    server.folders["INBOX"].add(dated(1, "new@example.net", "article", NOW - DAY))
    make_runner(server, state, cfg).pass_once()
    assert "<p1@example.org>" in folder_ids(server, ARTICLES)
    server.folders["Sent"].add(dated(80, "owner@example.org", "thanks", NOW - 0.5 * DAY, to="new@example.net"))
    server.folders["INBOX"].add(dated(2, "new@example.net", "article", NOW))
    make_runner(server, state, cfg).pass_once()
    assert "<p2@example.org>" in folder_ids(server, "INBOX")
    assert state.sent_checkpoint("home", "Sent") == (1, 2)


def test_a_missing_sent_folder_is_logged_and_the_pass_goes_on(caplog: Any) -> None:
    server, state = Server(), State.in_memory()
    server.folders["INBOX"].add(dated(1, "x@example.net", "article", NOW))
    make_runner(server, state, policy_config()).pass_once()
    assert "<p1@example.org>" in folder_ids(server, ARTICLES)
    assert "cannot read the sent folder" in caplog.text


def test_reconfigure_applies_from_the_next_pass() -> None:
    server, state = Server(), State.in_memory()
    server.folders["Sent"] = type(server.folders["INBOX"])()
    cfg = policy_config()
    r = make_runner(server, state, cfg)
    r.reconfigure(cfg, cfg.accounts[0], {"article_share": 0.999, "favour_request": 0.8})
    server.folders["INBOX"].add(dated(1, "x@example.net", "article", NOW))
    r.pass_once()
    assert folder_ids(server, "INBOX") == ["<p1@example.org>"]


def test_the_digest_is_appended_once_on_its_weekday() -> None:
    server, state = Server(), State.in_memory()
    server.folders["Sent"] = type(server.folders["INBOX"])()
    cfg = policy_config(digest={"folder": "Digest", "weekday": "monday"})
    make_runner(server, state, cfg, clock=NOW).pass_once()  # Thursday: the week starts counting
    assert "Digest" not in server.folders
    for n in range(3):
        server.folders["INBOX"].add(dated(n, "stranger@growth.example", "article", NOW + n * DAY))
    make_runner(server, state, cfg, clock=NOW + DAY).pass_once()  # Friday: not yet
    assert "Digest" not in server.folders
    monday = NOW + 4 * DAY
    make_runner(server, state, cfg, clock=monday).pass_once()
    make_runner(server, state, cfg, clock=monday + 3600).pass_once()
    digests = list(server.folders["Digest"].messages.values())
    assert len(digests) == 1
    digest = message_from_bytes(digests[0][0])
    assert "3 articles" in str(digest["Subject"])
    assert "stranger@growth.example" in digest.get_payload(decode=True).decode()


def message_time(data: bytes, arrived: float | None, fallback: float) -> float:
    """The runner's time for a message: ``sent_time`` of the Date field read from its header."""
    return sent_time(header_date(header_fields(data)), arrived, fallback)


def test_message_time_prefers_a_sane_date_header() -> None:
    data = dated(1, "a@example.org", "x", NOW - DAY)
    assert message_time(data, NOW, 0.0) == NOW - DAY
    assert message_time(data, NOW - 3 * DAY, 0.0) == NOW - 3 * DAY  # dated after arrival: a wrong clock
    assert message_time(b"Subject: no date\r\n\r\n", None, 42.0) == 42.0
    assert message_time(b"Date: garbage\r\n\r\n", NOW, 0.0) == NOW


def test_last_weekday_start_is_local_midnight_of_that_day() -> None:
    start = last_weekday_start(NOW, 3)  # NOW is a Thursday
    assert datetime.fromtimestamp(start).weekday() == 3
    assert 0 <= NOW - start < DAY
    assert NOW - last_weekday_start(NOW, 4) > 5 * DAY


def test_a_sent_folder_the_server_will_not_read_is_logged_and_the_pass_goes_on(caplog: Any) -> None:
    server, state = Server(), State.in_memory()
    server.folders["Sent"] = type(server.folders["INBOX"])()
    server.folders["INBOX"].add(dated(1, "x@example.net", "article", NOW))
    runner = make_runner(server, state, policy_config())

    def refuse(folder: str, first_uid: int, limit: int = 5000) -> Any:
        raise MailboxError("SEARCH => got more than 1000000 bytes")

    runner.mailbox.read_sent = refuse  # type: ignore[method-assign]
    runner.pass_once()
    assert "<p1@example.org>" in folder_ids(server, ARTICLES)
    assert "cannot read the sent folder" in caplog.text


def test_a_late_digest_does_not_take_the_next_one_s_place() -> None:
    server, state = Server(), State.in_memory()
    server.folders["Sent"] = type(server.folders["INBOX"])()
    cfg = policy_config(digest={"folder": "Digest", "weekday": "friday"})
    make_runner(server, state, cfg, clock=NOW).pass_once()  # Thursday: the week starts counting
    make_runner(server, state, cfg, clock=NOW + 4 * DAY).pass_once()  # Monday: Friday's digest, late
    make_runner(server, state, cfg, clock=NOW + 8 * DAY).pass_once()  # the next Friday: its own digest
    assert len(server.folders["Digest"].messages) == 2


def test_a_digest_the_server_refuses_never_stops_the_filtering(caplog: Any) -> None:
    server, state = Server(), State.in_memory()
    server.folders["Sent"] = type(server.folders["INBOX"])()
    cfg = policy_config(digest={"folder": "Digest", "weekday": "monday"})
    make_runner(server, state, cfg, clock=NOW).pass_once()
    server.folders["INBOX"].add(dated(1, "x@example.net", "article", NOW + 4 * DAY))
    runner = make_runner(server, state, cfg, clock=NOW + 4 * DAY)

    def over_quota(folder: str, data: bytes, keywords: Sequence[str] = ()) -> None:
        raise MailboxError("APPEND => [OVERQUOTA] Quota exceeded")

    runner.mailbox.append = over_quota  # type: ignore[method-assign]
    runner.pass_once()
    assert "<p1@example.org>" in folder_ids(server, ARTICLES)
    assert "weekly digest could not be added" in caplog.text
    make_runner(server, state, cfg, clock=NOW + 4 * DAY + 60).pass_once()  # tried again, and appended
    assert len(server.folders["Digest"].messages) == 1


def test_flagged_mail_is_counted_in_the_digest() -> None:
    server, state = Server(), State.in_memory()
    server.folders["Sent"] = type(server.folders["INBOX"])()
    cfg = policy_config(action="flag", digest={"folder": "Digest", "weekday": "monday"})
    make_runner(server, state, cfg, clock=NOW).pass_once()
    server.folders["INBOX"].add(dated(1, "x@example.net", "article", NOW + DAY))
    make_runner(server, state, cfg, clock=NOW + DAY).pass_once()
    make_runner(server, state, cfg, clock=NOW + 4 * DAY).pass_once()
    ((data, _),) = server.folders["Digest"].messages.values()
    assert " ".join(str(message_from_bytes(data)["Subject"]).split()).endswith("1 article, 0 requests flagged")


def test_a_date_before_arrival_is_believed_for_mail_moved_or_imported_later() -> None:
    data = dated(1, "a@example.org", "x", NOW - 300 * DAY)
    assert message_time(data, NOW, 0.0) == NOW - 300 * DAY


def test_mail_of_the_same_second_counts_towards_the_drip_and_the_pattern() -> None:
    server, state = Server(), State.in_memory()
    server.folders["Sent"] = type(server.folders["INBOX"])()
    for n in range(3):
        server.folders["INBOX"].add(dated(n, "s@growth.example", "article", NOW - DAY))
    server.folders["INBOX"].add(dated(9, "s@growth.example", "a favour", NOW - DAY))
    report = make_runner(server, state, policy_config()).pass_once()
    ask = report.outcomes[-1]
    assert any("give-then-ask" in reason for reason in ask.reasons)


def test_later_mail_never_counts_towards_an_earlier_message_s_pattern() -> None:
    state = State.in_memory()
    work = Server()
    work.folders["Sent"] = type(work.folders["INBOX"])()
    for n, days in ((1, 2), (2, 1)):
        work.folders["INBOX"].add(dated(n, "s@growth.example", "article", NOW - days * DAY))
    make_runner(work, state, policy_config(account={"name": "work"})).pass_once()
    home = Server()
    home.folders["Sent"] = type(home.folders["INBOX"])()
    home.folders["INBOX"].add(dated(3, "s@growth.example", "favour", NOW - 10 * DAY))
    report = make_runner(home, state, policy_config(), clock=NOW - 10 * DAY).pass_once()
    (ask,) = report.outcomes
    assert not any("give-then-ask" in reason for reason in ask.reasons)


def test_one_message_in_two_accounts_counts_once_in_the_ledger() -> None:
    state = State.in_memory()
    for account, extra in (("home", b""), ("work", b"Delivered-To: work@example.org\r\n")):
        server = Server()
        server.folders["Sent"] = type(server.folders["INBOX"])()
        server.folders["INBOX"].add(extra + dated(1, "s@growth.example", "article", NOW))
        make_runner(server, state, policy_config(account={"name": account})).pass_once()
    assert state.history("s@growth.example").shares == (NOW,)


def test_a_copy_of_one_message_in_the_same_batch_does_not_count_towards_itself() -> None:
    server, state = Server(), State.in_memory()
    server.folders["Sent"] = type(server.folders["INBOX"])()
    for n in range(2):
        server.folders["INBOX"].add(dated(n, "s@growth.example", "article", NOW - (5 - n) * DAY))
    make_runner(server, state, policy_config()).pass_once()
    copy = dated(7, "s@growth.example", "article", NOW)
    server.folders["INBOX"].add(copy)
    server.folders["INBOX"].add(b"X-Via: list\r\n" + copy)  # the same message twice: direct and via a list
    report = make_runner(server, state, policy_config(drip={"shares": 3, "days": 7})).pass_once()
    assert not any("drip" in reason for outcome in report.outcomes for reason in outcome.reasons)


def test_a_sender_who_reuses_one_message_id_is_counted_message_by_message() -> None:
    server, state = Server(), State.in_memory()
    server.folders["Sent"] = type(server.folders["INBOX"])()
    for n, subject in enumerate(["article", "article", "article", "a favour"]):
        data = dated(n, "s@growth.example", subject, NOW - DAY + 60 * n).replace(f"<p{n}@".encode(), b"<same@")
        server.folders["INBOX"].add(data)
    report = make_runner(server, state, policy_config()).pass_once()
    assert any("give-then-ask" in reason for reason in report.outcomes[-1].reasons)
    assert state.senders()[0].shares == 3 and state.senders()[0].asks == 1


def test_two_copies_in_one_batch_count_once_towards_a_later_ask() -> None:
    server, state = Server(), State.in_memory()
    server.folders["Sent"] = type(server.folders["INBOX"])()
    share = dated(1, "s@growth.example", "article", NOW - DAY)
    server.folders["INBOX"].add(share)
    server.folders["INBOX"].add(b"X-Via: list\r\n" + share)
    server.folders["INBOX"].add(dated(2, "s@growth.example", "a favour", NOW))
    report = make_runner(server, state, policy_config()).pass_once()
    assert not any("give-then-ask" in reason for reason in report.outcomes[-1].reasons)
