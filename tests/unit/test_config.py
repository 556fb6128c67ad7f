"""Configuration validation: every error names the key, the bad value and what is valid."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import filter.config
from filter.config import DigestConfig, PolicyConfig, _Loader, load_config, parse_config, read_password
from filter.errors import AuthError, ConfigError

REPO = Path(__file__).resolve().parents[2]


def minimal(**account: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "home",
        "host": "imap.example.org",
        "username": "claire@example.org",
        "password_env": "PLOY_TEST_PASSWORD",
    }
    base.update(account)
    return {"accounts": [base]}


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_example_config_is_valid() -> None:
    config = load_config(REPO / "config.example.yaml")
    assert config.accounts[0].folders["favour_request"] == "Networking/Requests"
    card = json.loads((REPO / "models" / "default" / "card.json").read_text())
    assert config.thresholds == card["thresholds"], "the example shows the shipped model's thresholds"


def test_defaults_fill_optional_keys() -> None:
    config = parse_config(minimal())
    account = config.accounts[0]
    assert (account.security, account.port, account.watch) == ("tls", 993, "INBOX")
    assert config.action == "move"
    assert config.thresholds == {}


def test_starttls_defaults_to_port_143() -> None:
    assert parse_config(minimal(security="starttls")).accounts[0].port == 143


def test_unknown_top_level_key_is_named() -> None:
    data = minimal()
    data["treshold"] = 0.5
    message = error_of(data)
    assert "treshold: unknown key" in message
    assert "thresholds" in message


def test_unknown_account_key_is_named_with_its_path() -> None:
    assert "accounts[0].pasword: unknown key" in error_of(minimal(pasword="x"))


def test_bad_choice_lists_valid_values() -> None:
    message = error_of(minimal(security="ssl"))
    assert "accounts[0].security: 'ssl' is not valid" in message
    assert "tls, starttls, plain" in message


def test_bad_action_lists_valid_values() -> None:
    data = minimal()
    data["action"] = "delete"
    assert "move, flag, dry-run" in error_of(data)


def test_threshold_out_of_range_is_refused() -> None:
    data = minimal()
    data["thresholds"] = {"article_share": 1.5}
    assert "thresholds.article_share: 1.5 (float) is not valid; expected a number from 0 to 1" in error_of(data)


def test_unknown_threshold_label_is_refused() -> None:
    data = minimal()
    data["thresholds"] = {"favor_request": 0.5}
    assert "thresholds.favor_request: unknown key" in error_of(data)


def test_plain_is_refused_to_a_remote_host() -> None:
    message = error_of(minimal(security="plain"))
    assert "accounts[0].security" in message
    assert "refused" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.1.2.3"])
def test_plain_is_allowed_to_loopback(host: str) -> None:
    assert parse_config(minimal(security="plain", host=host)).accounts[0].security == "plain"


def test_exactly_one_password_source_is_required() -> None:
    assert "exactly one of" in error_of(minimal(password="x"))
    data = minimal()
    del data["accounts"][0]["password_env"]
    assert "found none" in error_of(data)


def test_missing_required_key_is_named() -> None:
    data = minimal()
    del data["accounts"][0]["host"]
    assert "accounts[0].host: missing" in error_of(data)


def test_port_must_be_a_whole_number_in_range() -> None:
    assert "accounts[0].port: 70000 (int) is not valid" in error_of(minimal(port=70000))
    assert "accounts[0].port" in error_of(minimal(port="993"))


def test_duplicate_account_names_are_refused() -> None:
    data = minimal()
    data["accounts"].append(dict(data["accounts"][0]))
    assert "accounts[1].name: 'home' is used twice" in error_of(data)


def test_target_folder_cannot_be_the_watched_folder() -> None:
    message = error_of(minimal(folders={"article_share": "INBOX", "favour_request": "R"}))
    assert "accounts[0].folders.article_share" in message


def test_idle_renew_cannot_exceed_ten_minutes() -> None:
    data = minimal()
    data["idle_renew"] = 900
    assert "idle_renew: 900 (int) is not valid" in error_of(data)


def test_missing_ca_file_is_refused() -> None:
    assert "accounts[0].ca_file" in error_of(minimal(ca_file="/nonexistent/ca.pem"))


def test_not_a_mapping_is_refused() -> None:
    assert "expected a mapping" in error_of(["accounts"])


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("accounts:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_relative_state_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "accounts:\n  - {name: a, host: 127.0.0.1, security: plain, username: u, password_env: X}\n"
        "state_path: state.sqlite3\n"
    )
    assert load_config(path).state_path == tmp_path.resolve() / "state.sqlite3"


def test_password_from_command() -> None:
    account = parse_config(minimal(password_env=None, password_command="printf 's3cret\\nextra'")).accounts[0]
    assert read_password(account) == "s3cret"


def test_password_command_failure_is_an_auth_error() -> None:
    account = parse_config(minimal(password_env=None, password_command="exit 3")).accounts[0]
    with pytest.raises(AuthError, match="status 3"):
        read_password(account)


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLOY_TEST_PASSWORD", "from-env")
    assert read_password(parse_config(minimal()).accounts[0]) == "from-env"


def test_unset_password_variable_is_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLOY_TEST_PASSWORD", raising=False)
    with pytest.raises(AuthError, match="PLOY_TEST_PASSWORD is not set"):
        read_password(parse_config(minimal()).accounts[0])


def test_password_in_file_is_not_shown_in_repr() -> None:
    account = parse_config(minimal(password_env=None, password="hunter2")).accounts[0]
    assert "hunter2" not in repr(account)


def with_keys(**keys: Any) -> dict[str, Any]:
    data = minimal()
    data.update(keys)
    return data


def test_policy_and_digest_defaults() -> None:
    config = parse_config(minimal())
    assert config.policy == PolicyConfig()
    assert (config.policy.review_band, config.policy.correspondent_days, config.policy.correspondents) == (
        0.0,
        365.0,
        "keep",
    )
    assert (config.policy.pattern_shares, config.policy.drip_shares, config.policy.drip_days) == (2, 3, 7.0)
    assert (config.policy.allow, config.policy.block) == ((), ())
    assert config.digest is None
    assert (config.accounts[0].sent, config.accounts[0].review_folder) == (None, None)


def test_example_config_sets_the_policy_keys() -> None:
    config = load_config(REPO / "config.example.yaml")
    assert config.policy.review_band == 0.1
    assert config.accounts[0].review_folder == "Networking/Review"
    assert config.policy.allow == ("boss@example.org", "example.net")


# accounts[].sent and folders.review


def test_sent_folder_is_read() -> None:
    assert parse_config(minimal(sent="Sent Items")).accounts[0].sent == "Sent Items"


def test_null_sent_folder_means_detect_it() -> None:
    assert parse_config(minimal(sent=None)).accounts[0].sent is None


@pytest.mark.parametrize("value", ["", "  ", 3, ["Sent"]])
def test_bad_sent_folder_is_refused(value: Any) -> None:
    message = error_of(minimal(sent=value))
    assert "accounts[0].sent" in message
    assert "expected a non-empty string" in message


def test_sent_folder_cannot_be_the_watched_folder() -> None:
    assert "accounts[0].sent: 'INBOX' is the watched folder" in error_of(minimal(sent="INBOX"))


def test_review_folder_is_read_beside_the_label_folders() -> None:
    account = parse_config(minimal(folders={"article_share": "A", "favour_request": "R", "review": "Rev"})).accounts[0]
    assert account.review_folder == "Rev"
    assert dict(account.folders) == {"article_share": "A", "favour_request": "R"}


def test_null_review_folder_is_none() -> None:
    assert parse_config(minimal(folders={"review": None})).accounts[0].review_folder is None


def test_review_folder_cannot_be_the_watched_folder() -> None:
    assert "accounts[0].folders.review: 'INBOX' is the watched folder" in error_of(minimal(folders={"review": "INBOX"}))


def test_review_folder_must_be_a_string() -> None:
    assert "accounts[0].folders.review: 5 (int) is not valid" in error_of(minimal(folders={"review": 5}))


def test_unknown_folder_key_lists_review() -> None:
    message = error_of(minimal(folders={"reveiw": "R"}))
    assert "accounts[0].folders.reveiw: unknown key" in message
    assert "review" in message


# review_band


def test_review_band_is_read() -> None:
    assert parse_config(with_keys(review_band=0.1)).policy.review_band == 0.1


@pytest.mark.parametrize("value", [-0.1, 0.6, "0.1", True])
def test_bad_review_band_is_refused(value: Any) -> None:
    assert "review_band:" in error_of(with_keys(review_band=value))
    assert "expected a number from 0 to 0.5" in error_of(with_keys(review_band=value))


# correspondents


def test_correspondents_are_read() -> None:
    policy = parse_config(with_keys(correspondents={"window_days": 90, "action": "stricter", "raise": 0.2})).policy
    assert (policy.correspondent_days, policy.correspondents, policy.correspondent_raise) == (90.0, "stricter", 0.2)


def test_correspondents_window_of_zero_turns_the_rule_off() -> None:
    assert parse_config(with_keys(correspondents={"window_days": 0})).policy.correspondent_days == 0.0


def test_null_correspondents_take_the_defaults() -> None:
    assert parse_config(with_keys(correspondents=None)).policy == PolicyConfig()


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"window_days": 4000},
            "correspondents.window_days: 4000 (int) is not valid; expected a number from 0 to 3650",
        ),
        ({"window_days": -1}, "correspondents.window_days: -1 (int) is not valid"),
        ({"action": "move"}, "correspondents.action: 'move' is not valid; expected one of keep, stricter"),
        ({"raise": 1.5}, "correspondents.raise: 1.5 (float) is not valid; expected a number from 0 to 1"),
        ({"days": 30}, "correspondents.days: unknown key; valid keys here are action, raise, window_days"),
    ],
)
def test_bad_correspondents_are_refused(section: dict[str, Any], expected: str) -> None:
    assert expected in error_of(with_keys(correspondents=section))


def test_correspondents_must_be_a_mapping() -> None:
    assert "correspondents: expected a mapping of keys, got 'keep'" in error_of(with_keys(correspondents="keep"))


# pattern


def test_pattern_is_read() -> None:
    assert parse_config(with_keys(pattern={"shares_before_ask": 4})).policy.pattern_shares == 4


@pytest.mark.parametrize("value", [0, 101, 2.5, "2"])
def test_bad_pattern_shares_are_refused(value: Any) -> None:
    message = error_of(with_keys(pattern={"shares_before_ask": value}))
    assert "pattern.shares_before_ask:" in message
    assert "expected a whole number from 1 to 100" in message


def test_unknown_pattern_key_is_named() -> None:
    assert "pattern.shares: unknown key" in error_of(with_keys(pattern={"shares": 2}))


# drip


def test_drip_is_read() -> None:
    policy = parse_config(with_keys(drip={"shares": 5, "days": 14, "lower": 0.1})).policy
    assert (policy.drip_shares, policy.drip_days, policy.drip_lower) == (5, 14.0, 0.1)


def test_drip_of_zero_shares_is_accepted() -> None:
    assert parse_config(with_keys(drip={"shares": 0})).policy.drip_shares == 0


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"shares": -1}, "drip.shares: -1 (int) is not valid; expected a whole number from 0 to 1000"),
        ({"shares": 1.5}, "drip.shares: 1.5 (float) is not valid"),
        ({"days": 0}, "drip.days: 0 (int) is not valid; expected a number from 0.1 to 365"),
        ({"days": 400}, "drip.days: 400 (int) is not valid"),
        ({"lower": 0.6}, "drip.lower: 0.6 (float) is not valid; expected a number from 0 to 0.5"),
        ({"window": 7}, "drip.window: unknown key"),
    ],
)
def test_bad_drip_is_refused(section: dict[str, Any], expected: str) -> None:
    assert expected in error_of(with_keys(drip=section))


# allow and block


def test_allow_and_block_are_lower_cased_and_stripped() -> None:
    policy = parse_config(
        with_keys(allow=[" Ann@Example.ORG ", "*.Example.org"], block=["News-*@example.com", "spam.example"])
    ).policy
    assert policy.allow == ("ann@example.org", "*.example.org")
    assert policy.block == ("news-*@example.com", "spam.example")


def test_null_allow_list_is_empty() -> None:
    assert parse_config(with_keys(allow=None)).policy.allow == ()


@pytest.mark.parametrize(
    ("entries", "index"),
    [
        (["ann@example.org", ""], 1),
        (["   "], 0),
        (["ann @example.org"], 0),
        (["a@b@example.org"], 0),
        (["ok.example", "ann@"], 1),
        (["@example.org"], 0),
        ([5], 0),
        ([None], 0),
    ],
)
def test_bad_list_entry_is_refused_with_its_index(entries: list[Any], index: int) -> None:
    for key in ("allow", "block"):
        message = error_of(with_keys(**{key: entries}))
        assert f"{key}[{index}]: " in message
        assert "expected an address (ann@example.org)" in message


@pytest.mark.parametrize("value", ["ann@example.org", {"ann@example.org": True}, 3])
def test_list_that_is_not_a_list_is_refused(value: Any) -> None:
    message = error_of(with_keys(block=value))
    assert "block: " in message
    assert "expected a list" in message


def test_entry_on_both_lists_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    policy = parse_config(with_keys(allow=["Ann@example.org"], block=["ann@example.org", "example.com"])).policy
    assert policy.allow == ("ann@example.org",)
    assert "ann@example.org is on both the allow and the block list" in caplog.text


def test_lists_without_overlap_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    parse_config(with_keys(allow=["ann@example.org"], block=["example.com"]))
    assert "both" not in caplog.text


# digest


def test_digest_is_read() -> None:
    digest = parse_config(with_keys(digest={"folder": "Networking", "weekday": "friday", "senders": 5})).digest
    assert digest == DigestConfig(folder="Networking", weekday="friday", senders=5)


def test_digest_defaults() -> None:
    assert parse_config(with_keys(digest={"folder": "Networking"})).digest == DigestConfig("Networking", "monday", 10)


def test_null_digest_is_no_digest() -> None:
    assert parse_config(with_keys(digest=None)).digest is None


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({}, "digest.folder: missing; this key is required"),
        ({"folder": ""}, "digest.folder: '' is not valid; expected a non-empty string"),
        (
            {"folder": "N", "weekday": "Friday"},
            "digest.weekday: 'Friday' is not valid; expected one of monday, tuesday",
        ),
        ({"folder": "N", "senders": 0}, "digest.senders: 0 (int) is not valid; expected a whole number from 1 to 100"),
        ({"folder": "N", "senders": 101}, "digest.senders: 101 (int) is not valid"),
        ({"folder": "N", "day": "monday"}, "digest.day: unknown key"),
    ],
)
def test_bad_digest_is_refused(section: dict[str, Any], expected: str) -> None:
    assert expected in error_of(with_keys(digest=section))


def test_digest_must_be_a_mapping() -> None:
    assert "digest: expected a mapping of keys, got 'Networking'" in error_of(with_keys(digest="Networking"))


# What a hand-edited file gets wrong ----------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


BASE = "accounts:\n  - {name: home, host: imap.example.org, username: u, password_env: PLOY_TEST_PASSWORD}\n"


@pytest.mark.parametrize("extra", ["1: x\nfoo: y\n", "yes: x\n", "2026: x\n"])
def test_a_key_yaml_reads_as_a_number_or_boolean_is_named(tmp_path: Path, extra: str) -> None:
    with pytest.raises(ConfigError, match="is not valid; keys are names"):
        load_config(write(tmp_path, BASE + extra))


def test_a_key_written_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "action: dry-run\n" + BASE + "action: move\n")
    with pytest.raises(ConfigError, match=r"line 4.*'action' is written twice, first at line 1"):
        load_config(path)


def test_a_key_brought_in_by_a_merge_may_be_overridden(tmp_path: Path) -> None:
    text = (
        "base: &base {host: imap.example.org, username: u, password_env: PLOY_TEST_PASSWORD, port: 993}\n"
        "accounts:\n  - <<: *base\n    name: home\n    port: 1993\n"
    )
    data = yaml.load(text, Loader=_Loader)  # noqa: S506 - the project's SafeLoader subclass
    del data["base"]
    assert parse_config(data).accounts[0].port == 1993


def test_a_file_nested_too_deeply_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(write(tmp_path, "accounts: " + "[" * 5000 + "]" * 5000 + "\n"))


def test_a_misspelt_account_key_is_named_before_anything_it_leaves_missing() -> None:
    message = error_of(minimal(password_env=None, pasword_env="PLOY_TEST_PASSWORD"))
    assert "accounts[0].pasword_env: unknown key (did you mean password_env?)" in message


def test_range_bounds_are_written_in_full() -> None:
    assert "from 4096 to 67108864" in error_of(with_keys(max_message_bytes=100_000_000))


@pytest.mark.parametrize("name", ["inbox", "Inbox", "INBOX"])
def test_inbox_in_any_case_is_the_watched_folder(name: str) -> None:
    assert "is the watched folder" in error_of(minimal(folders={"article_share": name}))
    assert parse_config(minimal(watch=name.lower(), sent="Sent")).accounts[0].watch == "INBOX"


def test_a_ca_file_that_is_not_pem_is_a_config_error(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    assert "cannot be loaded as a PEM CA certificate" in error_of(minimal(ca_file=str(junk)))


def test_an_empty_password_in_the_file_is_refused() -> None:
    assert "accounts[0].password: expected a non-empty string" in error_of(minimal(password_env=None, password=""))


def test_a_password_file_others_can_read_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, BASE.replace("password_env: PLOY_TEST_PASSWORD", "password: hunter2"))
    path.chmod(0o644)
    load_config(path)
    assert "other users can read it (mode 644)" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    load_config(path)
    assert "other users can read it" not in caplog.text
    assert "hunter2" not in caplog.text


def test_a_hanging_password_command_gives_up_when_told_to_stop() -> None:
    account = parse_config(minimal(password_env=None, password_command="sleep 30")).accounts[0]
    started = time.monotonic()
    with pytest.raises(AuthError, match="stopped while password_command was running"):
        read_password(account, lambda: time.monotonic() - started > 0.3)
    assert time.monotonic() - started < 10


def test_a_hanging_password_command_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filter.config, "PASSWORD_COMMAND_SECONDS", 0.5)
    account = parse_config(minimal(password_env=None, password_command="sleep 30")).accounts[0]
    with pytest.raises(AuthError, match="did not finish in 0.5 s"):
        read_password(account)


@pytest.mark.parametrize(
    "text",
    [
        "{action: dry-run, accounts: [{name: h, host: h.example, username: u, password_env: P}], action: move}\n",
        BASE.replace("name: home,", "name: home, name: work,"),
        "k: &k action\n" + BASE + "*k : dry-run\n*k : move\n",
    ],
)
def test_a_key_written_twice_on_one_line_or_through_an_alias_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="is written twice, first at line"):
        load_config(write(tmp_path, text))


def test_the_digest_folder_inbox_is_inbox_in_any_case() -> None:
    assert parse_config(with_keys(digest={"folder": "inbox"})).digest == DigestConfig(folder="INBOX")


@pytest.mark.parametrize(
    "command", ["setsid sleep 20 & echo pw", "sleep 20 & echo pw", "(sleep 1; echo late) & echo pw"]
)
def test_a_password_command_that_leaves_a_child_holding_its_output_is_read_when_it_ends(command: str) -> None:
    # an agent the command starts may keep the pipe open: the command's own end is what counts
    account = parse_config(minimal(password_env=None, password_command=command)).accounts[0]
    started = time.monotonic()
    assert read_password(account) == "pw"
    assert time.monotonic() - started < 10  # liveness: not the child's 20 s, nor the 60 s limit


@pytest.mark.parametrize("command", ["(sleep 0.3; echo pw) & exit 0", "(sleep 0.3; printf pw) & exit 0"])
def test_a_password_printed_by_a_child_just_after_the_command_ends_is_read(command: str) -> None:
    account = parse_config(minimal(password_env=None, password_command=command)).accounts[0]
    assert read_password(account) == "pw"


@pytest.mark.parametrize("command", ["echo pw; exec >&-; sleep 30", "exec >&-; sleep 30"])
def test_a_password_command_that_closes_its_output_and_hangs_still_stops(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = parse_config(minimal(password_env=None, password_command=command)).accounts[0]
    started = time.monotonic()
    with pytest.raises(AuthError, match="stopped while password_command was running"):
        read_password(account, lambda: time.monotonic() - started > 0.3)
    assert time.monotonic() - started < 10
    monkeypatch.setattr(filter.config, "PASSWORD_COMMAND_SECONDS", 0.5)
    with pytest.raises(AuthError, match="did not finish in 0.5 s"):
        read_password(account)


@pytest.mark.parametrize("command", ["(while :; do printf x; sleep 0.1; done) & exit 0", "(cat /dev/zero &); exit 0"])
def test_a_child_that_writes_on_after_the_command_ends_fails_at_the_limit(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what it wrote by then is no password
    monkeypatch.setattr(filter.config, "PASSWORD_COMMAND_SECONDS", 1)
    account = parse_config(minimal(password_env=None, password_command=command)).accounts[0]
    with pytest.raises(AuthError, match="did not finish in 1 s"):
        read_password(account)


@pytest.mark.parametrize(
    "command, says", [("sleep 30 & exit 3", "exited with status 3"), ("sleep 30 & exit 0", "printed nothing")]
)
def test_a_password_command_that_fails_leaves_no_child_running(command: str, says: str, tmp_path: Path) -> None:
    marker = tmp_path / "child"
    command = command.replace("sleep 30", f"sh -c 'echo $$ > {marker}; exec sleep 30'")
    account = parse_config(minimal(password_env=None, password_command=command)).accounts[0]
    with pytest.raises(AuthError, match=says):
        read_password(account)
    child = int(marker.read_text())
    for _ in range(50):  # liveness: the kill is sent before the error is raised
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the child of a failed password_command is still running")


def test_a_password_command_that_prints_then_hangs_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filter.config, "PASSWORD_COMMAND_SECONDS", 0.5)
    account = parse_config(minimal(password_env=None, password_command="echo pw; sleep 30")).accounts[0]
    with pytest.raises(AuthError, match="did not finish in 0.5 s"):
        read_password(account)


def test_a_password_command_that_prints_much_keeps_its_first_line() -> None:
    account = parse_config(minimal(password_env=None, password_command="echo pw; head -c 3000000 /dev/zero")).accounts[
        0
    ]
    assert read_password(account) == "pw"


@pytest.mark.parametrize("source", [{"password_env": "TOKEN"}, {"password": "a-token"}])
def test_xoauth2_takes_its_token_from_a_command_only(source: dict[str, str]) -> None:
    data = minimal(auth="xoauth2", password_env=None)
    data["accounts"][0].pop("password_env")
    data["accounts"][0].update(source)
    message = error_of(data)
    assert "accounts[0].auth: xoauth2" in message and "give password_command" in message
    data["accounts"][0].pop(next(iter(source)))
    data["accounts"][0]["password_command"] = "oama access me@example.org"
    assert parse_config(data).accounts[0].auth == "xoauth2"


def test_auth_is_password_or_xoauth2() -> None:
    assert parse_config(minimal()).accounts[0].auth == "password"
    assert "expected one of password, xoauth2" in error_of(minimal(auth="oauth"))


@pytest.mark.parametrize("host", ["localhost.", "localhost.localdomain"])
def test_plain_is_refused_to_a_name_dns_would_answer_for(host: str) -> None:
    assert "accounts[0].security" in error_of(minimal(security="plain", host=host))


@pytest.mark.parametrize(
    "host, says",
    [
        ("imap.example.org:993", "give the port under 'port'"),
        ("[::1]", "write an IPv6 address without brackets (::1)"),
        ("imaps://imap.example.org", "is a URL"),
        ("imap example.org", "is not a host name"),
        ("me@imap.example.org", "is not a host name"),
    ],
)
def test_a_host_with_more_than_a_name_is_refused(host: str, says: str) -> None:
    message = error_of(minimal(security="tls", host=host))
    assert "accounts[0].host" in message and says in message


@pytest.mark.parametrize("host", ["::1", "fe80::1%eth0", "2001:db8::5", "imap.example.org", "127.0.0.1"])
def test_names_and_addresses_are_hosts(host: str) -> None:
    assert parse_config(minimal(security="tls", host=host)).accounts[0].host == host


@pytest.mark.parametrize(
    "key, value",
    [("host", "127.0.0.1\0x"), ("watch", "A\r\nB"), ("username", "u\n"), ("password_command", "pass\0show")],
)
def test_a_control_character_in_a_string_is_named(key: str, value: str) -> None:
    data = minimal(**{key: value})
    if key == "password_command":
        data["accounts"][0].pop("password_env")
    message = error_of(data)
    assert f"accounts[0].{key}" in message and "control character" in message


def test_an_account_name_cannot_end_in_a_line_break() -> None:
    assert "accounts[0].name" in error_of(minimal(name="home\n"))


def test_a_huge_value_is_shown_cut_short() -> None:
    value: Any = ["x" * 1000]
    for _ in range(8):
        value = [value] * 10  # what YAML aliases make of a few lines
    message = error_of({**minimal(), "action": value})
    assert "action" in message and len(message) < 1000


def test_a_relative_ca_file_is_beside_the_config_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    path = tmp_path / "c.yaml"
    path.write_text("accounts:\n  - {name: a, host: imap.example.org, username: u, password_env: X, ca_file: ca.pem}\n")
    with pytest.raises(ConfigError, match=r"ca_file: 'ca.pem' cannot be loaded as a PEM CA"):
        load_config(path)  # found (and read) beside the config, wherever the command runs


def test_a_target_folder_cannot_be_the_sent_folder() -> None:
    message = error_of(minimal(sent="Networking/Articles"))
    assert "accounts[0].folders.article_share" in message and "sent folder" in message


def test_a_config_path_that_is_a_pipe_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(fifo)


def test_a_password_command_line_is_cut_only_at_a_line_feed() -> None:
    account = parse_config(minimal(password_env=None, password_command="printf 's3c\\vret\\r\\nextra'")).accounts[0]
    assert read_password(account) == "s3c\vret"


def test_a_password_command_that_prints_no_utf8_says_so() -> None:
    account = parse_config(minimal(password_env=None, password_command="printf 'secr\\351t'")).accounts[0]
    with pytest.raises(AuthError, match="not UTF-8"):
        read_password(account)


def test_a_password_command_may_span_lines_as_a_yaml_block_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "accounts:\n  - name: a\n    host: imap.example.org\n    username: u\n"
        "    password_command: |\n      printf 'line one'\n      printf ' and two'\n"
    )
    assert read_password(load_config(path).accounts[0]) == "line one and two"


@pytest.mark.parametrize("key", ["ca_file", "model"])
def test_a_path_too_long_to_look_at_is_a_config_error(key: str) -> None:
    data = minimal(**({"ca_file": "x" * 300} if key == "ca_file" else {}))
    if key == "model":
        data["model"] = "x" * 300
    message = error_of(data)
    assert key in message and len(message) < 400
