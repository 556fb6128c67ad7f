"""What a model reads from a message: the request signal that tells a requested article from a share."""

from __future__ import annotations

import pytest

from filter.channels import asked_for
from filter.message import ParsedMessage


def _flag(own: str = "", quoted: str = "") -> float:
    return float(asked_for([ParsedMessage(own_text=own, quoted_text=quoted)])[0, 0])


@pytest.mark.parametrize(
    "own",
    [
        "As promised, here is the piece on port automation: https://example.org/a",
        "Here's the article you wanted: https://example.org/a",
        "As you requested, the study is attached.",
        "Comme promis, voici l'article : https://example.fr/a",
        "Comme tu me l'as demandé hier au téléphone, voici le lien vers l'épisode.",
        "Voici le lien que vous m'aviez demandé.",
    ],
)
def test_the_sender_saying_it_was_asked_for_sets_the_flag(own: str) -> None:
    assert _flag(own=own) == 1.0


@pytest.mark.parametrize(
    "quoted",
    [
        "> Could you send me that piece on rail freight?",
        "> Tu as encore le lien de l'article sur la réforme ?",
        "> Tu aurais la référence de l'étude que tu citais ?",
    ],
)
def test_the_recipients_quoted_request_sets_the_flag(quoted: str) -> None:
    assert _flag(own="Here it is: https://example.org/a", quoted=quoted) == 1.0


@pytest.mark.parametrize(
    "own",
    [
        "Thought you might find this interesting: https://example.org/a",
        "Saw this and thought of you.",
        "Pour info, un article intéressant : https://example.fr/a",
        "",
    ],
)
def test_an_unrequested_share_does_not(own: str) -> None:
    assert _flag(own=own) == 0.0
