"""Metrics on hand-made arrays, the text and JSON reports, and the precision-recall SVG."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from filter.errors import UsageError
from filter.evaluate import (
    Counts,
    counts,
    curves,
    evaluate,
    format_report,
    format_sweep,
    report_dict,
    svg_plot,
    sweep,
    sweep_dict,
    write_plot,
)

THRESHOLDS = {"article_share": 0.5, "favour_request": 0.7}
SVG = "{http://www.w3.org/2000/svg}"

# Six messages: (article_share, favour_request) truth, their scores, their language.
TRUTH = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [0, 0], [0, 0]])
SCORES = np.array([[0.9, 0.1], [0.4, 0.8], [0.2, 0.75], [0.6, 0.1], [0.1, 0.2], [0.3, 0.9]])
LANGUAGES = ["en", "fr", "en", "en", "fr", "fr"]


def test_counts_are_the_confusion_matrix() -> None:
    c = counts(np.array([1, 1, 0, 0, 1]), np.array([1, 0, 1, 0, 1]))
    assert c == Counts(tp=2, fp=1, fn=1, tn=1)
    assert c.precision == pytest.approx(2 / 3)
    assert c.recall == pytest.approx(2 / 3)
    assert c.f1 == pytest.approx(2 / 3)


def test_precision_is_unknown_when_nothing_is_flagged_and_recall_when_nothing_is_to_find() -> None:
    assert Counts(tp=0, fp=0, fn=3, tn=5).precision is None
    assert Counts(tp=0, fp=2, fn=0, tn=5).recall is None
    assert Counts(tp=0, fp=2, fn=3, tn=5).f1 == 0.0


def test_f1_is_zero_when_something_was_to_find_or_flagged_and_unknown_only_when_neither() -> None:
    assert Counts(tp=0, fp=0, fn=3, tn=5).f1 == 0.0  # positives, none found: 0, not unknown
    assert Counts(tp=0, fp=2, fn=0, tn=5).f1 == 0.0  # no positives, two flagged
    assert Counts(tp=0, fp=0, fn=0, tn=5).f1 is None


def test_the_share_flagged_is_unknown_without_ordinary_mail() -> None:
    truth = np.array([[1, 0], [0, 1]])
    report = evaluate(truth, np.array([[0.9, 0.1], [0.2, 0.9]]), THRESHOLDS, ["en"] * 2)
    assert report.ordinary.share is None
    assert format_report(report).splitlines()[-1].startswith("ordinary mail flagged: 0 of 0")
    assert report_dict(report)["ordinary_flagged"]["share"] is None


def test_per_label_metrics_at_the_thresholds() -> None:
    report = evaluate(TRUTH, SCORES, THRESHOLDS, LANGUAGES)
    article, favour = report.labels
    assert article.counts == Counts(tp=1, fp=1, fn=1, tn=3)
    assert favour.counts == Counts(tp=2, fp=1, fn=0, tn=3)
    assert favour.threshold == 0.7
    assert favour.counts.precision == pytest.approx(2 / 3)
    assert favour.counts.recall == 1.0


def test_per_language_metrics() -> None:
    report = evaluate(TRUTH, SCORES, THRESHOLDS, LANGUAGES)
    article = report.labels[0]
    assert report.by_language == {"en": 3, "fr": 3}
    assert article.by_language["en"] == Counts(tp=1, fp=1, fn=0, tn=1)
    assert article.by_language["fr"] == Counts(tp=0, fp=0, fn=1, tn=2)


def test_ordinary_mail_flagged_is_the_share_of_messages_labelled_neither_that_got_a_label() -> None:
    report = evaluate(TRUTH, SCORES, THRESHOLDS, LANGUAGES)
    assert (report.ordinary.messages, report.ordinary.flagged) == (3, 2)
    assert report.ordinary.share == pytest.approx(2 / 3)
    assert (report.ordinary_by_language["en"].messages, report.ordinary_by_language["en"].flagged) == (1, 1)
    assert (report.ordinary_by_language["fr"].messages, report.ordinary_by_language["fr"].flagged) == (2, 1)


def test_a_sweep_moves_one_threshold_and_keeps_the_other_label_at_its_own() -> None:
    rows = sweep(TRUTH, SCORES, THRESHOLDS, points=(0.3, 0.8, 0.95))
    got = {(r.label, r.threshold): (r.counts.tp, r.counts.fp, r.counts.fn, r.ordinary.flagged, r.current) for r in rows}
    assert list(got) == [
        ("article_share", 0.3),
        ("article_share", 0.5),
        ("article_share", 0.8),
        ("article_share", 0.95),
        ("favour_request", 0.3),
        ("favour_request", 0.7),
        ("favour_request", 0.8),
        ("favour_request", 0.95),
    ]
    assert got["article_share", 0.3] == (2, 2, 0, 2, False)
    assert got["article_share", 0.5] == (1, 1, 1, 2, True)  # the report's own row
    assert got["favour_request", 0.8] == (1, 1, 1, 2, False)
    assert got["favour_request", 0.95] == (0, 0, 2, 1, False)  # only the article label still flags one
    text = format_sweep(rows).splitlines()
    assert " ".join(text[3].split()) == "0.5 0.500 0.500 0.500 1 1 1 2 of 3 (66.7%) <- now"
    as_json = sweep_dict(rows)
    assert as_json["favour_request"][3]["ordinary_flagged"] == {"messages": 3, "flagged": 1, "share": 0.3333}
    assert as_json["favour_request"][3]["recall"] == 0.0


def test_average_precision_is_none_for_a_label_without_positives() -> None:
    truth = np.array([[1, 0], [0, 0], [0, 0]])
    report = evaluate(truth, np.array([[0.9, 0.1], [0.2, 0.9], [0.1, 0.1]]), THRESHOLDS, ["en"] * 3)
    assert report.labels[0].average_precision == 1.0
    assert report.labels[1].average_precision is None


def test_the_text_report_has_a_row_per_label_and_language_and_the_ordinary_share() -> None:
    text = format_report(evaluate(TRUTH, SCORES, THRESHOLDS, LANGUAGES))
    lines = text.splitlines()
    assert lines[0] == "6 messages (en 3, fr 3)"
    row = next(line for line in lines if line.startswith("favour_request"))
    assert " ".join(row.split()) == "favour_request all 0.700 2 0.667 1.000 0.800 2 1 0 3 0.583"
    fr_article = lines[lines.index(next(line for line in lines if line.startswith("article_share"))) + 2]
    assert " ".join(fr_article.split()) == "fr 1 - 0.000 0.000 0 0 1 2"
    assert lines[-1] == "ordinary mail flagged: 2 of 3 (66.7%); en 1 of 1 (100.0%), fr 1 of 2 (50.0%)"


def test_the_json_report_has_confusion_counts_per_label_and_language() -> None:
    data = json.loads(json.dumps(report_dict(evaluate(TRUTH, SCORES, THRESHOLDS, LANGUAGES))))
    article = data["labels"]["article_share"]
    assert {k: article[k] for k in ("tp", "fp", "fn", "tn", "positives")} == {
        "tp": 1,
        "fp": 1,
        "fn": 1,
        "tn": 3,
        "positives": 2,
    }
    assert article["by_language"]["fr"]["precision"] is None
    assert data["ordinary_flagged"]["share"] == pytest.approx(0.6667)
    assert data["ordinary_flagged"]["by_language"]["fr"] == {"messages": 2, "flagged": 1, "share": 0.5}


def test_curves_mark_the_point_at_the_threshold_and_skip_labels_without_positives() -> None:
    report = evaluate(TRUTH, SCORES, THRESHOLDS, LANGUAGES)
    article, favour = curves(TRUTH, SCORES, report)
    assert article.point == (0.5, 0.5)
    assert favour.point == pytest.approx((1.0, 2 / 3))
    no_favours = np.array([[1, 0], [0, 0], [0, 0]])
    single = evaluate(no_favours, SCORES[:3], THRESHOLDS, ["en"] * 3)
    assert [c.label for c in curves(no_favours, SCORES[:3], single)] == ["article_share"]


def test_the_svg_is_well_formed_with_one_curve_and_one_threshold_point_per_label() -> None:
    report = evaluate(TRUTH, SCORES, THRESHOLDS, LANGUAGES)
    root = ET.fromstring(svg_plot(curves(TRUTH, SCORES, report), title="PR <test> & more"))
    assert root.tag == SVG + "svg"
    paths = [e for e in root.iter(SVG + "path") if e.get("class") == "curve"]
    assert [p.get("data-label") for p in paths] == ["article_share", "favour_request"]
    assert all(p.get("d", "").startswith("M") for p in paths)
    assert len([e for e in root.iter(SVG + "circle") if e.get("class") == "threshold"]) == 2
    texts = [e.text or "" for e in root.iter(SVG + "text")]
    assert "PR <test> & more" in texts
    assert {"Recall", "Precision", "0.0", "1.0"} <= set(texts)
    assert any(t.startswith("favour_request: AP 0.583") for t in texts)


def test_curve_coordinates_stay_inside_the_plot_area() -> None:
    report = evaluate(TRUTH, SCORES, THRESHOLDS, LANGUAGES)
    root = ET.fromstring(svg_plot(curves(TRUTH, SCORES, report)))
    axes = next(e for e in root.iter(SVG + "rect") if e.get("class") == "axes")
    left, top = float(axes.get("x", "0")), float(axes.get("y", "0"))
    right, bottom = left + float(axes.get("width", "0")), top + float(axes.get("height", "0"))
    for path in (e for e in root.iter(SVG + "path") if e.get("class") == "curve"):
        for point in path.get("d", "").lstrip("M").split(" L"):
            x, y = (float(v) for v in point.split(","))
            assert left <= x <= right and top <= y <= bottom


def test_write_plot_writes_svg_and_refuses_other_file_names(tmp_path: Path) -> None:
    report = evaluate(TRUTH, SCORES, THRESHOLDS, LANGUAGES)
    write_plot(tmp_path / "pr.svg", curves(TRUTH, SCORES, report))
    assert ET.parse(tmp_path / "pr.svg").getroot().tag == SVG + "svg"
    with pytest.raises(UsageError, match=r"\.svg or \.png"):
        write_plot(tmp_path / "pr.pdf", [])
    with pytest.raises(UsageError, match="cannot write"):
        write_plot(tmp_path / "absent" / "pr.svg", [])


def test_png_without_matplotlib_says_to_use_svg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("filter.evaluate.importlib.util.find_spec", lambda name: None)
    with pytest.raises(UsageError, match="give a .svg file"):
        write_plot(tmp_path / "pr.png", [])
    assert not (tmp_path / "pr.png").exists()
