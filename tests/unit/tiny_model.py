"""A tiny model for tests that need a real fitted pipeline: a few dozen built messages, fitted in seconds."""

from __future__ import annotations

from pathlib import Path

from filter.features import build_pipeline
from filter.message import ParsedMessage
from filter.model import ModelBundle

SHARES = [
    "Thought you might find this article interesting: {n} ports automate night shifts",
    "FYI, a good read on rail freight {n}, worth a look",
]
REQUESTS = [
    "Could you introduce me to your HR team? I am looking for a job, number {n}",
    "Would you have time for a coffee so I can pick your brain about my career {n}?",
]
WORK = [
    "Please send the Q3 numbers before the review meeting {n}",
    "The call moves to 3pm tomorrow, agenda attached {n}",
]
THRESHOLDS = {"article_share": 0.7, "favour_request": 0.6}


def message(text: str, subject: str) -> ParsedMessage:
    return ParsedMessage(subject=subject, own_text=text, to_count=1, language="en")


def training_set(extra: str = "") -> tuple[list[ParsedMessage], list[list[int]]]:
    """Shares, requests and work mail, twelve of each template; ``extra`` is added to every share and request."""
    messages: list[ParsedMessage] = []
    y: list[list[int]] = []
    for n in range(12):
        for templates, target, subject in ((SHARES, [1, 0], "article"), (REQUESTS, [0, 1], "a favour")):
            for template in templates:
                messages.append(message(template.format(n=n) + extra, subject))
                y.append(target)
        for template in WORK:
            messages.append(message(template.format(n=n), "work"))
            y.append([0, 0])
    return messages, y


def save_tiny_bundle(path: Path) -> Path:
    messages, y = training_set()
    pipeline = build_pipeline(own_features=500, forwarded_features=100, char_features=500)
    pipeline.fit(messages, y)
    ModelBundle.save(
        pipeline,
        path,
        thresholds=THRESHOLDS,
        metrics={"note": "tiny test model"},
        training_summary={"messages": len(messages)},
    )
    return path
