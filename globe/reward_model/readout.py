"""Reading the reward model: its prompt, its inputs, and P(yes) / (P(yes) + P(no)) from the first answer token.

In process the readout sums every vocabulary token that decodes to a case variant of "yes" / "no" (with or without a
leading space) over the full next-token distribution; from an OpenAI-compatible endpoint it reads the `top_logprobs`
the server returns (a variant outside the top k counts as 0, as in GLOBE's code).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from globe.answer import to_text
from globe.prompts import REWARD_MODEL_PROMPT

YES, NO = "yes", "no"


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


def yes_no_from_top_logprobs(top_logprobs: Sequence[Mapping[str, Any]]) -> tuple[float, bool]:
    """P(yes) / (P(yes) + P(no)) from an OpenAI `top_logprobs` list, and whether both yes and no were among them.

    A variant absent from the top k counts as probability 0 (GLOBE's readout), so with only one of the two present
    the value is 0 or 1: `EndpointScorer` counts those items (`stats["one_sided"]`); raise `top_logprobs` if many.
    """
    p_yes = p_no = 0.0
    for entry in top_logprobs:
        word = str(entry.get("token", "")).lstrip(" ").lower()
        if word == YES:
            p_yes += math.exp(float(entry["logprob"]))
        elif word == NO:
            p_no += math.exp(float(entry["logprob"]))
    if p_yes + p_no <= 0.0:
        raise NoYesNoError(f"neither yes nor no among the {len(top_logprobs)} top logprobs")
    return p_yes / (p_yes + p_no), p_yes > 0 and p_no > 0


class NoYesNoError(ValueError):
    """An answer's top logprobs hold no yes/no token: no score can be read (raise `top_logprobs`)."""
