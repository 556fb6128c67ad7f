"""The command end to end against a real Dovecot: once, run, crashes, restarts.

Each test starts its own Dovecot on 127.0.0.1 and runs ``ployfilter`` as a
separate process, as an owner would, then checks the server's folders with
an independent IMAP client. Waits are bounded polls, never timing claims;
the benchmark script measures speed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml

from filter.dovecot import (
    CAPABILITIES_NO_MOVE,
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    LocalDovecot,
    unavailable_reason,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or ""),
]

REPO = Path(__file__).resolve().parents[2]
ARTICLES, REQUESTS = "Networking/Articles", "Networking/Requests"
FOLDERS = ["INBOX", ARTICLES, REQUESTS]
# Thresholds that send every readable message to the article folder, whatever the model says.
ALL_ARTICLES = {"article_share": 0.0, "favour_request": 1.0}


def sample_mail() -> list[bytes]:
    return [p.read_bytes() for p in sorted((REPO / "examples" / "demo-mail").glob("*.eml"))]


def malformed_mail() -> list[bytes]:
    big = EmailMessage()
    big["From"] = "archive@example.net"
    big["Subject"] = "ten megabytes"
    big["Message-ID"] = "<big@example.net>"
    big.set_content("see attachment")
    big.add_attachment(os.urandom(10 * 1024 * 1024), maintype="application", subtype="octet-stream")
    return [p.read_bytes() for p in sorted((REPO / "examples" / "malformed").glob("*.eml"))] + [big.as_bytes()]


def numbered(n: int, subject: str = "note") -> bytes:
    return (
        f"From: sender{n}@example.org\r\nTo: owner@example.org\r\nSubject: {subject} {n}\r\n"
        f"Message-ID: <n{n}@example.org>\r\n\r\nMessage number {n}.\r\n"
    ).encode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalDovecot]:
    with LocalDovecot(tmp_path / "server") as s:
        yield s


def write_config(tmp_path: Path, server: LocalDovecot, **extra: Any) -> Path:
    data: dict[str, Any] = {
        "accounts": [
            {
                "name": "home",
                "host": server.host,
                "port": server.port,
                "security": "plain",
                "username": DEFAULT_USER,
                "password_env": "PLOY_TEST_PASSWORD",
            }
        ],
        "state_path": str(tmp_path / "state.sqlite3"),
        "poll_interval": 2,
        "reconnect_max": 2,
    }
    data.update(extra)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def env() -> dict[str, str]:
    return {**os.environ, "PLOY_TEST_PASSWORD": DEFAULT_PASSWORD}


def ployfilter(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "filter", *args],
        capture_output=True,
        text=True,
        env=env(),
        timeout=timeout,
        check=False,
    )


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "filter", "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=env(),
    )


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def norm(data: bytes) -> bytes:
    """A message as IMAP serves it: Dovecot stores and returns CRLF line ends."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def norms(datas: list[bytes]) -> list[bytes]:
    return sorted(norm(d) for d in datas)


def contents(server: LocalDovecot) -> dict[str, list[bytes]]:
    existing = set(server.folders(DEFAULT_USER))
    return {f: norms(server.messages(DEFAULT_USER, f)) if f in existing else [] for f in FOLDERS}


def all_messages(server: LocalDovecot) -> list[bytes]:
    return sorted(m for msgs in contents(server).values() for m in msgs)


def seed(server: LocalDovecot, datas: list[bytes]) -> None:
    """Put each message in the INBOX; an empty one (which APPEND refuses) is delivered as a file."""
    for data in datas:
        if data:
            server.append(DEFAULT_USER, "INBOX", data)
        else:
            server.deliver(DEFAULT_USER, data)


def test_once_moves_what_classify_flags_and_loses_nothing(server: LocalDovecot, tmp_path: Path) -> None:
    seed(server, sample_mail() + malformed_mail())
    stored = server.messages(DEFAULT_USER, "INBOX")  # as the server keeps them (it normalises line ends)
    files = []
    for i, data in enumerate(stored):
        path = tmp_path / f"m{i}.eml"
        path.write_bytes(data)
        files.append(path)
    config = write_config(tmp_path, server)
    result = ployfilter("once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    after = contents(server)
    assert all_messages(server) == norms(stored)
    classified = ployfilter("classify", "--json", "-c", str(config), *map(str, files))
    flagged = norms([stored[i] for i, line in enumerate(classified.stdout.splitlines()) if json.loads(line)["labels"]])
    assert sorted(after[ARTICLES] + after[REQUESTS]) == flagged
    assert flagged, "the sample mail should contain messages the shipped model flags"


def test_second_pass_changes_nothing(server: LocalDovecot, tmp_path: Path) -> None:
    seed(server, sample_mail())
    config = write_config(tmp_path, server)
    assert ployfilter("once", "-c", str(config)).returncode == 0
    before = contents(server)
    second = ployfilter("once", "-c", str(config))
    assert second.returncode == 0
    assert "0 new messages" in second.stdout
    assert contents(server) == before


def test_server_without_move_ends_with_the_same_assignment(tmp_path: Path) -> None:
    datas = sample_mail() + malformed_mail()
    results = []
    for name, caps in (("with-move", None), ("without-move", CAPABILITIES_NO_MOVE)):
        work = tmp_path / name
        work.mkdir()
        with LocalDovecot(work / "server", capabilities=caps) as s:
            seed(s, datas)
            stored = all_messages(s)
            assert ployfilter("once", "-c", str(write_config(work, s))).returncode == 0
            results.append(contents(s))
            assert all_messages(s) == stored
    assert results[0] == results[1]


def test_uidvalidity_change_skips_nothing_and_repeats_nothing(server: LocalDovecot, tmp_path: Path) -> None:
    seed(server, [numbered(i) for i in range(5)])
    config = write_config(tmp_path, server, thresholds=ALL_ARTICLES)
    assert ployfilter("once", "-c", str(config)).returncode == 0
    assert len(contents(server)[ARTICLES]) == 5
    # The owner moves two back; the server then rebuilds the folder with a new UIDVALIDITY.
    for data in contents(server)[ARTICLES][:2]:
        server.append(DEFAULT_USER, "INBOX", data)
    server.doveadm("expunge", "-u", DEFAULT_USER, "mailbox", ARTICLES, "uid", "1:2")
    server.set_uidvalidity(DEFAULT_USER, "INBOX", 4242)
    server.append(DEFAULT_USER, "INBOX", numbered(99))
    result = ployfilter("once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    after = contents(server)
    assert len(after["INBOX"]) == 2  # the owner's corrections stay
    assert norm(numbered(99)) in after[ARTICLES]
    assert len(all_messages(server)) == 6


def test_daemon_killed_mid_batch_handles_every_message_once(server: LocalDovecot, tmp_path: Path) -> None:
    datas = [numbered(i) for i in range(300)]
    seed(server, datas)
    config = write_config(tmp_path, server, thresholds=ALL_ARTICLES, batch_size=5)
    daemon = start_daemon(config, tmp_path / "first.log")
    try:
        wait_until(lambda: len(server.uids(DEFAULT_USER, "INBOX")) < 250, 60, "the first moves")
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
    assert len(server.uids(DEFAULT_USER, "INBOX")) > 0, "the kill came after the pass: nothing was tested"
    daemon = start_daemon(config, tmp_path / "second.log")
    try:
        wait_until(lambda: not server.uids(DEFAULT_USER, "INBOX"), 120, "the rest to move")
    finally:
        daemon.terminate()
        daemon.wait(30)
    assert contents(server)[ARTICLES] == norms(datas)


def test_daemon_moves_new_mail_announced_by_idle(server: LocalDovecot, tmp_path: Path) -> None:
    config = write_config(tmp_path, server, thresholds=ALL_ARTICLES, poll_interval=3600)
    daemon = start_daemon(config, tmp_path / "daemon.log")
    try:
        wait_until(lambda: ARTICLES in server.folders(DEFAULT_USER), 30, "the daemon to start")
        server.append(DEFAULT_USER, "INBOX", numbered(1))
        wait_until(lambda: len(contents(server)[ARTICLES]) == 1, 30, "the new message to move")
    finally:
        daemon.terminate()
        assert daemon.wait(15) == 0


def test_daemon_reconnects_after_the_server_restarts(server: LocalDovecot, tmp_path: Path) -> None:
    config = write_config(tmp_path, server, thresholds=ALL_ARTICLES)
    daemon = start_daemon(config, tmp_path / "daemon.log")
    try:
        wait_until(lambda: ARTICLES in server.folders(DEFAULT_USER), 30, "the daemon to start")
        server.stop()
        time.sleep(3)
        server.start()
        server.append(DEFAULT_USER, "INBOX", numbered(2))
        wait_until(lambda: len(contents(server)[ARTICLES]) == 1, 60, "the message after the restart")
        assert daemon.poll() is None
    finally:
        daemon.terminate()
        daemon.wait(15)
    log = (tmp_path / "daemon.log").read_text()
    assert "connection lost" in log or "reconnecting" in log


def test_sigterm_during_idle_stops_cleanly(server: LocalDovecot, tmp_path: Path) -> None:
    config = write_config(tmp_path, server, idle_renew=600)
    daemon = start_daemon(config, tmp_path / "daemon.log")
    wait_until(
        lambda: "uid=" in (tmp_path / "daemon.log").read_text() or ARTICLES in server.folders(DEFAULT_USER),
        30,
        "the daemon to start",
    )
    time.sleep(1)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(15) == 0
    assert "stopped" in (tmp_path / "daemon.log").read_text()


def test_check_config_reports_the_plan(server: LocalDovecot, tmp_path: Path) -> None:
    result = ployfilter("check-config", "-c", str(write_config(tmp_path, server)))
    assert result.returncode == 0, result.stderr
    assert "UID MOVE" in result.stdout
    assert "IDLE" in result.stdout
    assert "no folder is marked \\Sent" in result.stdout
    assert "give-then-ask after 2 shares" in result.stdout
    assert "fr mail is scored at its own point: article_share" in result.stdout


def test_wrong_password_exits_with_the_auth_code(server: LocalDovecot, tmp_path: Path) -> None:
    config = write_config(tmp_path, server)
    result = subprocess.run(
        [sys.executable, "-m", "filter", "once", "-c", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "PLOY_TEST_PASSWORD": "wrong"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 4, result.stderr


def test_unreachable_server_exits_with_the_connect_code(tmp_path: Path) -> None:
    with LocalDovecot(tmp_path / "server") as s:
        config = write_config(tmp_path, s)
    result = ployfilter("once", "-c", str(config))
    assert result.returncode == 5, result.stderr


def test_verbose_logs_carry_no_message_text(server: LocalDovecot, tmp_path: Path) -> None:
    secret = "zebra-quartz-7781"
    data = (
        f"From: a@example.org\r\nSubject: about {secret}\r\nMessage-ID: <s@example.org>\r\n\r\n"
        f"Have a look at https://example.org/{secret} - {secret}\r\n"
    ).encode()
    server.append(DEFAULT_USER, "INBOX", data)
    result = ployfilter("-v", "once", "-c", str(write_config(tmp_path, server)))
    assert result.returncode == 0, result.stderr
    assert "uid=1" in result.stderr
    assert secret not in result.stderr + result.stdout
    assert DEFAULT_PASSWORD not in result.stderr


def test_dry_run_touches_nothing_on_the_server(server: LocalDovecot, tmp_path: Path) -> None:
    seed(server, sample_mail())
    before = {f: server.messages(DEFAULT_USER, f) for f in server.folders(DEFAULT_USER)}

    def flags() -> list[set[str]]:  # the \Recent flag belongs to whichever session looks first
        return [set(f) - {"\\Recent"} for f in server.flags(DEFAULT_USER, "INBOX")]

    flags_before = flags()
    result = ployfilter("once", "-c", str(write_config(tmp_path, server, action="dry-run")))
    assert result.returncode == 0, result.stderr
    assert "would move" in result.stdout
    assert {f: server.messages(DEFAULT_USER, f) for f in server.folders(DEFAULT_USER)} == before
    assert flags() == flags_before
    assert not (tmp_path / "state.sqlite3").exists()


@pytest.mark.parametrize("action", ["move", "dry-run"])
def test_once_gets_past_a_message_the_server_cannot_read_in_one_run(
    server: LocalDovecot, tmp_path: Path, action: str
) -> None:
    """Dovecot ends the session over each; ``once`` connects again until every one is skipped."""
    seed(server, [numbered(i) for i in range(6)])
    maildir = server.runtime / "mail" / DEFAULT_USER
    broken = [p for p in maildir.glob("*/*") if any(f"number {n}.".encode() in p.read_bytes() for n in (1, 2, 3, 4))]
    for path in broken:
        path.chmod(0)
    result = ployfilter("once", "-c", str(write_config(tmp_path, server, thresholds=ALL_ARTICLES, action=action)))
    for path in maildir.glob("*/*"):  # Dovecot may have moved them from new/ to cur/
        if path.is_file():
            path.chmod(0o600)
    assert result.returncode == 0, result.stderr
    assert "the session ended" in result.stderr
    verb = "moved" if action == "move" else "would move"
    assert "home: 6 new messages in" in result.stdout and f"2 {verb} to {ARTICLES}, 4 skip" in result.stdout
    kept = [numbered(i) for i in (range(1, 5) if action == "move" else range(6))]
    assert norms(server.messages(DEFAULT_USER, "INBOX")) == norms(kept)


def test_folders_written_with_slashes_on_a_server_that_separates_with_dots_are_explained(tmp_path: Path) -> None:
    with LocalDovecot(tmp_path / "server", separator=".") as dotted:
        config = str(write_config(tmp_path, dotted))
        checked = ployfilter("check-config", "-c", config)
        assert checked.returncode == 3, checked.stderr
        hint = "this server separates folders with '.': write 'Networking.Articles' for 'Networking/Articles'"
        assert f"accounts[0].folders.article_share: {hint}" in checked.stderr
        ran = ployfilter("once", "-c", config)
        assert ran.returncode == 8 and hint in ran.stderr
        assert (
            ployfilter(
                "check-config",
                "-c",
                str(
                    write_config(
                        tmp_path,
                        dotted,
                        **{
                            "accounts": [
                                {
                                    **yaml.safe_load(Path(config).read_text())["accounts"][0],
                                    "folders": {
                                        "article_share": "Networking.Articles",
                                        "favour_request": "Networking.Requests",
                                    },
                                }
                            ]
                        },
                    )
                ),
            ).returncode
            == 0
        )


def test_check_config_refuses_a_state_path_that_cannot_be_used(server: LocalDovecot, tmp_path: Path) -> None:
    result = ployfilter("check-config", "-c", str(write_config(tmp_path, server, state_path=str(tmp_path))))
    assert result.returncode == 7
    assert f"state_path: {tmp_path} is not a regular file" in result.stderr
    fresh = ployfilter("check-config", "-c", str(write_config(tmp_path, server)))
    assert fresh.returncode == 0 and "state.sqlite3 (will be created)" in fresh.stdout
    assert not (tmp_path / "state.sqlite3").exists()
    (tmp_path / "notes.txt").write_text("my notes\n")
    other = ployfilter(
        "check-config", "-c", str(write_config(tmp_path, server, state_path=str(tmp_path / "notes.txt")))
    )
    assert other.returncode == 7 and "is not a ployfilter state file" in other.stderr


def test_check_config_names_a_sent_or_watched_folder_the_server_lacks_or_spells_otherwise(tmp_path: Path) -> None:
    with LocalDovecot(tmp_path / "server", separator=".") as dotted:
        base = yaml.safe_load(write_config(tmp_path, dotted).read_text())
        folders = {"article_share": "Networking.Articles", "favour_request": "Networking.Requests"}
        for extra, key, says in [
            ({"sent": "Sent Items"}, "sent", "'Sent Items' is not a folder on this server"),
            ({"watch": "Lists/Work"}, "watch", "write 'Lists.Work' for 'Lists/Work'"),
        ]:
            account = {**base["accounts"][0], "folders": folders, **extra}
            result = ployfilter("check-config", "-c", str(write_config(tmp_path, dotted, accounts=[account])))
            assert result.returncode == 3 and f"accounts[0].{key}: " in result.stderr and says in result.stderr


def test_flag_mode_adds_keywords_and_moves_nothing(server: LocalDovecot, tmp_path: Path) -> None:
    seed(server, [numbered(1), numbered(2)])
    config = write_config(tmp_path, server, action="flag", thresholds=ALL_ARTICLES)
    assert ployfilter("once", "-c", str(config)).returncode == 0
    assert server.folders(DEFAULT_USER) == ["INBOX"]
    assert all("$PloyArticle" in f for f in server.flags(DEFAULT_USER, "INBOX"))
    assert all("\\Seen" not in f for f in server.flags(DEFAULT_USER, "INBOX"))


def test_demo_runs_end_to_end() -> None:
    result = ployfilter("demo", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "nothing lost" in result.stdout
    assert "second pass: 0 messages handled" in result.stdout
    assert "give-then-ask: 2 article shares without a reply, now a favour request" in result.stdout
    # the senders report: his shares, then his ask, show the give-then-ask pattern
    assert re.search(r"^derek\.whitfield@example\.com\s+3\s+1\s+no\s.*\syes$", result.stdout, re.M), result.stdout
