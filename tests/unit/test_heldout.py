"""The held-out written mail: complete, readable, and kept out of training.

``models/heldout/`` is mail written from the label guide alone, and
``models/probe-recruiting/`` mail written to probe one known weakness
(recruiters and hiring against favour requests); neither is trained on, both
are for ``ployfilter evaluate`` (see the README). These tests check only
that each set is whole and stays apart: what the model scores on them is a
measurement, reported in the README, not a pass mark.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from filter.message import parse_message
from filter.train import WRITTEN

MODELS = Path(__file__).resolve().parents[2] / "models"
SETS = [pytest.param(MODELS / name, id=name) for name in ("heldout", "probe-recruiting")]


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / "labels.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("root", SETS)
def test_every_held_out_message_has_one_label_row_and_is_read_in_its_language(root: Path) -> None:
    rows = _rows(root)
    assert sorted(row["path"] for row in rows) == sorted(p.relative_to(root).as_posix() for p in root.rglob("*.eml"))
    for row in rows:
        message = parse_message((root / row["path"]).read_bytes())
        assert (message.error, message.language) == ("", row["lang"]), row["path"]
        assert {row["article_share"], row["favour_request"]} <= {"0", "1"}, row["path"]


def _keys(root: Path) -> set[str]:
    messages = [parse_message(p.read_bytes()) for p in root.rglob("*.eml")]
    return {m.message_id for m in messages if m.message_id} | {m.own_text.strip() for m in messages}


@pytest.fixture(scope="module")
def training_keys() -> set[str]:
    """The written training mail's keys, read once for every held-out set."""
    return _keys(WRITTEN)


@pytest.mark.parametrize("root", SETS)
def test_no_held_out_message_is_in_the_training_mail(root: Path, training_keys: set[str]) -> None:
    assert not root.is_relative_to(WRITTEN)
    assert _keys(root).isdisjoint(training_keys)
