"""Configuration validation: every error names the key, the bad value and what is valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from filter.config import load_config, parse_config, read_password
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
    assert config.thresholds == {"article_share": 0.76, "favour_request": 0.82}


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
