"""The command line's pure parts: filter headers, help, exit codes for bad input."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

import filter.cli
from filter import entry
from filter.cli import main, with_headers
from filter.config import load_config
from filter.errors import ConnectError, UsageError
from filter.mailbox import ConnectionLost
from filter.runner import Outcome, PassReport

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
    out = with_headers(b"Subject: hi\n\nbody\n", SCORES, THRESHOLDS, ("$PloyArticle",))
    assert b"X-Ploy-Labels: article_share\nX-Ploy-Keywords: $PloyArticle\nSubject" in out


def test_headers_go_after_an_mbox_from_line() -> None:
    data = b"From someone@example.org Mon Jan  1 00:00:00 2026\nSubject: hi\n\nbody\n"
    out = with_headers(data, SCORES, THRESHOLDS)
    assert out.startswith(b"From someone@example.org")
    assert out.split(b"\n")[1].startswith(b"X-Ploy-Scores:")


def test_headers_after_a_from_line_that_never_ends_start_a_line_of_their_own() -> None:
    out = with_headers(b"From a@example.org Mon Jan  1 00:00:00 2024", SCORES, THRESHOLDS)
    assert out.startswith(b"From a@example.org Mon Jan  1 00:00:00 2024\nX-Ploy-Scores: ")


@pytest.mark.parametrize(
    "data, eol",
    [
        (b"Subject: hi\n\nRead this\npasted:\r\nline\r\n", b"\n"),  # a CRLF in the body does not count
        (b"Subject: hi\r\n\r\nbody\n", b"\r\n"),
        (b"Subject: hi\r\rbody\r", b"\r"),
    ],
)
def test_headers_end_as_the_first_line_of_the_message_does(data: bytes, eol: bytes) -> None:
    out = with_headers(data, SCORES, THRESHOLDS)
    assert out == b"".join(line + eol for line in _ploy_lines()) + data


def _ploy_lines() -> list[bytes]:
    return [
        b"X-Ploy-Scores: article_share=0.912; favour_request=0.050",
        b"X-Ploy-Labels: article_share",
        b"X-Ploy-Keywords: none",
    ]


def test_x_ploy_fields_the_message_came_with_are_dropped_and_nothing_else() -> None:
    data = (
        b"From: a@example.org\nX-Ploy-Labels: none\nSubject: hi\nx-ploy-keywords:\n none\n\tat all\n"
        b"X-Ployed: kept\n\nX-Ploy-Labels: in the body, kept\n"
    )
    out = with_headers(data, SCORES, THRESHOLDS)
    assert out == b"".join(line + b"\n" for line in _ploy_lines()) + (
        b"From: a@example.org\nSubject: hi\nX-Ployed: kept\n\nX-Ploy-Labels: in the body, kept\n"
    )


@pytest.mark.parametrize(
    "header, body",
    [
        (b"From: a@example.org\nSubject: hi\n", b"\rX-Ploy-Labels: in the body\n"),  # a CR blank line after LFs
        (b"A: 1\r\n", b"\rX-Ploy-Labels: in the body\r\n"),
        (b"A: 1\r", b"\r\nX-Ploy-Labels: in the body\n"),  # a CRLF blank line after a CR
        (b"", b"\rX-Ploy-Labels: in the body\rmore\r"),  # no header at all
    ],
)
def test_the_header_ends_at_its_first_blank_line_whatever_its_line_ending(header: bytes, body: bytes) -> None:
    out = with_headers(header + body, SCORES, THRESHOLDS)
    assert out.endswith(header + body)


def test_no_label_says_none() -> None:
    out = with_headers(b"Subject: x\n\n", {"article_share": 0.1, "favour_request": 0.1}, THRESHOLDS)
    assert b"X-Ploy-Labels: none\nX-Ploy-Keywords: none\n" in out


@pytest.mark.parametrize("command", ["run", "once", "check-config", "senders", "classify", "demo", "train", "evaluate"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
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


SHARE = "Thought you might find this article interesting: {topic}. https://news.example.com/{n}\nBest, {name}"
REQUEST = (
    "Could you introduce me to your HR team, or spare time for a coffee so I can pick your brain on {topic}?\n{name}"
)
WORK = "Please send the figures on {topic} before the review meeting on Tuesday.\nThanks, {name}"
TOPICS = ["ports automating night shifts", "rail freight", "solar tariffs", "city budgets", "river dredging"]


def _write_labelled_mail(root: Path) -> None:
    for folder, template in (("articles", SHARE), ("favours", REQUEST), ("ham", WORK)):
        for n in range(10):
            name = f"{folder}{n}"
            body = template.format(topic=TOPICS[n % len(TOPICS)], n=n, name=name)
            path = root / folder / f"{n}.eml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                f"From: {name} <{name}@example.org>\nTo: me@example.org\nSubject: {TOPICS[n % 5]}\n\n{body}\n"
            )


def test_train_writes_a_bundle_that_evaluate_measures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_labelled_mail(tmp_path / "mail")
    model = tmp_path / "model"
    assert main(["train", str(tmp_path / "mail"), "--out", str(model), "--folds", "2"]) == 0
    assert "wrote " in capsys.readouterr().out
    card = json.loads((model / "card.json").read_text())
    assert card["training_data"]["messages"] == 30
    assert card["metrics"]["cv"]["grouped_by"] == "sender address"
    assert card["metrics"]["cv"]["partitions"] == 3, "thresholds come from three partitions into folds by default"
    plot = tmp_path / "pr.svg"
    assert main(["evaluate", str(tmp_path / "mail"), "--model", str(model), "--json", "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["messages"] == 30
    assert report["labels"]["article_share"]["positives"] == 10
    assert report["labels"]["favour_request"]["tp"] + report["labels"]["favour_request"]["fn"] == 10
    assert report["ordinary_flagged"]["messages"] == 10
    assert plot.read_text().count('class="curve"') == 2


def test_a_model_folder_whose_name_is_not_utf8_is_shown_escaped(tmp_path: Path) -> None:
    hard_cases = Path(__file__).resolve().parents[1] / "data" / "hard-cases"
    model = Path(os.fsdecode(bytes(tmp_path) + b"/mod\xff"))
    shutil.copytree(Path(__file__).resolve().parents[2] / "models" / "default", model)
    plot = tmp_path / "pr.svg"
    code = "import sys; from filter.cli import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, "evaluate", str(hard_cases), "--labels", str(hard_cases / "expected.csv")]
        + ["--model", os.fsencode(model), "--plot", str(plot)],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "mod\\xff, thresholds from" in result.stdout.decode("utf-8")
    assert "Precision-recall: mod\\xff" in plot.read_text()


def test_evaluate_says_where_french_mail_is_judged(capsys: pytest.CaptureFixture[str]) -> None:
    hard_cases = Path(__file__).resolve().parents[1] / "data" / "hard-cases"
    labels = str(hard_cases / "expected.csv")
    assert main(["evaluate", str(hard_cases), "--labels", labels]) == 0
    assert "fr scores are shifted to their own point: article_share" in capsys.readouterr().out
    assert main(["evaluate", str(hard_cases), "--labels", labels, "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["language_points"]) == {"fr"}


def test_evaluate_takes_several_label_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hard_cases = Path(__file__).resolve().parents[1] / "data" / "hard-cases"
    rows = (hard_cases / "expected.csv").read_text().splitlines()
    english = [r for r in rows[1:] if "-en" in r.split(",")[0]]
    french = [r for r in rows[1:] if "-en" not in r.split(",")[0]]
    labels = []
    for name, part in (("en.csv", english), ("fr.csv", french)):
        (tmp_path / name).write_text("\n".join([rows[0], *(f"{hard_cases}/{r}" for r in part)]) + "\n")
        labels.append(str(tmp_path / name))
    assert main(["evaluate", str(hard_cases), "--labels", *labels, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["messages"] == len(rows) - 1
    assert main(["evaluate", str(hard_cases), "--labels", labels[0], "--labels", labels[1], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["messages"] == len(rows) - 1


def test_evaluate_refuses_a_plot_it_cannot_write_before_doing_any_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["evaluate", str(tmp_path / "absent"), "--plot", str(tmp_path / "pr.pdf")]) == 2
    assert "must end in .svg or .png" in caplog.text


def test_train_needs_two_folds_and_labelled_mail(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", str(tmp_path), "--out", str(tmp_path / "model"), "--folds", "1"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["train", str(tmp_path), "--out", str(tmp_path / "model"), "--repeats", "0"])
    assert info.value.code == 2
    (tmp_path / "misc").mkdir()
    (tmp_path / "misc" / "a.eml").write_bytes(b"From: a@example.org\nSubject: x\n\nhello there\n")
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "model")]) == 2
    assert not (tmp_path / "model").exists()


def test_train_refuses_mail_that_all_carries_one_label(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_labelled_mail(tmp_path / "mail")
    shutil.rmtree(tmp_path / "mail" / "ham")
    shutil.rmtree(tmp_path / "mail" / "favours")
    assert main(["train", str(tmp_path / "mail"), "--out", str(tmp_path / "model")]) == 2
    assert "all 10 messages are labelled article_share: the model would flag every message" in caplog.text
    assert not (tmp_path / "model").exists()
    (tmp_path / "empty").mkdir()
    assert main(["train", str(tmp_path / "empty"), "--out", str(tmp_path / "model")]) == 2
    assert "no labelled message could be read" in caplog.text


def test_train_copes_with_ordinary_mail_from_one_sender(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Calibration folds were bounded by the senders of positives only: a split could hold positives alone."""
    _write_labelled_mail(tmp_path / "mail")
    for path in (tmp_path / "mail" / "ham").iterdir():
        text = path.read_text()
        path.write_text(text.replace(text.split("\n")[0], "From: Boss <boss@example.org>"))
    args = ["train", str(tmp_path / "mail"), "--out", str(tmp_path / "m"), "--folds", "2", "--repeats", "1"]
    assert main(args) == 0
    assert main([*args[:3], str(tmp_path / "m2"), *args[4:], "--group-by", "folder"]) == 0


def _run_with_stdout(argv: list[str], stdout: str, stdin: Any = None) -> subprocess.CompletedProcess[bytes]:
    """Run ployfilter ARGV in a child whose standard output is a full device or closed."""
    code = "import sys; from filter.cli import main; sys.exit(main())"
    with open(os.devnull if stdout == "closed" else "/dev/full", "wb") as out:
        return subprocess.run(
            [sys.executable, "-c", code, *argv],
            stdin=stdin,
            stdout=out,
            stderr=subprocess.PIPE,
            check=False,
            close_fds=True,
            preexec_fn=(lambda: os.close(1)) if stdout == "closed" else None,  # noqa: PLW1509
        )


@pytest.mark.parametrize("args", [["classify", "--json"], ["classify", "--headers"], ["evaluate", "--labels"]])
@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_output_that_cannot_be_written_is_an_error_not_a_traceback_or_a_silent_success(
    args: list[str], stdout: str
) -> None:
    hard_cases = Path(__file__).resolve().parents[1] / "data" / "hard-cases"
    message = str(next(iter(sorted(hard_cases.glob("*.eml")))))
    argv = {"--json": [*args, message], "--headers": args, "--labels": [*args, str(hard_cases / "expected.csv")]}
    argv["--labels"].insert(1, str(hard_cases))
    with open(message, "rb") as stdin:
        result = _run_with_stdout(argv[args[1]], stdout, stdin)
    assert result.returncode == 10, result.stderr
    assert b"Traceback" not in result.stderr
    wanted = b"standard output is closed" if stdout == "closed" else b"cannot write to standard output"
    assert wanted in result.stderr


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["classify", "--help"]])
@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_help_and_version_that_cannot_be_written_are_an_error(args: list[str], stdout: str) -> None:
    result = _run_with_stdout(args, stdout)
    assert result.returncode == 10, result.stderr
    assert b"cannot write to standard output" in result.stderr and b"Traceback" not in result.stderr


def test_help_and_version_are_printed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("ployfilter ")
    assert main(["classify", "--help"]) == 0
    assert "usage: ployfilter classify" in capsys.readouterr().out


def test_a_reader_that_goes_away_ends_classify_quietly() -> None:
    files = [str(p) for p in sorted((Path(__file__).resolve().parents[1] / "data").glob("*.eml"))] * 40
    code = "import sys; from filter.cli import main; sys.exit(main())"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "classify", *files], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()
    process.stdout.close()
    errors = process.stderr.read()
    assert process.wait(timeout=120) == 141
    assert b"Traceback" not in errors


@pytest.mark.parametrize("option", [["--limit", "0"], ["--limit", "-1"], ["--days", "-5"], ["--days", "nan"]])
def test_senders_refuses_a_count_or_a_period_that_means_nothing(
    option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["senders", "-c", "config.yaml", *option])
    assert info.value.code == 2
    assert "is not a" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option", [["--limit", "0"], ["--settled-days", "-1"], ["--settled-days", "inf"], ["--settled-days", "x"]]
)
def test_export_refuses_a_count_or_a_period_that_means_nothing(
    option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["export", "-c", "config.yaml", "--out", "out", *option])
    assert info.value.code == 2
    assert "is not a" in capsys.readouterr().err


def test_export_refuses_two_accounts_that_would_write_one_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "accounts:\n"
        "  - {name: Home, host: 127.0.0.1, security: plain, username: u, password_env: PW}\n"
        "  - {name: home, host: 127.0.0.1, security: plain, username: v, password_env: PW}\n"
    )
    assert main(["export", "-c", str(config), "--out", str(tmp_path / "out")]) == UsageError.exit_code
    assert "'Home' and 'home' would share the folder" in caplog.text
    assert not (tmp_path / "out").exists()


def test_export_refuses_an_account_that_would_make_out_a_maildir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("accounts:\n  - {name: tmp, host: 127.0.0.1, security: plain, username: u, password_env: PW}\n")
    assert main(["export", "-c", str(config), "--out", str(tmp_path / "out")]) == UsageError.exit_code
    assert "Maildir names" in caplog.text


def test_export_file_names_cannot_leave_their_folder() -> None:
    from filter.export import slug

    assert slug("Networking/Articles") == "networking.articles"
    assert slug("../..") == "folder"
    assert slug("Réseau/À lire") == "réseau.à.lire"
    assert "/" not in slug("a/../b") and not slug("/etc").startswith(".")


def _running_config(tmp_path: Path, level: str = "info") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "accounts:\n  - {name: home, host: 127.0.0.1, security: plain, username: u, password_env: PW}\n"
        f"log_level: {level}\n"
    )
    return path


def test_a_reload_that_fails_in_any_way_keeps_the_running_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = _running_config(tmp_path)
    config = load_config(path)

    def broken(_: Path) -> None:
        raise RecursionError("a bug the file found")

    monkeypatch.setattr(filter.cli, "load_config", broken)
    model = SimpleNamespace(thresholds=THRESHOLDS)
    assert filter.cli._reload(config, path, model, {}) is config  # type: ignore[arg-type]
    assert "reload refused" in caplog.text


def test_a_reload_keeps_the_debug_level_asked_for_on_the_command_line(tmp_path: Path) -> None:
    path = _running_config(tmp_path)
    config = load_config(path)
    _running_config(tmp_path, level="warning")
    root = logging.getLogger()
    before = root.level
    try:
        root.setLevel(logging.DEBUG)
        model = SimpleNamespace(thresholds=THRESHOLDS)
        filter.cli._reload(config, path, model, {}, verbose=True)  # type: ignore[arg-type]
        assert root.level == logging.DEBUG
        filter.cli._reload(config, path, model, {}, verbose=False)  # type: ignore[arg-type]
        assert root.level == logging.WARNING
    finally:
        root.setLevel(before)


def test_classify_json_gives_every_file_the_same_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.eml"
    good.write_bytes(b"From: a@example.org\nSubject: hi\n\nSee you at noon.\n")
    assert main(["classify", "--json", str(good), str(tmp_path), str(tmp_path / "missing.eml")]) == 9
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [sorted(r) for r in records] == [
        ["file", "labels", "scores"],
        ["error", "file", "labels", "scores"],
        ["error", "file", "labels", "scores"],
    ]
    assert records[1]["scores"] == {"article_share": 0.0, "favour_request": 0.0} and records[1]["labels"] == []


def test_classify_names_a_file_whose_name_is_not_utf8_in_valid_utf8(tmp_path: Path) -> None:
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.eml"))
    odd.write_bytes(b"From: a@example.org\nSubject: hi\n\nSee you at noon.\n")
    code = "import sys; from filter.cli import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, "classify", "--json", os.fsencode(odd)],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.decode("utf-8"))["file"].endswith("caf\\xe9.eml")


def test_classify_json_is_utf8_whatever_the_locale(tmp_path: Path) -> None:
    names = []
    for name in ("café.eml", "漢字.eml"):
        (tmp_path / name).write_bytes(b"From: a@example.org\nSubject: hi\n\nSee you at noon.\n")
        names.append(str(tmp_path / name))
    code = "import sys; from filter.cli import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, "classify", "--json", *names],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "latin-1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["file"] for line in result.stdout.decode("utf-8").splitlines()] == names


def test_classify_of_a_named_pipe_nobody_writes_to_reads_it_as_empty(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = "import sys; from filter.cli import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, "classify", "--json", str(fifo)], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["note"] == "skipped: empty message"


def test_classify_of_files_works_with_stdin_closed(tmp_path: Path) -> None:
    good = tmp_path / "good.eml"
    good.write_bytes(b"From: a@example.org\nSubject: hi\n\nSee you at noon.\n")
    code = "import os, sys; os.close(0); sys.stdin = None; from filter.cli import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", code, "classify", "--json", str(good), "-"], capture_output=True)
    assert result.returncode == 9
    assert b"Traceback" not in result.stderr
    assert b"stdin is closed" in result.stderr
    assert len(result.stdout.splitlines()) == 2


def test_classify_says_why_a_file_gives_no_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = b"From a@example.org Mon Mar  2 10:00:00 2026\nFrom: a@example.org\nSubject: hi\n\nSee you at noon.\n"
    (tmp_path / "one.mbox").write_bytes(one)
    (tmp_path / "two.mbox").write_bytes(one + b"\n" + one.replace(b"noon", b"one"))
    (tmp_path / "folder").mkdir()
    names = [str(tmp_path / n) for n in ("one.mbox", "two.mbox", "folder", "absent.eml")]
    assert main(["classify", "--json", *names]) == 9
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["file"] for r in records] == names
    assert "error" not in records[0]  # one message after its "From " line: a message file like any other
    assert "error" not in records[1]  # scored as one message, with a warning: a patch attached as text looks alike
    assert f"{names[1]}: looks like an mbox of several messages" in captured.err
    assert f"{names[0]}: looks like" not in captured.err
    assert records[2]["error"].startswith("unreadable file: Is a directory; classify reads message files")
    assert records[3]["error"] == "unreadable file: No such file or directory"
    assert all(r["scores"] == {"article_share": 0.0, "favour_request": 0.0} for r in records[2:])


def test_classify_takes_stdin_once(caplog: pytest.LogCaptureFixture) -> None:
    assert main(["classify", "-", "-"]) == 2
    assert "'-' (stdin) can be given once" in caplog.text


def test_train_refuses_an_out_that_is_a_file_before_reading_any_mail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "afile").write_text("hi")
    assert main(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "afile")]) == 2
    assert "is a file; give a folder" in caplog.text


def test_evaluate_refuses_a_plot_in_a_missing_folder_before_any_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["evaluate", str(tmp_path / "nowhere"), "--plot", str(tmp_path / "no" / "pr.svg")]) == 2
    assert "is not a folder" in caplog.text


def test_train_says_when_label_folders_are_the_cv_groups(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_labelled_mail(tmp_path / "mail")
    args = ["train", str(tmp_path / "mail"), "--out", str(tmp_path / "m"), "--folds", "2", "--repeats", "1"]
    main([*args, "--group-by", "folder"])
    assert "holds one kind of mail only" in caplog.text


class _Runner:
    def __init__(self, account: Any) -> None:
        self.account = account
        self.taken: list[Any] = []

    def reconfigure(self, config: Any, account: Any, thresholds: Any) -> None:
        self.account = account
        self.taken.append((config, account))


def test_a_key_that_needs_a_restart_is_never_taken_over_by_a_later_reload(tmp_path: Path) -> None:
    path = _running_config(tmp_path)
    config = load_config(path)
    runner = _Runner(config.accounts[0])
    model = SimpleNamespace(thresholds=THRESHOLDS)
    path.write_text(path.read_text().replace("password_env: PW}", "password_env: PW, watch: Other}"))
    config = filter.cli._reload(config, path, model, {"home": runner})  # type: ignore[arg-type,dict-item]
    path.write_text(path.read_text() + "thresholds: {article_share: 0.6}\n")
    config = filter.cli._reload(config, path, model, {"home": runner})  # type: ignore[arg-type,dict-item]
    assert runner.account.watch == "INBOX" and config.accounts[0].watch == "INBOX"
    assert config.thresholds == {"article_share": 0.6}


def test_once_goes_on_with_the_other_accounts_when_one_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from filter.errors import AuthError

    path = tmp_path / "config.yaml"
    path.write_text(
        "accounts:\n"
        "  - {name: work, host: 127.0.0.1, security: plain, username: u, password_env: PW}\n"
        "  - {name: home, host: 127.0.0.1, security: plain, username: u, password_env: PW}\n"
        f"state_path: {tmp_path / 'state.sqlite3'}\n"
    )
    done: list[str] = []

    def one_pass(config: Any, account: Any, model: Any, state: Any) -> Any:
        if account.name == "work":
            raise AuthError("account work: login refused")
        done.append(account.name)
        return SimpleNamespace(
            account=account.name, outcomes=[], count=lambda a: 0, carried_over=0, recovered=0, refused=0, seconds=0.1
        )

    monkeypatch.setattr(filter.cli, "one_pass", one_pass)
    assert main(["once", "-c", str(path)]) == 4
    assert done == ["home"]
    assert "home: 0 new messages" in capsys.readouterr().out


def test_once_exits_8_when_the_server_refused_a_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "accounts:\n  - {name: home, host: 127.0.0.1, security: plain, username: u, password_env: PW}\n"
        f"state_path: {tmp_path / 'state.sqlite3'}\n"
    )
    report = PassReport("home", 1, refused=2)
    monkeypatch.setattr(filter.cli, "one_pass", lambda config, account, model, state: report)
    assert main(["once", "-c", str(path)]) == 8
    assert "2 refused by the server and left in place (tried again next pass)" in capsys.readouterr().out


def test_train_grouped_by_sender_does_not_warn_about_one_kind_per_group(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_labelled_mail(tmp_path / "mail")
    main(["train", str(tmp_path / "mail"), "--out", str(tmp_path / "m"), "--folds", "2", "--repeats", "1"])
    assert "holds one kind of mail only" not in caplog.text


def test_headers_read_the_ledger_as_the_daemon_does_nothing_dated_later(tmp_path: Path) -> None:
    import time as clock

    from filter.state import DecisionRecord, State

    state_path = tmp_path / "state.sqlite3"
    now = clock.time()
    state = State.open(state_path)
    for n in range(3):  # three shares in the last hours...
        share = DecisionRecord(n, "", {}, "move", "A", (), (), "s@growth.example", ("article_share",), now - 3600 * n)
        state.record("home", "INBOX", 1, f"k{n}", share, now)
    state.close()
    config = tmp_path / "config.yaml"
    config.write_text(
        "accounts:\n  - {name: home, host: 127.0.0.1, security: plain, username: u, password_env: PW}\n"
        f"state_path: {state_path}\n"
    )
    loaded = load_config(config)
    ask = b"From: s@growth.example\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\nSubject: x\r\n\r\nhelp?\r\n"
    scores = {"article_share": 0.1, "favour_request": 0.95}  # ...and an ask dated long before them
    assert filter.cli._filter_keywords(loaded, ask, "s@growth.example", scores, THRESHOLDS) == ("$PloyFavour",)


def test_headers_still_answer_when_the_state_is_too_old_to_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    state_path = tmp_path / "state.sqlite3"
    old = sqlite3.connect(state_path)
    old.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); INSERT INTO meta VALUES ('schema', '3');"
    )
    old.commit()
    old.close()
    config = tmp_path / "config.yaml"
    config.write_text(
        "accounts:\n  - {name: home, host: 127.0.0.1, security: plain, username: u, password_env: PW}\n"
        f"state_path: {state_path}\n"
    )
    ask = b"From: s@growth.example\r\nSubject: x\r\n\r\nhelp?\r\n"
    scores = {"article_share": 0.1, "favour_request": 0.95}
    keywords = filter.cli._filter_keywords(load_config(config), ask, "s@growth.example", scores, THRESHOLDS)
    assert keywords == ("$PloyFavour",)
    assert "older ployfilter (schema 3, now 4)" in caplog.text and "judged without the sender's history" in caplog.text
    assert sqlite3.connect(state_path).execute("SELECT value FROM meta").fetchone() == ("3",), "left for the daemon"


def test_labels_given_before_data_are_explained(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hard_cases = Path(__file__).resolve().parents[1] / "data" / "hard-cases"
    labels = str(hard_cases / "expected.csv")
    assert main(["evaluate", "--labels", labels, str(hard_cases)]) == 2
    assert "evaluate: no DATA to read; give the mail folders or files first" in caplog.text
    caplog.clear()
    assert main(["evaluate", str(hard_cases), "--labels", labels, str(hard_cases)]) == 2
    assert "a folder, not a label file; --labels takes every path after it, so give DATA first" in caplog.text


class _Box:
    connects = 0

    def connect(self) -> None:
        _Box.connects += 1

    def close(self) -> None:
        pass


def _losing_runner(losses: list[tuple[ConnectionLost, bool]]) -> type:
    """An AccountRunner stand-in: each pass settles one message, then loses the session while losses are left.

    Each loss says whether the session counted a fetch try before it ended.
    """

    class Runner:
        def __init__(self, *args: Any) -> None:
            self.report: PassReport | None = None
            self.uid = 0
            self.tries_counted = 0

        def prepare(self) -> None:
            pass

        def pass_once(self) -> PassReport:
            self.uid += 1
            self.report = PassReport("home", 1, [Outcome(self.uid, "", "skip", None, {}, ())], recovered=1)
            if losses:
                loss, tried = losses.pop(0)
                self.tries_counted += tried
                raise loss
            return self.report

    return Runner


_BYE, _RESET = ConnectionLost("BYE", by_server=True), ConnectionLost("reset")


@pytest.mark.parametrize(
    ("losses", "passes"),
    [
        ([(_BYE, False), (_BYE, False)], 3),
        ([(_RESET, False)], None),
        ([(_BYE, False)] * (filter.cli.ONCE_RECONNECTS + 1), None),
        ([(_RESET, True)] * 30 + [(_BYE, True)] * 30, 61),  # each session tried a failed message: bounded
    ],
)
def test_once_connects_again_when_the_server_ended_the_session_or_a_failed_message_was_tried(
    monkeypatch: pytest.MonkeyPatch, losses: list[tuple[ConnectionLost, bool]], passes: int | None
) -> None:
    import filter.runner

    _Box.connects = 0
    count = len(losses)
    monkeypatch.setattr(filter.cli, "_mailbox", lambda config, account: _Box())
    monkeypatch.setattr(filter.runner, "AccountRunner", _losing_runner(list(losses)))
    config = None  # read only by the stand-ins
    account = SimpleNamespace(name="home")
    model = SimpleNamespace(thresholds={"article_share": 0.5, "favour_request": 0.5})
    if passes is None:
        with pytest.raises(ConnectError, match="connection lost during the pass"):
            filter.cli.one_pass(config, account, model, None)  # type: ignore[arg-type]
        assert _Box.connects == count
        return
    report = filter.cli.one_pass(config, account, model, None)  # type: ignore[arg-type]
    assert _Box.connects == passes
    assert [o.uid for o in report.outcomes] == list(range(1, passes + 1))  # the interrupted passes' work counts
    assert report.recovered == passes


def test_the_entry_point_loads_nothing_heavy() -> None:
    code = (
        "import sys, filter.entry; print(sorted(m for m in sys.modules if m.startswith(('filter.', 'yaml', 'numpy'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['filter.entry']"


@pytest.mark.parametrize(
    "argv, ignored",
    [(["run", "-c", "c.yaml"], True), (["-v", "run"], True), (["classify", "run"], False), (["once"], False)],
)
def test_run_ignores_sighup_before_the_rest_loads(
    argv: list[str], ignored: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[object] = []
    fake = ModuleType("filter.cli")
    fake.main = lambda: seen.append(signal.getsignal(signal.SIGHUP)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "filter.cli", fake)
    monkeypatch.setattr(sys, "argv", ["ployfilter", *argv])
    before = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        assert entry.main() == 0
    finally:
        signal.signal(signal.SIGHUP, before)
    assert (seen == [signal.SIG_IGN]) is ignored
