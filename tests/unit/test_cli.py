"""The command line's pure parts: filter headers, help, exit codes for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from filter.cli import main, with_headers

SCORES = {"article_share": 0.912, "favour_request": 0.05}
THRESHOLDS = {"article_share": 0.8, "favour_request": 0.8}


def test_headers_are_prepended_and_the_message_kept_byte_for_byte() -> None:
    data = b"Subject: hi\r\n\r\nbody\r\n"
    out = with_headers(data, SCORES, THRESHOLDS)
    assert out.endswith(data)
    assert out.startswith(
        b"X-Ploy-Scores: article_share=0.912; favour_request=0.050\r\nX-Ploy-Labels: article_share\r\n"
    )


def test_headers_follow_the_message_line_ending() -> None:
    assert b"X-Ploy-Labels: article_share\nSubject" in with_headers(b"Subject: hi\n\nbody\n", SCORES, THRESHOLDS)


def test_headers_go_after_an_mbox_from_line() -> None:
    data = b"From someone@example.org Mon Jan  1 00:00:00 2026\nSubject: hi\n\nbody\n"
    out = with_headers(data, SCORES, THRESHOLDS)
    assert out.startswith(b"From someone@example.org")
    assert out.split(b"\n")[1].startswith(b"X-Ploy-Scores:")


def test_no_label_says_none() -> None:
    out = with_headers(b"Subject: x\n\n", {"article_share": 0.1, "favour_request": 0.1}, THRESHOLDS)
    assert b"X-Ploy-Labels: none\n" in out


@pytest.mark.parametrize("command", ["run", "once", "check-config", "classify", "demo"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "exit codes" in capsys.readouterr().out


def test_config_error_exits_with_code_3(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("accounts: []\n")
    assert main(["once", "-c", str(path)]) == 3
    assert "accounts: [] (list) is not valid" in caplog.text


def test_model_refused_exits_with_code_6(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: x\n\nhello\n")
    assert main(["classify", "--model", str(tmp_path / "model"), str(message)]) == 6
