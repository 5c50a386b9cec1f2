"""Versioned prompts and the chat messages that carry them.

GLOBE's policy reasons inside `<think>…</think>` and answers inside `<answer>…</answer>` with a `country:` line and a
`city:` line (`format_target` writes that target; `globe.answer` reads it back). Prompts carry a version: the caches
key on it and on the prompt text, so editing a prompt re-queries the teachers instead of silently mixing answers to
two different questions.
"""

from __future__ import annotations

PROMPT_VERSION = "globe-v1"

# GLOBE's reasoning prompt (policy, teachers, evaluation): reason about visible clues, then answer in a fixed format.
REASONING_PROMPT = (
    "Where was this photo taken? Look for visual clues such as landmarks, architecture, signs and text, language, "
    "vehicles and which side of the road they drive on, vegetation, terrain, climate and people's clothing. "
    "Reason step by step about the clues inside <think> </think>. Then give your final answer inside "
    "<answer> </answer> as exactly two lines:\ncountry: <country name>\ncity: <city name>"
)

# Zero-shot evaluation without reasoning (GLOBE evaluates base VLMs with and without the reasoning prompt).
DIRECT_PROMPT = (
    "Where was this photo taken? Answer inside <answer> </answer> as exactly two lines:\n"
    "country: <country name>\ncity: <city name>"
)

# Teacher localizability judgement (distillation filter 1).
LOCALIZABILITY_PROMPT = (
    "Could a careful observer tell where this photo was taken, to the country or the city, from what is visible in "
    "it (landmarks, signs, architecture, landscape)? Answer with two lines:\nlocalizable: yes or no\n"
    "score: a number between 0 and 1 giving how confidently the location can be determined"
)

# Reward-model question (the localizability reward reads P(yes) / (P(yes) + P(no)) from its first token).
REWARD_MODEL_PROMPT = (
    "Here is a photo and a reasoning about where it was taken:\n{reasoning}\n"
    "Is this image visually locatable, given this reasoning? Answer yes or no."
)

PROMPTS: dict[str, str] = {
    "reasoning": REASONING_PROMPT,
    "direct": DIRECT_PROMPT,
    "localizability": LOCALIZABILITY_PROMPT,
    "reward_model": REWARD_MODEL_PROMPT,
}


def format_target(think: str, country: str, city: str) -> str:
    """The assistant turn GLOBE trains on."""
    return f"<think>{think.strip()}</think>\n<answer>country: {country}\ncity: {city}</answer>"


def build_messages(prompt: str, with_image: bool = True, answer: str | None = None) -> list[dict]:
    """Chat messages in the processor's multimodal format: user turn (image + prompt), optional assistant turn."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": prompt}]
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages
