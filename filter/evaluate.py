"""Scores against hand labels -> per-label and per-language metrics, and a precision-recall plot.

What an owner needs to know before letting the filter move mail: at the
thresholds it will use, how much of each kind it catches (recall), how
often it is right when it moves something (precision), and above all how
much ordinary mail (labelled neither) it would take out of the inbox. The
figures are given per language too, since a model can be good in English
and poor in French.

Everything here is pure: arrays in, a ``Report`` or text out. The plot is
written as a small hand-made SVG, so no plotting library is needed; a PNG
is drawn with matplotlib when that happens to be installed.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve

from filter.config import LABELS
from filter.errors import UsageError

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Counts:
    """Confusion counts for one label at one threshold.

    Precision is None when nothing was flagged, recall None when there was
    nothing to find: a figure without a denominator is unknown, not zero.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        """2tp / (2tp + fp + fn): 0 when there are positives and none is found; None with nothing to find or flag."""
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else None

    @property
    def positives(self) -> int:
        return self.tp + self.fn

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "precision": _round(self.precision),
            "recall": _round(self.recall),
            "f1": _round(self.f1),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass(frozen=True)
class LabelReport:
    """One label: its threshold, confusion counts overall and per language, average precision."""

    label: str
    threshold: float
    counts: Counts
    by_language: Mapping[str, Counts]
    average_precision: float | None


@dataclass(frozen=True)
class Flagged:
    """Ordinary mail (labelled neither) that got at least one label: ``flagged`` of ``messages``."""

    messages: int
    flagged: int

    @property
    def share(self) -> float | None:
        """The share flagged; None when there is no ordinary mail to flag."""
        return self.flagged / self.messages if self.messages else None


@dataclass(frozen=True)
class Report:
    """The whole evaluation: messages per language, one LabelReport per label, ordinary mail flagged."""

    messages: int
    by_language: Mapping[str, int]
    labels: tuple[LabelReport, ...]
    ordinary: Flagged
    ordinary_by_language: Mapping[str, Flagged]


def counts(truth: Array, predicted: Array) -> Counts:
    """Confusion counts of boolean arrays of the same shape."""
    t, p = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    return Counts(tp=int((t & p).sum()), fp=int((~t & p).sum()), fn=int((t & ~p).sum()), tn=int((~t & ~p).sum()))


def evaluate(
    truth: Array,
    scores: Array,
    thresholds: Mapping[str, float],
    languages: Sequence[str],
    labels: Sequence[str] = LABELS,
) -> Report:
    """Measure ``scores`` (n x labels) against ``truth`` (n x labels, 0/1) at ``thresholds``.

    A message is predicted to carry a label when its score reaches the
    label's threshold, as in the daemon. ``languages`` gives each message's
    language, for the per-language figures.
    """
    y = np.asarray(truth, dtype=bool).reshape(len(languages), len(labels))
    s = np.asarray(scores, dtype=np.float64).reshape(y.shape)
    lang = np.asarray(languages, dtype=object)
    names = sorted(set(languages))
    predicted = s >= np.array([thresholds[label] for label in labels], dtype=np.float64)
    reports = []
    for j, label in enumerate(labels):
        reports.append(
            LabelReport(
                label=label,
                threshold=float(thresholds[label]),
                counts=counts(y[:, j], predicted[:, j]),
                by_language={n: counts(y[lang == n, j], predicted[lang == n, j]) for n in names},
                average_precision=float(average_precision_score(y[:, j], s[:, j])) if y[:, j].any() else None,
            )
        )
    ordinary = ~y.any(axis=1)
    flagged = ordinary & predicted.any(axis=1)
    return Report(
        messages=len(languages),
        by_language={n: int((lang == n).sum()) for n in names},
        labels=tuple(reports),
        ordinary=Flagged(int(ordinary.sum()), int(flagged.sum())),
        ordinary_by_language={
            n: Flagged(int((ordinary & (lang == n)).sum()), int((flagged & (lang == n)).sum())) for n in names
        },
    )


def report_dict(report: Report) -> dict[str, Any]:
    """The report as plain JSON-ready values."""

    def flagged(f: Flagged) -> dict[str, float | int | None]:
        return {"messages": f.messages, "flagged": f.flagged, "share": None if f.share is None else round(f.share, 4)}

    return {
        "messages": report.messages,
        "by_language": dict(report.by_language),
        "labels": {
            r.label: {
                "threshold": r.threshold,
                "positives": r.counts.positives,
                "average_precision": _round(r.average_precision),
                **r.counts.as_dict(),
                "by_language": {n: {"positives": c.positives, **c.as_dict()} for n, c in r.by_language.items()},
            }
            for r in report.labels
        },
        "ordinary_flagged": {
            **flagged(report.ordinary),
            "by_language": {n: flagged(f) for n, f in report.ordinary_by_language.items()},
        },
    }


def report_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False)


def format_report(report: Report) -> str:
    """A text table: one row per label and per label and language, then the ordinary mail flagged."""
    langs = ", ".join(f"{n} {c}" for n, c in report.by_language.items())
    lines = [f"{report.messages} messages ({langs})", ""]
    head = ("label", "lang", "threshold", "positives", "precision", "recall", "F1", "tp", "fp", "fn", "tn", "AP")
    rows: list[tuple[str, ...]] = [head]
    for r in report.labels:
        rows.append(_row(r.label, "all", f"{r.threshold:.3f}", r.counts, _cell(r.average_precision)))
        for name, c in r.by_language.items():
            rows.append(_row("", name, "", c, ""))
    lines.extend(_aligned(rows, left=(0, 1)))
    lines.append("")
    per_language = ", ".join(f"{n} {_share(f)}" for n, f in report.ordinary_by_language.items() if f.messages)
    lines.append(f"ordinary mail flagged: {_share(report.ordinary)}" + (f"; {per_language}" if per_language else ""))
    return "\n".join(lines)


def _aligned(rows: Sequence[tuple[str, ...]], left: Collection[int]) -> list[str]:
    """``rows`` as lines of columns two spaces apart, the ``left`` ones aligned left, the others right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = (c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        lines.append("  ".join(cells).rstrip())
    return lines


def _row(label: str, lang: str, threshold: str, c: Counts, ap: str) -> tuple[str, ...]:
    return (
        label,
        lang,
        threshold,
        str(c.positives),
        _cell(c.precision),
        _cell(c.recall),
        _cell(c.f1),
        str(c.tp),
        str(c.fp),
        str(c.fn),
        str(c.tn),
        ap,
    )


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _share(f: Flagged) -> str:
    return f"{f.flagged} of {f.messages}" + ("" if f.share is None else f" ({f.share:.1%})")


# ---------------------------------------------------------------------------
# What other thresholds would do

SWEEP_POINTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class SweepRow:
    """One label at one threshold, the other labels kept at theirs: what changing one config key does."""

    label: str
    threshold: float
    counts: Counts
    ordinary: Flagged
    current: bool


def sweep(
    truth: Array,
    scores: Array,
    thresholds: Mapping[str, float],
    labels: Sequence[str] = LABELS,
    points: Sequence[float] = SWEEP_POINTS,
) -> list[SweepRow]:
    """Each label at each of ``points`` and at its own threshold, in rising order."""
    y = np.asarray(truth, dtype=bool).reshape(-1, len(labels))
    s = np.asarray(scores, dtype=np.float64).reshape(y.shape)
    ordinary = ~y.any(axis=1)
    rows = []
    for j, label in enumerate(labels):
        current = float(thresholds[label])
        for t in sorted({*points, current}):
            at = np.array([float(thresholds[other]) for other in labels])
            at[j] = t
            predicted = s >= at
            flagged = Flagged(int(ordinary.sum()), int((ordinary & predicted.any(axis=1)).sum()))
            rows.append(SweepRow(label, t, counts(y[:, j], predicted[:, j]), flagged, t == current))
    return rows


def sweep_dict(rows: Sequence[SweepRow]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        flagged = {"messages": r.ordinary.messages, "flagged": r.ordinary.flagged, "share": _round(r.ordinary.share)}
        out.setdefault(r.label, []).append(
            {"threshold": r.threshold, "current": r.current, **r.counts.as_dict(), "ordinary_flagged": flagged}
        )
    return out


def format_sweep(rows: Sequence[SweepRow]) -> str:
    """A table per label: precision, recall, F1 and ordinary mail flagged at each threshold."""
    head = ("label", "threshold", "precision", "recall", "F1", "tp", "fp", "fn", "ordinary flagged", "")
    table: list[tuple[str, ...]] = [head]
    shown = ""
    for r in rows:
        table.append(
            (
                r.label if r.label != shown else "",
                f"{r.threshold:.4g}",
                _cell(r.counts.precision),
                _cell(r.counts.recall),
                _cell(r.counts.f1),
                str(r.counts.tp),
                str(r.counts.fp),
                str(r.counts.fn),
                _share(r.ordinary),
                "<- now" if r.current else "",
            )
        )
        shown = r.label
    return "\n".join(["each label at other thresholds, the other kept at its own:", *_aligned(table, left=(0, 9))])


# ---------------------------------------------------------------------------
# The precision-recall plot


@dataclass(frozen=True)
class Curve:
    """One label's precision-recall curve, in order of decreasing recall, and its point at the threshold."""

    label: str
    recall: tuple[float, ...]
    precision: tuple[float, ...]
    point: tuple[float, float]
    threshold: float
    average_precision: float


def curves(truth: Array, scores: Array, report: Report) -> list[Curve]:
    """The curve of each label with at least one positive (a curve without positives means nothing)."""
    y = np.asarray(truth, dtype=bool).reshape(report.messages, len(report.labels))
    s = np.asarray(scores, dtype=np.float64).reshape(y.shape)
    out = []
    for j, r in enumerate(report.labels):
        if r.average_precision is None:
            continue
        precision, recall, _ = precision_recall_curve(y[:, j], s[:, j])
        out.append(
            Curve(
                label=r.label,
                recall=tuple(float(v) for v in recall),
                precision=tuple(float(v) for v in precision),
                point=(r.counts.recall or 0.0, 1.0 if r.counts.precision is None else r.counts.precision),
                threshold=r.threshold,
                average_precision=r.average_precision,
            )
        )
    return out


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_WIDTH, _HEIGHT = 640, 480
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 24, 40, 56


def _x(recall: float) -> float:
    return _LEFT + recall * (_WIDTH - _LEFT - _RIGHT)


def _y(precision: float) -> float:
    return _HEIGHT - _BOTTOM - precision * (_HEIGHT - _TOP - _BOTTOM)


def _step_path(curve: Curve) -> str:
    """The curve drawn in steps, as average precision counts it (matplotlib's "steps-post" on decreasing recall)."""
    points: list[tuple[float, float]] = []
    for i, (r, p) in enumerate(zip(curve.recall, curve.precision, strict=True)):
        if i:
            points.append((_x(r), _y(curve.precision[i - 1])))
        points.append((_x(r), _y(p)))
    kept: list[str] = []
    last = ""
    for x, y in points:
        here = f"{x:.1f},{y:.1f}"
        if here != last:
            kept.append(here)
            last = here
    return "M" + " L".join(kept)


def svg_plot(curve_list: Sequence[Curve], title: str = "Precision-recall") -> str:
    """A self-contained SVG: axes from 0 to 1, ticks and a grid, one path per curve, threshold points, a legend."""
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{_WIDTH}" height="{_HEIGHT}" fill="white"/>',
        f'<text x="{_WIDTH / 2:g}" y="24" text-anchor="middle" font-size="15">{escape(title)}</text>',
        '<g class="grid" stroke="#dddddd" stroke-width="1">',
    ]
    ticks = [i / 5 for i in range(6)]
    for t in ticks:
        out.append(f'<line x1="{_x(t):.1f}" y1="{_TOP}" x2="{_x(t):.1f}" y2="{_TOP + plot_h}"/>')
        out.append(f'<line x1="{_LEFT}" y1="{_y(t):.1f}" x2="{_LEFT + plot_w}" y2="{_y(t):.1f}"/>')
    out.append("</g>")
    out.append(
        f'<rect class="axes" x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>'
    )
    out.append('<g class="ticks" fill="#333">')
    for t in ticks:
        out.append(f'<text x="{_x(t):.1f}" y="{_TOP + plot_h + 18}" text-anchor="middle">{t:.1f}</text>')
        out.append(f'<text x="{_LEFT - 8}" y="{_y(t) + 4:.1f}" text-anchor="end">{t:.1f}</text>')
    out.append("</g>")
    out.append(f'<text x="{_LEFT + plot_w / 2:g}" y="{_HEIGHT - 14}" text-anchor="middle">Recall</text>')
    out.append(
        f'<text x="18" y="{_TOP + plot_h / 2:g}" text-anchor="middle" '
        f'transform="rotate(-90 18 {_TOP + plot_h / 2:g})">Precision</text>'
    )
    for i, curve in enumerate(curve_list):
        colour = COLOURS[i % len(COLOURS)]
        x, y = curve.point
        out.append(
            f'<path class="curve" data-label="{escape(curve.label)}" d="{_step_path(curve)}" '
            f'fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        out.append(
            f'<circle class="threshold" cx="{_x(x):.1f}" cy="{_y(y):.1f}" r="5" fill="{colour}" '
            f'stroke="white" stroke-width="1.5"/>'
        )
    out.append(_legend(curve_list))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _legend(curve_list: Sequence[Curve]) -> str:
    """Bottom left, where a precision-recall curve rarely goes."""
    if not curve_list:
        return ""
    texts = [
        f"{c.label}: AP {c.average_precision:.3f}; threshold {c.threshold:.3f}: P {c.point[1]:.2f}, R {c.point[0]:.2f}"
        for c in curve_list
    ]
    width = 40 + 7 * max(len(t) for t in texts)
    height = 10 + 20 * len(texts)
    left, top = _LEFT + 10, _HEIGHT - _BOTTOM - 10 - height
    out = [
        '<g class="legend">',
        f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="white" fill-opacity="0.9" stroke="#999"/>',
    ]
    for i, text in enumerate(texts):
        colour = COLOURS[i % len(COLOURS)]
        y = top + 15 + 20 * i
        out.append(f'<line x1="{left + 8}" y1="{y}" x2="{left + 28}" y2="{y}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<circle cx="{left + 18}" cy="{y}" r="4" fill="{colour}"/>')
        out.append(f'<text x="{left + 34}" y="{y + 4}">{escape(text)}</text>')
    out.append("</g>")
    return "\n".join(out)


def plot_format(path: Path) -> str:
    """ "svg" or "png" from the file name; UsageError for any other, or for PNG without matplotlib.

    Called before the work starts, so that a bad file name fails at once.
    """
    suffix = path.suffix.lower()
    if suffix == ".svg":
        return "svg"
    if suffix != ".png":
        raise UsageError(f"--plot {path}: the file name must end in .svg or .png")
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError(f"--plot {path}: PNG needs matplotlib, which is not installed; give a .svg file")
    return "png"


def write_plot(path: Path, curve_list: Sequence[Curve], title: str = "Precision-recall") -> None:
    """Write the plot as SVG, or as PNG when matplotlib is installed."""
    try:
        if plot_format(path) == "svg":
            path.write_text(svg_plot(curve_list, title), encoding="utf-8")
        else:
            _write_png(path, curve_list, title)
    except OSError as exc:
        raise UsageError(f"--plot {path}: cannot write ({exc.strerror or exc})") from exc


def _write_png(path: Path, curve_list: Sequence[Curve], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for i, c in enumerate(curve_list):
        colour = COLOURS[i % len(COLOURS)]
        ax.plot(
            c.recall,
            c.precision,
            drawstyle="steps-post",
            color=colour,
            label=f"{c.label} (AP {c.average_precision:.3f})",
        )
        ax.plot([c.point[0]], [c.point[1]], "o", color=colour)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="Recall", ylabel="Precision", title=title)
    ax.grid(True, color="#dddddd")
    if curve_list:
        ax.legend(loc="lower left")
    fig.savefig(path, dpi=100)
    plt.close(fig)
