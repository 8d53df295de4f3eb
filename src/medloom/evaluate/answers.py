"""Which option a model's answer names: a documented cascade of rules, the first that matches wins, and
the rule is recorded with the prediction. An answer no rule matches is `invalid` (counted wrong): never a
random option, never the option nearest by string similarity.

| rule | matches | example |
|---|---|---|
| `letter` | one option letter, at most with punctuation | `B`, `b.`, `(B)`, `**B**` |
| `letter-text` | a letter, `:`/`.`/`)`, then its option's text or text that is no other option's | `B: cyst` |
| `answer-is` | "answer is X", "answer: X", "option X", "choice X" naming one letter | `The answer is (B).` |
| `parenthesised` | exactly one distinct `(X)` in the text | `I think (C) fits best` |
| `option-text` | one option's text, or text naming exactly one option as whole words | `It shows a cyst.` |
| `invalid` | none of these; several letters or options; a letter with another option's text | `B or C`, `A: cyst` |
"""

from __future__ import annotations

import re

RULES = ("letter", "letter-text", "answer-is", "parenthesised", "option-text", "invalid")
LETTERS = "ABCDEFGHIJ"


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w%+-]+", " ", text.lower()).split())


def parse_answer(answer: str | None, options: list[str]) -> tuple[str, str]:
    """(the option letter, or "" when invalid; the rule that decided)."""
    letters = LETTERS[: len(options)]
    text = (answer or "").strip()
    if not text or not letters:
        return "", "invalid"
    bare = re.sub(r"^[\s*_`'\"(\[]+|[\s*_`'\".)\]:]+$", "", text)
    if len(bare) == 1 and bare.upper() in letters:
        return bare.upper(), "letter"
    m = re.match(r"^[\s*_(\[]*([A-Za-z])\s*[:.)\]]\s*(.+)$", text, re.S)
    if m and m.group(1).upper() in letters:
        letter, rest = m.group(1).upper(), _norm(m.group(2))
        named = [LETTERS[i] for i, o in enumerate(options) if _norm(o) and _norm(o) == rest]
        # "(A) or (B)", "A, or B": another letter named after the first
        others = {x.upper() for x in re.findall(r"(?:\(|\bor\s+|\band\s+)([A-Za-z])\b", m.group(2))}
        if others & set(letters) - {letter}:
            return "", "invalid"
        if not named or named == [letter]:
            return letter, "letter-text"
        return "", "invalid"  # "A: cyst" where cyst is C: the answer contradicts itself
    found = {
        x.upper()
        for x in re.findall(r"\b(?:answer\s*(?:is|:)|option|choice)\s*[:\s]*\(?\**([A-Za-z])\**\)?(?![\w'])", text, re.I)
    }
    found &= set(letters)
    if len(found) == 1:
        return found.pop(), "answer-is"
    paren = {x.upper() for x in re.findall(r"\(([A-Za-z])\)", text)} & set(letters)
    if len(paren) == 1 and not found:
        return paren.pop(), "parenthesised"
    said = _norm(text)
    exact = [LETTERS[i] for i, o in enumerate(options) if _norm(o) == said]
    if len(exact) == 1:
        return exact[0], "option-text"
    padded = f" {said} "
    named = [LETTERS[i] for i, o in enumerate(options) if _norm(o) and f" {_norm(o)} " in padded]
    # an option whose text lies inside another named option ("effusion" in "pleural effusion") is not named
    named = [
        x
        for x in named
        if not any(x != y and f" {_norm(options[LETTERS.index(x)])} " in f" {_norm(options[LETTERS.index(y)])} " for y in named)
    ]
    if len(named) == 1:
        return named[0], "option-text"
    return "", "invalid"
