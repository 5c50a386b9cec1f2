"""The one parser for model answers: what a completion says (think, answer, country, city and the other labelled
fields) and a teacher's localizability judgement.

GLOBE's policy reasons inside `<think>…</think>` and answers inside `<answer>…</answer>` with a `country:` line and a
`city:` line. Every consumer (distillation, rewards, evaluation, the geocoder, `globe score`) reads completions with
`parse_completion`, and labelled answers without tags with `answer_fields`, so an answer means the same thing
everywhere. Neither raises.

Two readings of the labelled lines, on purpose:

- `format_ok` is strict: exactly one `<think>` then one `<answer>` whose `country:` and `city:` fields sit at a line
  start (or after `.`, `,` or `;`) in GLOBE's plain form; the format reward pays only for that.
- the field values (`Parsed.country`, `Parsed.city`, `Parsed.fields`) are read the way a person reads what models
  really write: markdown bullets (`- country: X`, `1. city: Y`), bold or italic keys (`**country:** X`,
  `**Country**: X`), the value on the next line, a lead-in sentence before the keys, several keys on one line
  (`country: X city: Y`), `Country :`, `COUNTRY:` and full-width colons (`：`), template brackets (`[France]`),
  markdown table rows (`| country | France |`).
  A key written twice is a hedge: its value is None, as is an empty one.

On a well-formed answer (`country: X` and `city: Y` lines) the values equal those of GLOBE's official reward code
(`re.search(r'country:\\s*([^\\n]+)', answer)`, stripped), so its string rule scores the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL | re.IGNORECASE)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
# The strict field (format_ok): a `country:` / `city:` key at a line start or after . , ; (one-line answers).
# Horizontal white space only ([^\S\n]), so an empty value never swallows the next line. The value is the rest of
# the line, captured in a lookahead so that a second key on the same line is still found; `(.*?)\s*$` would
# backtrack quadratically.
_FIELD = re.compile(r"(?:^|(?<=[.,;]))[^\S\n]*(country|city)[^\S\n]*[:：][^\S\n]*(?=([^\n]*))", re.IGNORECASE | re.MULTILINE)
# A one-line answer ("country: France. city: Lyon") ends the country value where the next key starts.
_NEXT_LABEL = re.compile(r"\b(?:country|city)[^\S\n]*[:：]", re.IGNORECASE)
# The whole completion in the one accepted shape: think, then answer, then nothing.
_STRICT = re.compile(r"\A\s*<think>(?:(?!</?think>|</?answer>).)*</think>\s*<answer>((?:(?!</?think>|</?answer>).)*)</answer>\s*\Z", re.DOTALL | re.IGNORECASE)
_HSPACE = re.compile(r"[^\S\n]{2,}")
_LOCALIZABLE = re.compile(r"localizable\s*[:：]\s*(yes|no)", re.IGNORECASE)
# A score in [0, 1] written as a decimal; "score: 10" or "score: 15%" is not one (no digit, '.' or % may follow).
_SCORE = re.compile(r"score\s*[:：]\s*([01](?:\.\d+)?|\.\d+)(?![\d.%])", re.IGNORECASE)

# ---- the lenient field reader -----------------------------------------------------------------------------------

# Every key an answer may label a place with, most specific first: the order `place_parts` joins them in.
LABELS = ("landmark", "location", "place", "city", "town", "county", "region", "state", "province", "country")
_KEYS = "|".join(LABELS)
# Markdown decoration that carries no meaning for the values: bullets and numbering at a line start, heading and
# quote marks, emphasis markers (** __ and single * _ around words), backticks.
_BULLET = re.compile(r"^[^\S\n]*(?:[-*•+>]+|#+|\d{1,2}[.)])[^\S\n]+", re.MULTILINE)
_BULLET_START = re.compile(r"^[^\S\n]*[-*•+>#\d]", re.MULTILINE)  # a line that may start with a bullet
_EMPHASIS = re.compile(r"\*+|(?<!\w)_+|_+(?!\w)|`+")
# A markdown table row holding one field: "| country | France |" reads as "country: France".
_TABLE_ROW = re.compile(rf"^[^\S\n]*\|?[^\S\n]*({_KEYS})[^\S\n]*\|([^|\n]*)\|?[^\S\n]*$", re.IGNORECASE | re.MULTILINE)
# A key: at a line start or after white space or punctuation, then optional spaces, then a colon (ASCII, full
# width) or '='. The lookbehind keeps "Kansas City" or "Vatican City" (no colon) from reading as keys.
_KEY = re.compile(rf"(?:^|(?<=[\s.,;:|(\[]))({_KEYS})[^\S\n]*[:：=][^\S\n]*", re.IGNORECASE | re.MULTILINE)
_QUOTES = "\"'“”‘’«»"
_PAIRS = (("[", "]"), ("(", ")"), ("<", ">"), ("{", "}"))
_TRAIL = ".,;:!?"


def _clean_value(value: str) -> str:
    """A field value without its decoration: quotes or brackets around the whole value (a filled-in template
    placeholder: "[France]"), trailing punctuation. A lone leading apostrophe is part of a name ("'Ākra")."""
    v = value.strip().rstrip(_TRAIL).strip()
    while len(v) >= 2 and ((v[0] in _QUOTES and v[-1] in _QUOTES) or (v[0], v[-1]) in _PAIRS):
        v = v[1:-1].strip().rstrip(_TRAIL).strip()
    return v


def answer_fields(text) -> dict[str, str | None]:
    """Every labelled field of an answer: key (lower case, one of LABELS) -> value, None when empty or hedged.

    `text` is the answer (the inside of `<answer>`, or a whole tag-free reply); see the module docstring for what
    is read. Keys absent from the text are absent from the dict.
    """
    text = _HSPACE.sub(" ", to_text(text).replace("\x00", ""))
    # each pass only where its marks occur (the common answer has none of them)
    if _BULLET_START.search(text):
        text = _BULLET.sub("", text)
    if "*" in text or "_" in text or "`" in text:
        text = _EMPHASIS.sub("", text)
    if "|" in text:
        text = _TABLE_ROW.sub(r"\1: \2", text)
    lines = text.split("\n")
    found: dict[str, list[str]] = {}
    for li, line in enumerate(lines):
        keys = list(_KEY.finditer(line))
        for j, m in enumerate(keys):
            end = keys[j + 1].start() if j + 1 < len(keys) else len(line)
            value = _clean_value(line[m.end() : end])
            if not value and j + 1 == len(keys):
                value = _next_line_value(lines, li)
            found.setdefault(m.group(1).lower(), []).append(value)
    # a key written twice is a hedge (or a contradiction): no value
    return {k: (v[0] or None) if len(v) == 1 else None for k, v in found.items()}


def _next_line_value(lines: list[str], li: int) -> str:
    """The value written on the line after its key ("country:\\nFrance"), unless that line holds a key itself."""
    for nxt in lines[li + 1 :]:
        if nxt.strip():
            return "" if _KEY.search(nxt) else _clean_value(nxt)
    return ""


def place_parts(fields: dict[str, str | None]) -> list[str]:
    """The labelled place values, most specific first (landmark, location, place, city, ..., country)."""
    return [fields[k] for k in LABELS if fields.get(k)]  # type: ignore[misc]


# ---- completions --------------------------------------------------------------------------------------------------


@dataclass
class Parsed:
    """What a completion says. `country` / `city` are None when absent or ambiguous (several answer blocks or keys);
    `fields` holds every labelled value of the one answer block (see `answer_fields`)."""

    raw: str
    think: str | None = None
    answer: str | None = None
    country: str | None = None
    city: str | None = None
    n_think: int = 0
    n_answer: int = 0
    format_ok: bool = False
    answers: list[str] = field(default_factory=list)
    fields: dict[str, str | None] = field(default_factory=dict)

    @property
    def place(self) -> str:
        """'city, country' text for the geocoder (only the parts present)."""
        return ", ".join(p for p in (self.city, self.country) if p)

    @property
    def place_parts(self) -> list[str]:
        """Every labelled place value, most specific first (what the geocoder resolves)."""
        return place_parts(self.fields)


def to_text(completion) -> str:
    """A completion as text, whether TRL passes a string or a conversational message list; bytes decoded leniently."""
    if completion is None:
        return ""
    if isinstance(completion, bytes):
        return completion.decode("utf-8", errors="replace")
    if isinstance(completion, str):
        # Lone surrogates (invalid UTF-8 decoded with surrogateescape) would break any later .encode() (JSON, HTTP).
        return completion.encode("utf-8", errors="replace").decode("utf-8")
    if isinstance(completion, dict):
        content = completion.get("content", "")
        if isinstance(content, list):  # multimodal content parts
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return to_text(content)
    if isinstance(completion, (list, tuple)):
        # A message list: the assistant's content (the last message carries the completion).
        return "".join(to_text(m) for m in completion if not isinstance(m, dict) or m.get("role", "assistant") == "assistant")
    return str(completion)


def _strict_field(answer: str, name: str) -> str | None:
    """GLOBE's plain `name: value` field, as the format reward requires it (None: missing, empty or repeated)."""
    values = [m.group(2) for m in _FIELD.finditer(answer) if m.group(1).lower() == name]
    if len(values) != 1:
        return None  # missing, or hedged over several lines
    value = values[0]
    m = _NEXT_LABEL.search(value)
    if m:
        value = value[: m.start()].rstrip().rstrip(".,;")
    value = value.strip().strip(".").strip()
    return value or None


def parse_completion(completion) -> Parsed:
    """Parse a completion into think / answer / country / city / fields, never raising.

    Runs of horizontal white space are collapsed first: that changes no tag or field, and keeps the field regexes
    linear on degenerate outputs (a value holding a long run of spaces otherwise costs quadratic time).
    """
    text = _HSPACE.sub(" ", to_text(completion).replace("\x00", ""))
    thinks = _THINK.findall(text)
    # Answer blocks inside the reasoning do not count as answers.
    outside_think = _THINK.sub(" ", text)
    answers = _ANSWER.findall(outside_think)
    p = Parsed(raw=text, n_think=len(thinks), n_answer=len(answers), answers=[a.strip() for a in answers])
    if thinks:
        p.think = thinks[0].strip()
    if len(answers) == 1:
        p.answer = answers[0].strip()
        p.fields = answer_fields(p.answer)
        p.country = p.fields.get("country")
        p.city = p.fields.get("city")
    m = _STRICT.match(text)
    p.format_ok = (bool(m) and _strict_field(m.group(1), "country") is not None
                   and _strict_field(m.group(1), "city") is not None)
    return p


def parse_localizability(text) -> tuple[bool | None, float | None]:
    """A teacher's localizability judgement: (yes/no or None, score in [0, 1] or None)."""
    text = to_text(text)
    m = _LOCALIZABLE.search(text)
    label = None if m is None else m.group(1).lower() == "yes"
    s = _SCORE.search(text)
    score = None
    if s is not None:
        v = float(s.group(1))
        score = v if 0.0 <= v <= 1.0 else None
    return label, score
