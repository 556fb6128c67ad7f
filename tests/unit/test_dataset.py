"""Labelled mail on disk: folder-name and CSV labels, Maildir, mbox, CV groups, bad files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from filter.dataset import Dataset, folder_labels, read_labelled
from filter.errors import UsageError

ARTICLE = {"article_share": True, "favour_request": False}
FAVOUR = {"article_share": False, "favour_request": True}
BOTH = {"article_share": True, "favour_request": True}
NEITHER = {"article_share": False, "favour_request": False}


def mail(sender: str = "Ann <ann@example.org>", subject: str = "hello", body: str = "See you at the meeting.") -> bytes:
    return f"From: {sender}\nTo: me@example.org\nSubject: {subject}\n\n{body}\n".encode()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def by_name(dataset: Dataset) -> dict[str, dict[str, bool]]:
    return {Path(m.id).name: dict(m.labels) for m in dataset.messages}


def test_folder_names_give_labels(tmp_path: Path) -> None:
    write(tmp_path / "Articles" / "a.eml", mail())
    write(tmp_path / "favours" / "f.eml", mail())
    write(tmp_path / "both" / "b.eml", mail())
    write(tmp_path / "ham" / "deep" / "n.eml", mail())
    assert by_name(read_labelled([tmp_path])) == {"a.eml": ARTICLE, "f.eml": FAVOUR, "b.eml": BOTH, "n.eml": NEITHER}


def test_the_deepest_label_folder_wins() -> None:
    assert folder_labels(["ham", "2024", "articles"]) == ARTICLE
    assert folder_labels(["mail", "2024"]) is None


def test_a_data_path_that_is_itself_a_label_folder_labels_its_mail(tmp_path: Path) -> None:
    write(tmp_path / "inbox" / "n.eml", mail())
    assert by_name(read_labelled([tmp_path / "inbox"])) == {"n.eml": NEITHER}
    assert by_name(read_labelled([tmp_path / "inbox" / "n.eml"])) == {"n.eml": NEITHER}


def test_folders_above_the_data_path_do_not_label(tmp_path: Path) -> None:
    write(tmp_path / "articles" / "mail" / "a.eml", mail())
    with pytest.raises(UsageError, match="1 messages have no label"):
        read_labelled([tmp_path / "articles" / "mail"])


def test_csv_labels_are_read_relative_to_the_csv_folder(tmp_path: Path) -> None:
    write(tmp_path / "en" / "en-001.eml", mail())
    write(tmp_path / "en" / "en-002.eml", mail())
    write(tmp_path / "en" / "en-003.eml", mail())
    labels = tmp_path / "labels-en.csv"
    labels.write_text(
        "path,article_share,favour_request,lang,note\n"
        "en/en-001.eml,1,0,en,\n"
        "en/en-002.eml,yes,yes,en,\n"
        "en/en-003.eml,?,0,en,unsure\n"
    )
    dataset = read_labelled([tmp_path / "en"], label_files=[labels])
    assert by_name(dataset) == {"en-001.eml": ARTICLE, "en-002.eml": BOTH}
    assert [Path(i).name for i in dataset.undecided] == ["en-003.eml"]


def test_csv_labels_win_over_folder_names(tmp_path: Path) -> None:
    write(tmp_path / "ham" / "x.eml", mail())
    labels = tmp_path / "labels.csv"
    labels.write_text("path,article_share,favour_request\nham/x.eml,0,1\n")
    assert by_name(read_labelled([tmp_path], label_files=[labels])) == {"x.eml": FAVOUR}


def test_a_label_file_that_names_nothing_found_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "mail" / "ham" / "x.eml", mail())
    labels = tmp_path / "mail" / "ham" / "labels.csv"
    labels.write_text("path,article_share,favour_request\nham/x.eml,0,1\n")
    assert by_name(read_labelled([tmp_path / "mail"], label_files=[labels])) == {"x.eml": NEITHER}
    assert f"no row of {labels} names a file under the DATA paths" in caplog.text


def test_several_label_files_label_one_data_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the owner's exported mail (labelled by folder) beside written mail labelled by two files
    write(tmp_path / "mine" / "favours" / "m.eml", mail())
    write(tmp_path / "written" / "en" / "en-001.eml", mail())
    write(tmp_path / "written" / "fr" / "fr-001.eml", mail())
    en = write(tmp_path / "written" / "labels-en.csv", b"path,article_share,favour_request\nen/en-001.eml,1,0\n")
    fr = write(tmp_path / "written" / "labels-fr.csv", b"path,article_share,favour_request\nfr/fr-001.eml,0,0\n")
    dataset = read_labelled([tmp_path / "mine", tmp_path / "written"], label_files=[en, fr, en])
    assert by_name(dataset) == {"m.eml": FAVOUR, "en-001.eml": ARTICLE, "fr-001.eml": NEITHER}
    assert dataset.labels_from == f"{en}, {fr} and folder names"
    assert "name no message" not in caplog.text and "no row of" not in caplog.text


def test_two_label_files_that_disagree_are_a_usage_error(tmp_path: Path) -> None:
    write(tmp_path / "x.eml", mail())
    one = write(tmp_path / "one.csv", b"path,article_share,favour_request\nx.eml,1,0\n")
    two = write(tmp_path / "two.csv", b"path,article_share,favour_request\nx.eml,0,0\n")
    same = write(tmp_path / "same.csv", b"path,article_share,favour_request\nx.eml,1,0\n")
    assert by_name(read_labelled([tmp_path / "x.eml"], label_files=[one, same])) == {"x.eml": ARTICLE}
    with pytest.raises(UsageError, match=r"two.csv: .*x.eml is also in .*one.csv with different labels"):
        read_labelled([tmp_path / "x.eml"], label_files=[one, two])


def test_a_bad_label_file_is_a_usage_error(tmp_path: Path) -> None:
    write(tmp_path / "ham" / "x.eml", mail())
    labels = tmp_path / "labels.csv"
    labels.write_text("path,article_share\nham/x.eml,1\n")
    with pytest.raises(UsageError, match="missing column"):
        read_labelled([tmp_path], label_files=[labels])
    with pytest.raises(UsageError, match="cannot read"):
        read_labelled([tmp_path], label_files=[tmp_path / "absent.csv"])


def test_unlabelled_mail_is_an_error_that_counts_and_names_it(tmp_path: Path) -> None:
    write(tmp_path / "ham" / "n.eml", mail())
    write(tmp_path / "misc" / "u1.eml", mail())
    write(tmp_path / "misc" / "u2.eml", mail())
    with pytest.raises(UsageError, match=r"2 messages have no label \(.*u1\.eml.*--skip-unlabelled"):
        read_labelled([tmp_path])


def test_unlabelled_mail_can_be_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "ham" / "n.eml", mail())
    write(tmp_path / "misc" / "u.eml", mail())
    dataset = read_labelled([tmp_path], skip_unlabelled=True)
    assert by_name(dataset) == {"n.eml": NEITHER}
    assert len(dataset.unlabelled) == 1
    assert "1 messages have no label and are left out" in caplog.text


def test_maildir_cur_and_new_are_read_and_tmp_is_not(tmp_path: Path) -> None:
    box = tmp_path / "Maildir" / ".Articles"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    write(box / "cur" / "1700000000.1.host:2,S", mail())
    write(box / "new" / "1700000001.2.host", mail())
    write(box / "tmp" / "1700000002.3.host", mail())
    write(box / "dovecot-uidlist", b"3 V1 N4\n")
    dataset = read_labelled([tmp_path / "Maildir"])
    assert sorted(Path(m.id).parent.name for m in dataset.messages) == ["cur", "new"]
    assert all(m.labels == ARTICLE for m in dataset.messages)


def test_each_mbox_message_is_one_item_labelled_by_the_mbox_name(tmp_path: Path) -> None:
    box = tmp_path / "favours.mbox"
    box.write_bytes(
        b"From ann@example.org Mon Jan  1 00:00:00 2026\n"
        + mail("ann@example.org", "first")
        + b"\nFrom bob@example.org Mon Jan  1 00:00:00 2026\n"
        + mail("bob@example.org", "second")
    )
    dataset = read_labelled([tmp_path])
    assert [m.id for m in dataset.messages] == [f"{box}#1", f"{box}#2"]
    assert [m.message.subject for m in dataset.messages] == ["first", "second"]
    assert all(m.labels == FAVOUR for m in dataset.messages)


def test_csv_rows_can_name_one_mbox_message(tmp_path: Path) -> None:
    box = tmp_path / "mail.mbox"
    box.write_bytes(
        b"From a@example.org Mon Jan  1 00:00:00 2026\n"
        + mail("a@example.org")
        + b"\nFrom b@example.org Mon Jan  1 00:00:00 2026\n"
        + mail("b@example.org")
    )
    labels = tmp_path / "labels.csv"
    labels.write_text("path,article_share,favour_request\nmail.mbox#2,1,0\n")
    dataset = read_labelled([box], label_files=[labels], skip_unlabelled=True)
    assert [(m.id, dict(m.labels)) for m in dataset.messages] == [(f"{box}#2", ARTICLE)]


def test_groups_are_the_lower_cased_sender_address_by_default(tmp_path: Path) -> None:
    write(tmp_path / "articles" / "a.eml", mail("Ann <Ann@Example.org>"))
    write(tmp_path / "ham" / "b.eml", mail("ann@example.org"))
    write(tmp_path / "ham" / "c.eml", b"Subject: no sender\n\nSee you at the meeting.\n")
    groups = {Path(m.id).name: m.group for m in read_labelled([tmp_path]).messages}
    assert groups["a.eml"] == groups["b.eml"] == "sender:ann@example.org"
    assert groups["c.eml"] != groups["b.eml"]


def test_groups_can_be_the_folder(tmp_path: Path) -> None:
    write(tmp_path / "ham" / "a.eml", mail("ann@example.org"))
    write(tmp_path / "ham" / "b.eml", mail("bob@example.org"))
    write(tmp_path / "articles" / "c.eml", mail("ann@example.org"))
    groups = {Path(m.id).name: m.group for m in read_labelled([tmp_path], group_by="folder").messages}
    assert groups["a.eml"] == groups["b.eml"] != groups["c.eml"]


def test_bad_files_are_skipped_with_a_log_line_naming_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "ham" / "good.eml", mail())
    write(tmp_path / "ham" / "empty.eml", b"")
    write(tmp_path / "ham" / "binary.eml", bytes(range(256)) * 8)
    (tmp_path / "ham" / "gone.eml").symlink_to(tmp_path / "nowhere.eml")
    with caplog.at_level(logging.WARNING):
        dataset = read_labelled([tmp_path])
    assert by_name(dataset) == {"good.eml": NEITHER}
    assert sorted(Path(i).name for i in dataset.unreadable) == ["binary.eml", "empty.eml", "gone.eml"]
    for name in ("binary.eml", "empty.eml", "gone.eml"):
        assert name in caplog.text


def test_files_that_are_not_mail_are_ignored(tmp_path: Path) -> None:
    write(tmp_path / "ham" / "a.eml", mail())
    write(tmp_path / "ham" / "README.txt", b"notes about this folder\n")
    write(tmp_path / "ham" / ".hidden.eml", mail())
    assert by_name(read_labelled([tmp_path])) == {"a.eml": NEITHER}


def test_a_file_reached_twice_is_read_once(tmp_path: Path) -> None:
    write(tmp_path / "ham" / "a.eml", mail())
    assert len(read_labelled([tmp_path, tmp_path / "ham" / "a.eml"]).messages) == 1


def test_messages_are_read_up_to_the_byte_cap(tmp_path: Path) -> None:
    write(tmp_path / "ham" / "long.eml", mail(body="start " + "x" * 10000 + " TAIL"))
    (message,) = read_labelled([tmp_path], max_bytes=4096).messages
    assert message.message.own_text.startswith("start")
    assert "TAIL" not in message.message.own_text


def test_a_missing_data_path_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file or folder"):
        read_labelled([tmp_path / "absent"])


def test_a_label_csv_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    write(tmp_path / "mail" / "x.eml", mail())
    labels = tmp_path / "labels.csv"
    labels.write_bytes("\ufeffpath,article_share,favour_request\nmail/x.eml,1,0\n".encode())
    assert by_name(read_labelled([tmp_path / "mail"], label_files=[labels])) == {"x.eml": ARTICLE}


@pytest.mark.parametrize(
    "text, where",
    [
        # a quote that never closes would swallow the rows after it; in the header, the whole file
        ('path,article_share,favour_request,note\nmail/x.eml,1,0,"read this, he said\nmail/y.eml,0,0,\n', 2),
        ('path,article_share,"favour_request\nmail/x.eml,1,0\n', 1),
    ],
)
def test_a_quote_never_closed_in_the_label_csv_is_named_with_its_line(tmp_path: Path, text: str, where: int) -> None:
    write(tmp_path / "mail" / "x.eml", mail())
    labels = tmp_path / "labels.csv"
    labels.write_text(text)
    with pytest.raises(UsageError, match=rf"labels.csv:{where}: a quote opened on or after this line never closes"):
        read_labelled([tmp_path / "mail"], label_files=[labels])


def test_a_row_listed_twice_with_different_labels_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "mail" / "x.eml", mail())
    labels = tmp_path / "labels.csv"
    labels.write_text("path,article_share,favour_request\nmail/x.eml,1,0\nmail/x.eml,0,0\n")
    with pytest.raises(UsageError, match="listed twice with different labels"):
        read_labelled([tmp_path / "mail"], label_files=[labels])


def test_rows_that_name_no_message_are_counted_in_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "mail" / "x.eml", mail())
    labels = tmp_path / "labels.csv"
    labels.write_text("path,article_share,favour_request\nmail/x.eml,1,0\nmail/nothere.eml,1,0\n")
    read_labelled([tmp_path / "mail"], label_files=[labels])
    assert "1 rows of" in caplog.text and "nothere.eml" in caplog.text


def test_a_symlink_loop_is_skipped_as_unreadable(tmp_path: Path) -> None:
    write(tmp_path / "ham" / "ok.eml", mail())
    (tmp_path / "ham" / "a.eml").symlink_to("b.eml")
    (tmp_path / "ham" / "b.eml").symlink_to("a.eml")
    dataset = read_labelled([tmp_path])
    assert by_name(dataset) == {"ok.eml": NEITHER}
    assert sorted(Path(i).name for i in dataset.unreadable) == ["a.eml", "b.eml"]


def test_a_pipe_in_the_tree_is_skipped_without_waiting_on_it(tmp_path: Path) -> None:
    write(tmp_path / "ham" / "ok.eml", mail())
    os.mkfifo(tmp_path / "ham" / "pipe")
    dataset = read_labelled([tmp_path])
    assert by_name(dataset) == {"ok.eml": NEITHER}
    assert [Path(i).name for i in dataset.unreadable] == ["pipe"]


def test_an_mbox_without_messages_is_named_in_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "ham" / "ok.eml", mail())
    write(tmp_path / "articles.mbox", mail())  # one message, but no "From " line: not an mbox
    dataset = read_labelled([tmp_path])
    assert "articles.mbox: no messages in it" in caplog.text
    assert [Path(i).name for i in dataset.unreadable] == ["articles.mbox"]


@pytest.mark.parametrize(
    "row, note",
    [('mail/x.eml,1,0,"Nature" piece', "Nature piece"), ("mail/x.eml,1,0,", ""), ("mail/x.eml,1,0,ok,", "ok")],
)
def test_label_csv_rows_spreadsheets_write_are_read(tmp_path: Path, row: str, note: str) -> None:
    from filter.train import read_label_file

    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,article_share,favour_request,note\n{row}\n")
    (only,) = read_label_file(labels, id_column="path")
    assert (only.id, only.labels, only.note) == ("mail/x.eml", ARTICLE, note)


def test_empty_label_cells_are_undecided_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from filter.train import read_label_file

    labels = tmp_path / "labels.csv"
    labels.write_text("path,article_share,favour_request\na.eml,1,0\nb.eml,1\nc.eml,,0\n")
    rows = read_label_file(labels, id_column="path")
    assert [r.labels for r in rows] == [ARTICLE, None, None]
    assert "2 rows leave a label empty (line 3, 4): read as '?', undecided, and left out" in caplog.text


def test_one_label_file_named_twice_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "x.eml", mail())
    labels = write(tmp_path / "labels.csv", b"path,article_share,favour_request\nx.eml,1,0\n")
    monkeypatch.chdir(tmp_path)
    dataset = read_labelled([tmp_path / "x.eml"], label_files=[labels, Path("labels.csv"), Path("./labels.csv")])
    assert by_name(dataset) == {"x.eml": ARTICLE}
    assert dataset.labels_from.count("labels.csv") == 1
    assert len(dataset.label_files) == 1  # what a trained model's card lists


def test_a_quote_never_closed_before_a_long_file_is_named_with_its_line(tmp_path: Path) -> None:
    """csv stops at its field size limit (128 KiB) before it reaches the end of the file."""
    write(tmp_path / "mail" / "x.eml", mail())
    labels = tmp_path / "labels.csv"
    rows = ["path,article_share,favour_request", '"mail/x.eml,1,0', *["mail/y.eml,0,0,padding padding"] * 6000]
    labels.write_text("\n".join(rows) + "\n")
    with pytest.raises(UsageError, match=r"labels.csv:2: a field of more than 131,072 characters begins"):
        read_labelled([tmp_path / "mail"], label_files=[labels])


def test_a_nul_in_a_label_csv_path_names_no_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "mail" / "x.eml", mail())
    labels = tmp_path / "labels.csv"
    labels.write_text("path,article_share,favour_request\nmail/x.eml,1,0\nmail/x.eml\0,0,0\n")
    data = read_labelled([tmp_path / "mail"], label_files=[labels])
    assert list(by_name(data).values()) == [{"article_share": True, "favour_request": False}]
    assert "1 row" in caplog.text
