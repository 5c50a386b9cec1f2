"""The one parser for model answers: what a completion says (think, answer, country, city) and a teacher's
localizability judgement.

GLOBE's policy reasons inside `<think>…</think>` and answers inside `<answer>…</answer>` with a `country:` line and a
`city:` line. Every consumer (distillation, rewards, evaluation, the geocoder, `globe score`) reads completions with
`parse_completion`, so a completion means the same thing everywhere. It never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_THINK = re.compile(r"<think>(.*?)</think>", re.S | re.I)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
# A `country:` / `city:` field at a line start or after . , ; (one-line answers). Horizontal white space only
# ([^\S\n]), so an empty value never swallows the next line. The value is the rest of the line, captured in a
# lookahead so that a second label on the same line is still found; `(.*?)\s*$` would backtrack quadratically.
_FIELD = re.compile(r"(?:^|(?<=[.,;]))[^\S\n]*(country|city)[^\S\n]*[:：][^\S\n]*(?=([^\n]*))", re.I | re.M)
# A one-line answer ("country: France. city: Lyon") ends the country value where the next label starts.
_NEXT_LABEL = re.compile(r"\b(?:country|city)[^\S\n]*[:：]", re.I)
# The whole completion in the one accepted shape: think, then answer, then nothing.
_STRICT = re.compile(r"\A\s*<think>(?:(?!</?think>|</?answer>).)*</think>\s*<answer>((?:(?!</?think>|</?answer>).)*)</answer>\s*\Z", re.S | re.I)
_HSPACE = re.compile(r"[^\S\n]{2,}")
_LOCALIZABLE = re.compile(r"localizable\s*[:：]\s*(yes|no)", re.I)
# A score in [0, 1] written as a decimal; "score: 10" or "score: 15%" is not one (no digit, '.' or % may follow).
_SCORE = re.compile(r"score\s*[:：]\s*([01](?:\.\d+)?|\.\d+)(?![\d.%])", re.I)


@dataclass
class Parsed:
    """What a completion says. `country` / `city` are None when absent or ambiguous (several answer blocks or lines)."""

    raw: str
    think: str | None = None
    answer: str | None = None
    country: str | None = None
    city: str | None = None
    n_think: int = 0
    n_answer: int = 0
    format_ok: bool = False
    answers: list[str] = field(default_factory=list)

    @property
    def place(self) -> str:
        """'city, country' text for the geocoder (only the parts present)."""
        return ", ".join(p for p in (self.city, self.country) if p)


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


def _field(answer: str, name: str) -> str | None:
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
    """Parse a completion into think / answer / country / city, never raising.

    Runs of horizontal white space are collapsed first: that changes no tag or field, and keeps the field regex
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
        p.country = _field(p.answer, "country")
        p.city = _field(p.answer, "city")
    m = _STRICT.match(text)
    p.format_ok = bool(m) and _field(m.group(1), "country") is not None and _field(m.group(1), "city") is not None
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
