"""The pure decision: scores and thresholds in, action and reasons out."""

from __future__ import annotations

from filter.policy import decide, skip

THRESHOLDS = {"article_share": 0.8, "favour_request": 0.8}
FOLDERS = {"article_share": "Networking/Articles", "favour_request": "Networking/Requests"}


def test_below_both_thresholds_keeps() -> None:
    d = decide({"article_share": 0.79, "favour_request": 0.1}, THRESHOLDS, FOLDERS, "move")
    assert (d.action, d.target, d.labels) == ("keep", None, ())


def test_threshold_is_inclusive() -> None:
    d = decide({"article_share": 0.8, "favour_request": 0.0}, THRESHOLDS, FOLDERS, "move")
    assert (d.action, d.target) == ("move", "Networking/Articles")


def test_article_moves_to_article_folder() -> None:
    d = decide({"article_share": 0.95, "favour_request": 0.1}, THRESHOLDS, FOLDERS, "move")
    assert d.target == "Networking/Articles"
    assert d.keywords == ("$PloyArticle",)


def test_both_labels_go_to_the_request_folder() -> None:
    d = decide({"article_share": 0.95, "favour_request": 0.9}, THRESHOLDS, FOLDERS, "move")
    assert d.target == "Networking/Requests"
    assert d.labels == ("article_share", "favour_request")


def test_flag_mode_keeps_in_place_with_keywords() -> None:
    d = decide({"article_share": 0.1, "favour_request": 0.9}, THRESHOLDS, FOLDERS, "flag")
    assert (d.action, d.target, d.keywords) == ("flag", None, ("$PloyFavour",))


def test_dry_run_decides_as_move_does() -> None:
    scores = {"article_share": 0.9, "favour_request": 0.2}
    assert decide(scores, THRESHOLDS, FOLDERS, "dry-run") == decide(scores, THRESHOLDS, FOLDERS, "move")


def test_reasons_show_each_score_against_its_threshold() -> None:
    d = decide({"article_share": 0.91, "favour_request": 0.2}, THRESHOLDS, FOLDERS, "move")
    assert d.reasons == ("article_share 0.91 >= 0.80", "favour_request 0.20 < 0.80")


def test_lower_threshold_changes_the_decision() -> None:
    scores = {"article_share": 0.6, "favour_request": 0.0}
    assert decide(scores, THRESHOLDS, FOLDERS, "move").action == "keep"
    assert decide(scores, {**THRESHOLDS, "article_share": 0.5}, FOLDERS, "move").action == "move"


def test_skip_leaves_in_place_with_its_reason() -> None:
    d = skip("unreadable")
    assert (d.action, d.target, d.reasons) == ("skip", None, ("unreadable",))
