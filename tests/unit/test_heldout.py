"""The held-out written mail: complete, readable, and kept out of training.

``models/heldout/`` is mail written from the label guide alone, never
trained on, for ``ployfilter evaluate`` (see the README). These tests check
only that the set is whole and stays apart: what the model scores on it is
a measurement, reported in the README, not a pass mark.
"""

from __future__ import annotations

import csv
from pathlib import Path

from filter.message import parse_message
from filter.train import WRITTEN

HELDOUT = Path(__file__).resolve().parents[2] / "models" / "heldout"


def _rows() -> list[dict[str, str]]:
    with (HELDOUT / "labels.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_held_out_message_has_one_label_row_and_is_read_in_its_language() -> None:
    rows = _rows()
    assert sorted(row["path"] for row in rows) == sorted(
        p.relative_to(HELDOUT).as_posix() for p in HELDOUT.rglob("*.eml")
    )
    for row in rows:
        message = parse_message((HELDOUT / row["path"]).read_bytes())
        assert (message.error, message.language) == ("", row["lang"]), row["path"]
        assert {row["article_share"], row["favour_request"]} <= {"0", "1"}, row["path"]


def test_no_held_out_message_is_in_the_training_mail() -> None:
    def keys(root: Path) -> set[str]:
        messages = [parse_message(p.read_bytes()) for p in root.rglob("*.eml")]
        return {m.message_id for m in messages if m.message_id} | {m.own_text.strip() for m in messages}

    assert not HELDOUT.is_relative_to(WRITTEN)
    assert keys(HELDOUT).isdisjoint(keys(WRITTEN))
