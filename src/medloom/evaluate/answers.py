"""Which option a model's reply chooses: a documented cascade of rules, and the rule that decided is recorded
with the prediction. The cascade would rather leave a reply invalid (counted wrong, or sent to `--judge`)
than map it to an option it did not choose: never a random option, never the nearest by string similarity
alone.

First the reply is cleaned (`clean`): reasoning blocks (`<think>...</think>`; an unclosed one is an unfinished
reply and invalid), chat stop tokens left in the text (`<|im_end|>`, `</s>`, `<end_of_turn>`), markdown
emphasis and code fences, full-width letters and punctuation. Then:

| rule | matches | example |
|---|---|---|
| `letter` | one option letter, at most with punctuation | `B`, `b.`, `(B)`, `**B**` |
| `json` | a JSON or Python dict (plain, fenced, single-quoted) with an answer key | `{"answer": "C"}` |
| `letter-text` | a letter, `:`/`.`/`)`/`-`, then its own option's text (or no other's) | `B: cyst` |
| `answer-is` | explicit choices (English, Chinese, Spanish), all naming one letter | `**Answer:** D`, `I choose A`, |
| | | `A is correct`, `答案是 B`, `选B`, `La respuesta es C` |
| `self-correction` | a choice taken back ("wait", "actually"): the text after it decides | `A. Wait, actually D` |
| `option-letter` | letters as options (`(C)`, `option C`, line `C. ...`, a last `C`), one not refused | `I think (C) fits best` |
| `option-text` | option texts, exact or near spellings: one not rejected or only contrasted | `No cyst; it is an effusion.` |
| `invalid` | none of these decides | see below |

Invalid, whatever else the reply says: a letter written with another option's text anywhere (`A: cyst` where
cyst is C); a hedge between options (`D or A`, `either cyst or effusion`); explicit statements naming different
letters; an echo of the option list with nothing chosen; several options named and none rejected.

An option is rejected when a negation comes before it in its clause ("no cyst", "definitely not X", "there is
no evidence of X", "rule out X", "rather than X", "unlike X", "no es X", "不是X") or a negative verdict after it
("X is unlikely", "X would show ...", "X is incorrect"): named only to be set aside, or to explain why another
was chosen.
"""

from __future__ import annotations

import ast
import difflib
import json
import re

RULES = (
    "letter",
    "json",
    "letter-text",
    "answer-is",
    "self-correction",
    "option-letter",
    "option-text",
    "invalid",
)
LETTERS = "ABCDEFGHIJ"

STOP_TOKENS = re.compile(
    r"<\|im_start\|>(?:assistant|user|system)?|<\|[a-z_]{2,30}\|>|</?s>|<(?:start|end)_of_turn>(?:model)?|<eos>|<bos>|\[/?INST\]|<pad>|<unk>",
    re.I,
)
THINK = re.compile(r"<(think|thinking|reasoning|thought)>.*?</\1>", re.S | re.I)
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
FULL_WIDTH = str.maketrans(
    {**{chr(0xFF21 + i): chr(0x41 + i) for i in range(26)}, "（": "(", "）": ")", "：": ":", "，": ",", "。": "."}
)
# the reply takes its choice back: what follows decides
CORRECTION = re.compile(
    r"\b(?:wait|actually|on second thought|on reflection|correction|scratch that|i misspoke|let me reconsider"
    r"|no,? (?:it'?s|it is|the answer)|or rather|espera|en realidad|mejor dicho)\b|不对|更正|其实|等等",
    re.I,
)
# before an option, in its clause: it is named to be set aside
NEG_BEFORE = re.compile(
    r"(?:\bno\b|\bnot\b|n't\b|\bnor\b|\bneither\b|\bwithout\b|\babsen(?:t|ce)\b|\bnegative for\b|\bfree of\b"
    r"|\brul(?:e|ed|ing) out\b|\bexclud\w*|\beliminat\w*|\brather than\b|\binstead of\b|\bunlike\b"
    r"|\bother than\b|\bagainst\b|\bover\b|\bversus\b|\bvs\b|\binconsistent with\b|\black\w*|\bdoes not\b|\bunlikely\b"
    r"|\bsin\b|\bni\b|\bdescart\w*|\bdescarta\w*|不是|没有|无|排除|并非|而非)[^.;:,\n]{0,40}$",
    re.I,
)
# right after an option: a verdict against it ("X is unlikely"), or X as the subject of a hypothetical
# ("X would show fluid"): named to explain why another was chosen
NEG_AFTER = re.compile(
    r"^\s*(?:\([^)]*\))?\s*[-–—:]?(?:\s+(?!which\b|that\b)\w+){0,3}?\s*"
    r"(?:is|are|was|were|seems|appears|looks|remains|would be|can be|may be)?\s*"
    r"(?:very\s+|much\s+|quite\s+|also\s+|definitely\s+)?"
    r"(?:not\b|n't\b|unlikely|less likely|incorrect|wrong|ruled out|excluded|absent|false|"
    r"no es\b|incorrect[ao]|descartad[ao]|poco probable|不对|错误|不正确|不太可能|被排除)"
    r"|^\s*(?:would|could|typically|usually|normally|tends? to|might)\b",
    re.I,
)
LINE_AGAINST = re.compile(
    r"\b(?:not|no|unlikely|less likely|incorrect|wrong|ruled out|excluded|absent|does not|doesn't)\b|✗|❌", re.I
)
# right after an explicit letter: a verdict against it ("answer A is incorrect")
AGAINST = re.compile(r"^\W{0,3}(?:is|seems|looks|appears)?\s*(?:not|incorrect|wrong|unlikely|false|no es)\b", re.I)
_L = r"([A-J])(?![\w'])"  # an uppercase option letter standing alone
_LL = r"([A-Ja-j])(?=\s*(?:[.)\]:,;!]|$))"  # a letter in either case, then punctuation or the end
EXPLICIT = [
    re.compile(p)
    for p in (
        [
            rf"(?i:(?:final|correct|best|right|most likely)?\s*answer(?:\s+(?:is|would be|should be|will be))?"
            rf"\s*(?:is)?\s*[:=\-]?\s*(?:option\s+|choice\s+|letter\s+)?\(?){_L}",
            rf"(?i:answer(?:\s+(?:is|would be|should be))?\s*[:=\-]?\s*\(?){_LL}",
            rf"(?i:correct\s+(?:option|choice|letter)\s+(?:is|would be)\s*:?\s*\(?){_L}",
            rf"(?i:\bi(?:'d| would| will|'ll)?\s+(?:choose|pick|select|go with|opt for|answer)\s+"
            rf"(?:option\s+|choice\s+)?\(?){_L}",
            rf"(?i:\b(?:my (?:answer|choice|pick) is|i'm going with|going with)\s+(?:option\s+)?\(?){_L}",
            r"\(?([A-J])\)?(?:\s*\([^)]*\))?(?i:\s+is\s+(?:the\s+)?(?:correct|right|best)(?:\s+(?:answer|option|choice))?)",
            r"\(?([A-J])\)?(?i:\s+is\s+my\s+(?:final\s+)?(?:answer|choice))",
            r"(?:正确)?答案\s*(?:是|为|应该是|应为|选)?\s*[:：]?\s*(?:选项)?\s*\(?([A-J])",
            r"(?:选择|选|应该是|应是|应为)\s*(?:选项)?\s*\(?([A-J])",
            r"([A-J])\s*(?:项|选项)?\s*(?:是)?(?:正确|对的)",
            rf"(?i:respuesta(?:\s+correcta)?(?:\s+(?:es|ser[ií]a))?\s*[:\-]?\s*(?:la\s+)?(?:opci[oó]n\s+)?\(?){_L}",
            rf"(?i:\b(?:elijo|escojo|selecciono|me quedo con)\s+(?:la\s+)?(?:opci[oó]n\s+)?\(?){_L}",
            r"(?i:la\s+(?:opci[oó]n\s+)?)\(?([A-J])\)?(?i:\s+es\s+(?:la\s+)?correcta)",
        ]
    )
]
OPTION_LETTER = [
    re.compile(r"\(([A-J])\)"),
    re.compile(r"(?i:\b(?:option|choice|letter|opci[oó]n|选项))\s*\(?([A-J])\b"),
    re.compile(r"(?m)^\s*(?:[-*]\s*)?([A-J])\s*[.):]\s"),
    re.compile(r"(?:^|[.!:]\s+|\n\s*)\(?([A-J])\)?\.?\s*$"),  # a letter alone closing the reply
    re.compile(r"(?:(?i:\b(?:it'?s|it is|is|es))\s+|是\s*)\(?([A-J])\)?(?=\s*(?:[.!,;]|$))"),
]
# a letter written with text: `B: cyst`, `(B) cyst`, `option B - cyst`
LETTER_WITH_TEXT = re.compile(r"(?<![\w'])\(?([A-J])\s*(\)|[.:]|\s[-–—]|,)\s*([^\n.;,()]{2,80})")
LETTER_THEN_PAREN = re.compile(r"(?<![\w'])([A-J])\s*\(([^()\n]{2,80})\)")
TEXT_THEN_LETTER = re.compile(r"([^\n.;,()]{2,80}?)\s*\(([A-J])\)")
JSON_KEYS = (
    "answer",
    "final_answer",
    "final answer",
    "option",
    "choice",
    "selected",
    "prediction",
    "letter",
    "respuesta",
    "答案",
)


def norm(text: str) -> str:
    """Lower case, words only (%, + and - kept): the form option texts are compared in."""
    return " ".join(re.sub(r"[^\w%+-]+", " ", text.lower()).split())


def clean(text: str) -> tuple[str, str]:
    """(the reply without reasoning blocks, stop tokens, markdown; "" and a reason where it cannot be read)."""
    text = STOP_TOKENS.sub(" ", text or "").translate(FULL_WIDTH)
    if re.search(r"</(?:think|thinking|reasoning)>", text, re.I):
        text = re.split(r"</(?:think|thinking|reasoning)>", text, flags=re.I)[-1]
    text = THINK.sub(" ", text)
    if re.search(r"<(?:think|thinking|reasoning)>", text, re.I):
        return "", "unfinished reasoning"
    tags = ANSWER_TAG.findall(text)
    if tags:
        text = tags[-1]
    text = re.sub(r"```[a-zA-Z]*", "\n", text)
    text = re.sub(r"\*\*|__|`|^\s*#+\s*|^\s*>\s*", "", text, flags=re.M)
    text = re.sub(r"(?<!\w)\*(?!\s)|(?<!\s)\*(?!\w)", "", text)
    return text.strip(), ""


def parse_answer(answer: str | None, options: list[str]) -> tuple[str, str]:
    """(the option letter, or "" when invalid; the rule that decided)."""
    letters = LETTERS[: len(options)]
    if not letters:
        return "", "invalid"
    text, _ = clean(answer or "")
    if not text:
        return "", "invalid"
    return _cascade(text, options, letters, depth=0)


def _bare_letter(text: str, letters: str) -> str:
    bare = re.sub(r"^[\s*_`'\"(\[]+|[\s*_`'\".)\]:!]+$", "", text)
    bare = re.sub(r"^(?:option|choice|opci[oó]n|选项)\s*", "", bare, flags=re.I)
    return bare.upper() if len(bare) == 1 and bare.upper() in letters else ""


def _json_answer(text: str) -> str | None:
    """The answer value of a JSON or Python dict in the text; None when there is no such dict."""
    m = re.search(r"\{[^{}]*\}", text, re.S)
    if not m:
        return None
    data = None
    for load in (json.loads, ast.literal_eval):
        try:
            data = load(m.group(0))
            break
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    if not isinstance(data, dict):
        return None
    keys = {str(k).lower().strip(): v for k, v in data.items()}
    for key in JSON_KEYS:
        if key in keys and isinstance(keys[key], (str, int)):
            return str(keys[key])
    return None


def option_spans(text: str, options: list[str]) -> list[tuple[int, int, int]]:
    """(start, end, option index) of every option text in the reply, longest options first (an option
    inside another one's text, "effusion" in "pleural effusion", is not counted there); near spellings
    ("pnuemonia", "effussion") where an option's text is not found as written."""
    low = text.lower()
    taken = [False] * len(low)
    spans = []
    order = sorted(range(len(options)), key=lambda i: -len(norm(options[i])))
    for i in order:
        words = norm(options[i]).split()
        if not words:
            continue
        pattern = r"(?<![\w])" + r"[\s\W_]+".join(re.escape(w) for w in words) + r"(?:e?s)?(?![\w])"
        found = False
        for m in re.finditer(pattern, low):
            if not any(taken[m.start() : m.end()]):
                spans.append((m.start(), m.end(), i))
                taken[m.start() : m.end()] = [True] * (m.end() - m.start())
                found = True
        if not found and len("".join(words)) >= 5:
            for start, end, _ in _near(low, words, i, taken):
                spans.append((start, end, i))
                taken[start:end] = [True] * (end - start)
    return sorted(spans)


def _near(low: str, words: list[str], index: int, taken: list[bool]) -> list[tuple[int, int, int]]:
    """Word windows spelled within a small edit of an option's text (ratio >= 0.85)."""
    words = re.findall(r"[^\W\d_]+", " ".join(words))
    target = " ".join(words)
    if not words:
        return []
    tokens = [(m.start(), m.end(), m.group(0)) for m in re.finditer(r"[^\W\d_]+", low)]
    out = []
    for k in range(len(tokens) - len(words) + 1):
        window = tokens[k : k + len(words)]
        start, end = window[0][0], window[-1][1]
        if any(taken[start:end]):
            continue
        said = " ".join(t[2] for t in window)
        if said[0] == target[0] and difflib.SequenceMatcher(None, said, target).ratio() >= 0.85:
            out.append((start, end, index))
    return out


def _clause_before(text: str, start: int) -> str:
    head = text[:start]
    cut = max(head.rfind(c) for c in ".;!?\n。；")
    return head[cut + 1 :]


def rejected(text: str, start: int, end: int) -> bool:
    """Whether the option named at text[start:end] is named only to be set aside."""
    before = _clause_before(text, start)
    if NEG_BEFORE.search(before):
        # "no X; it is Y" rejects X, but "not only X" or "no doubt X" does not
        if not re.search(r"\b(?:not only|no doubt|without doubt|sin duda)\b[^.;\n]*$", before, re.I):
            return True
    return bool(NEG_AFTER.search(text[end:]))


def _contradiction(text: str, options: list[str], letters: str) -> bool:
    """A letter written with another option's text: `A: cyst` or `cyst (A)` where cyst is C."""
    normed = [norm(o) for o in options]

    def names_other(letter: str, said: str, at_start: bool) -> bool:
        said = norm(said)
        if not said or letter not in letters:
            return False
        own = normed[letters.index(letter)]
        if own and (said.startswith(own) if at_start else said.endswith(own)):
            return False
        for i, o in enumerate(normed):
            if (
                o
                and i != letters.index(letter)
                and (said.startswith(o + " ") or said == o if at_start else said.endswith(" " + o) or said == o)
            ):
                if not (own and o in own):  # "effusion" is the start of no other text here
                    return True
        return False

    for m in LETTER_WITH_TEXT.finditer(text):
        said = m.group(3)
        if m.group(2) == "." and norm(said) not in normed:  # "is C. Cyst was considered": a new sentence
            continue
        if names_other(m.group(1), said, True):
            return True
    for m in LETTER_THEN_PAREN.finditer(text):
        if norm(m.group(2)) in normed and names_other(m.group(1), m.group(2), True):
            return True
    return any(names_other(m.group(2), m.group(1), False) for m in TEXT_THEN_LETTER.finditer(text))


def _echo_removed(text: str, options: list[str], letters: str) -> tuple[str, bool]:
    """The reply without an echoed option list (two or more `X. its text` pairs); whether there was one."""
    pairs = []
    for i, o in enumerate(options):
        words = norm(o).split()
        if not words:
            continue
        body = r"[\s\W_]+".join(re.escape(w) for w in words)
        pairs += list(
            re.finditer(
                rf"(?<![\w])\(?{letters[i]}\s*[.):]\s*{body}(?![\w])[ \t]*(?=[\n,;]|$|\s+\(?[A-J]\s*[.):])", text, re.I | re.M
            )
        )
    if len({m.group(0)[:2] for m in pairs}) < 2 or len(pairs) < 2:
        return text, False
    for m in sorted(pairs, key=lambda m: -m.start()):
        text = text[: m.start()] + text[m.end() :]
    return text.strip(" \t\n,;"), True


def _hedge(text: str, options: list[str], letters: str, spans) -> bool:
    """Two options offered as alternatives: `D or A`, `B/C`, `either cyst or effusion`, `A 或 B`."""
    for m in re.finditer(r"(?<![\w'])\(?([A-J])\)?\s*(?:or|/|o|或|或者|还是)\s*\(?([A-J])\)?(?![\w'])", text):
        if m.group(1) != m.group(2) and {m.group(1), m.group(2)} <= set(letters):
            if not NEG_BEFORE.search(_clause_before(text, m.start())):
                return True
    for (s1, e1, i1), (s2, _, i2) in zip(spans, spans[1:]):
        between = text[e1:s2].strip().lower()
        if i1 != i2 and between in ("or", "/", "o", "或", "或者", "还是", "or possibly", "or perhaps", "or maybe"):
            if not rejected(text, s1, e1):
                return True
    return False


def _cascade(text: str, options: list[str], letters: str, depth: int) -> tuple[str, str]:
    letter = _bare_letter(text, letters)
    if letter:
        return letter, "letter"
    value = _json_answer(text)
    if value is not None and depth == 0:
        letter, _ = _cascade(value.strip(), options, letters, depth + 1)
        return (letter, "json") if letter else ("", "invalid")
    text, echoed = _echo_removed(text, options, letters)
    if echoed and not text:
        return "", "invalid"
    # a self-correction: the text after the last "wait"/"actually" decides, when it names an option
    marks = list(CORRECTION.finditer(text))
    if marks and depth < 2:
        tail = text[marks[-1].end() :]
        if _mentions(tail, options, letters):
            letter, rule = _cascade(tail.strip(" ,.:;-"), options, letters, depth + 1)
            head = text[: marks[-1].start()]
            took_back = bool(_mentions(head, options, letters))
            return (letter, "self-correction" if took_back and letter else rule) if letter else ("", "invalid")
    if _contradiction(text, options, letters):
        return "", "invalid"
    spans = option_spans(text, options)
    if _hedge(text, options, letters, spans):
        return "", "invalid"
    m = re.match(r"^\s*\(?([A-Ja-j])\s*(?:[.:)\]]|\s[-–—])\s*(.+)$", text, re.S)
    if m and m.group(1).upper() in letters:
        first = m.group(1).upper()
        rest_spans = [s for s in option_spans(m.group(2), options) if not rejected(m.group(2), s[0], s[1])]
        if {letters[s[2]] for s in rest_spans} <= {first}:
            return first, "letter-text"
    said = _explicit(text, letters)
    if len(said) == 1:
        return said.pop(), "answer-is"
    if said:
        return "", "invalid"
    marked = _option_letters(text, letters)
    if len(marked) == 1:
        return marked.pop(), "option-letter"
    if marked:
        return "", "invalid"
    chosen = {letters[i] for s, e, i in spans if not rejected(text, s, e)}
    if len(chosen) == 1:
        return chosen.pop(), "option-text"
    return "", "invalid"


def _mentions(text: str, options: list[str], letters: str) -> bool:
    return bool(
        _bare_letter(text.strip(" ,.:;-"), letters)
        or _explicit(text, letters)
        or _option_letters(text, letters)
        or option_spans(text, options)
    )


def _positive(text: str, m: re.Match, group: int = 1) -> bool:
    """A letter statement that is not negated: "not (A)", "option A is incorrect"."""
    return not rejected(text, m.start(), m.end(group))


def _explicit(text: str, letters: str) -> set[str]:
    found = set()
    for pattern in EXPLICIT:
        for m in pattern.finditer(text):
            if (
                m.group(1).upper() in letters
                and not NEG_BEFORE.search(_clause_before(text, m.start())[-12:])
                and not AGAINST.search(text[m.end(1) :])
            ):
                found.add(m.group(1).upper())
    return found


def _option_letters(text: str, letters: str) -> set[str]:
    found = set()
    for pattern in OPTION_LETTER:
        for m in pattern.finditer(text):
            line = text[m.end() :].split("\n", 1)[0]
            if pattern is OPTION_LETTER[2] and LINE_AGAINST.search(line):  # "A. effusion - unlikely"
                continue
            if m.group(1) in letters and _positive(text, m):
                found.add(m.group(1))
    return found
