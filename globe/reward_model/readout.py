"""Reading the reward model: its prompt, its inputs, and P(yes) / (P(yes) + P(no)) from the first answer token.

Two input formats (`reward_model.input_format`):
- `project`: one user turn, the image and `REWARD_MODEL_PROMPT` with the reasoning (the think part) inside it;
- `official`: GLOBE's (plugin.py `GeoLocatablityORM`): a system turn holding the official prompt
  (`globe-rm-system`: "...then output “yes” or “no” directly."), then a user turn with the image and the WHOLE
  completion (think and answer), as the policy wrote it.

Two readouts (`reward_model.readout`):
- `vocabulary`: every vocabulary token that decodes to a case variant of "yes" / "no" (with or without a leading
  space), summed over the full next-token distribution;
- `top5`: GLOBE's: only the first token's 5 most likely tokens, and only those that are exactly "yes", "Yes", "YES"
  (or "no", "No", "NO"); a variant outside the top 5 counts as 0, and with neither among them the score is 0, as
  GLOBE's P(yes) / (P(yes) + P(no) + 1e-19) gives (counted in the scorer's `stats["neither"]`, not a failure).
From an OpenAI-compatible endpoint the readout always comes from the `top_logprobs` the server returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from globe.answer import to_text
from globe.prompts import GLOBE_RM_SYSTEM_PROMPT, REWARD_MODEL_PROMPT

YES, NO = "yes", "no"
EXACT_YES, EXACT_NO = ("yes", "Yes", "YES"), ("no", "No", "NO")  # GLOBE's token lists (plugin.py)
INPUT_FORMATS = ("project", "official")
READOUTS = ("vocabulary", "top5")
OFFICIAL_TOP_K = 5


def input_text(input_format: str) -> str:
    """What the reward model judges: "reasoning" (the think part, project format) or "completion" (official)."""
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
    return "completion" if input_format == "official" else "reasoning"


def reward_messages(text: str, input_format: str = "project", with_image: bool = True) -> list[dict]:
    """The chat messages the reward model answers yes / no to (processor format; the image as a placeholder)."""
    image = [{"type": "image"}] if with_image else []
    if input_format == "official":
        return [{"role": "system", "content": [{"type": "text", "text": GLOBE_RM_SYSTEM_PROMPT}]},
                {"role": "user", "content": [*image, {"type": "text", "text": text}]}]
    if input_format != "project":
        raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
    return [{"role": "user", "content": [*image, {"type": "text", "text": text}]}]


def reward_user_text(text: str, input_format: str = "project") -> str:
    """The user turn's text: the reward prompt around the reasoning (project) or the completion itself (official)."""
    return text if input_format == "official" else reward_prompt(text)


def yes_no_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """Ids of every vocabulary token that decodes to a case variant of "yes" / "no", with or without leading spaces."""
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    yes, no = [], []
    for piece, idx in tok.get_vocab().items():
        low = piece.lower()
        if "yes" not in low and "no" not in low:  # cheap filter before decoding
            continue
        word = tok.decode([idx]).lstrip(" ").lower()
        if word == YES:
            yes.append(idx)
        elif word == NO:
            no.append(idx)
    if not yes or not no:
        raise ValueError(f"the tokenizer has no single token for yes ({yes}) or no ({no}); cannot read P(yes)")
    return sorted(yes), sorted(no)


def yes_no_probabilities(logits, yes_ids: Sequence[int], no_ids: Sequence[int]):
    """P(yes) / (P(yes) + P(no)) for each row of `logits` (..., vocab), as a float64 tensor (...)."""
    import torch

    logits = logits.double()  # the yes/no slices are tiny; double keeps the readout exact to ~1e-15
    lse_yes = torch.logsumexp(logits[..., list(yes_ids)], dim=-1)
    lse_no = torch.logsumexp(logits[..., list(no_ids)], dim=-1)
    # sum_yes / (sum_yes + sum_no) = sigmoid(logsumexp(yes) - logsumexp(no)); the softmax normaliser cancels.
    return torch.sigmoid(lse_yes - lse_no)


def clean_reasoning(reasoning: Any, max_chars: int, special_tokens: Sequence[str] = ()) -> str:
    """Reasoning as bounded plain text: None -> "", messages/bytes -> text, special tokens removed, head kept."""
    text = to_text(reasoning).replace("\x00", "")
    for t in special_tokens:  # a literal <|image_pad|> in the text would desynchronise the processor's image tokens
        if t in text:
            text = text.replace(t, "")
    return text[:max_chars]


def reward_prompt(reasoning: str) -> str:
    return REWARD_MODEL_PROMPT.format(reasoning=reasoning)


def yes_no_from_top_logprobs(top_logprobs: Sequence[Mapping[str, Any]], exact: bool = False) -> tuple[float, bool]:
    """P(yes) / (P(yes) + P(no)) from an OpenAI `top_logprobs` list, and whether both yes and no were among them.

    A variant absent from the top k counts as probability 0 (GLOBE's readout), so with only one of the two present
    the value is 0 or 1: `EndpointScorer` counts those items (`stats["one_sided"]`); raise `top_logprobs` if many.
    `exact` (GLOBE's rule): only the tokens "yes"/"Yes"/"YES" and "no"/"No"/"NO" count, as written (" yes" with a
    leading space or "yEs" do not), and neither of them gives 0.0 (GLOBE's value) instead of `NoYesNoError`;
    otherwise any case, with or without leading spaces.
    """
    p_yes = p_no = 0.0
    for entry in top_logprobs:
        token = str(entry.get("token", ""))
        if exact:
            is_yes, is_no = token in EXACT_YES, token in EXACT_NO
        else:
            word = token.lstrip(" ").lower()
            is_yes, is_no = word == YES, word == NO
        if is_yes:
            p_yes += math.exp(float(entry["logprob"]))
        elif is_no:
            p_no += math.exp(float(entry["logprob"]))
    if p_yes + p_no <= 0.0:
        if exact:  # GLOBE's definition: P(yes) / (P(yes) + P(no) + 1e-19) = 0
            return 0.0, False
        raise NoYesNoError(f"neither yes nor no among the {len(top_logprobs)} top logprobs")
    return p_yes / (p_yes + p_no), p_yes > 0 and p_no > 0


def top5_exact_probability(logprobs, tokenizer, k: int = OFFICIAL_TOP_K) -> tuple[float, bool]:
    """GLOBE's readout from a full first-token log-probability vector: the top `k` tokens, decoded, exact matches."""
    import torch

    tok = getattr(tokenizer, "tokenizer", tokenizer)
    values, ids = torch.topk(logprobs.double(), k)
    top = [{"token": tok.decode([int(i)]), "logprob": float(v)} for v, i in zip(values, ids)]
    return yes_no_from_top_logprobs(top, exact=True)


class NoYesNoError(ValueError):
    """An answer's top logprobs hold no yes/no token: no score can be read (raise `top_logprobs`)."""
