"""Prompts as text: digit prompts of the local backend, and prompt file names.

Torch-free, so config validation (at Snakemake parse time) and the backends share it without
importing each other:

* :func:`parse_digit_prompt` reads the digit a local-backend prompt names (``"a 7"``,
  ``"seven"``, ``"digit 7"``; ``""`` = unconditional);
* :func:`slug` is a readable file-name form of a prompt (Part A ``text_to_image`` items);
* :func:`prompt_key` names a prompt's DeepFloyd embedding file (slug + short hash).
"""

from __future__ import annotations

import hashlib
import re

from fundiff.errors import FundiffError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCEPTED_FORMS = "'' (unconditional), 'a 7', 'an 8', '7', 'seven', 'a seven', 'digit 7', 'the digit 7', 'number 7'"


def parse_digit_prompt(prompt: str) -> int | None:
    """The digit (0..9) a prompt names, or None for the null prompt ``""``.

    Raises:
        FundiffError listing the accepted forms when the prompt names no digit.
    """
    text = prompt.strip().lower()
    if not text:
        return None
    words = re.sub(r"[^a-z0-9 ]", " ", text).split()
    while words and words[0] in ("a", "an", "the", "digit", "number", "handwritten"):
        words = words[1:]
    if len(words) == 1:
        word = words[0]
        if word.isdigit() and len(word) == 1:
            return int(word)
        if word in DIGIT_WORDS:
            return DIGIT_WORDS.index(word)
    raise FundiffError(
        f"unknown prompt {prompt!r} for the MNIST model; accepted forms: {ACCEPTED_FORMS}"
    )


def slug(text: str) -> str:
    """A file-name-safe slug of a prompt: 'an oil painting!' -> 'an_oil_painting'; '' -> 'null'."""
    s = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return s[:60] or "null"


def prompt_key(prompt: str) -> str:
    """A file name for a prompt's embedding: readable slug + short hash (no collisions)."""
    return f"{slug(prompt)[:40]}_{hashlib.sha1(prompt.encode()).hexdigest()[:8]}"
