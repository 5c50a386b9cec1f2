"""Versioned prompts and the chat messages that carry them.

GLOBE's policy reasons inside `<think>…</think>` and answers inside `<answer>…</answer>` with a `country:` line and a
`city:` line (`format_target` writes that target; `globe.answer` reads it back). Prompts carry a version: the caches
key on it and on the prompt text, so editing a prompt re-queries the teachers instead of silently mixing answers to
two different questions.
"""

from __future__ import annotations

from pathlib import Path

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

# The project's own prompts, by name (the tiny tokenizer's corpus reads exactly these, so adding official prompts
# below never changes the tiny model).
PROJECT_PROMPTS: dict[str, str] = {
    "reasoning": REASONING_PROMPT,
    "direct": DIRECT_PROMPT,
    "localizability": LOCALIZABILITY_PROMPT,
    "reward_model": REWARD_MODEL_PROMPT,
}

# GLOBE's official prompts, shipped verbatim as data (globe/assets/prompts/SOURCE.md: source and licence). They are
# inputs of the released checkpoints: `globe-train` (training, dataset.py `prompt_en`), `globe-cot` / `globe-no-cot`
# (evaluation, eval.py), `globe-rm-system` (the reward model's system prompt, plugin.py).
OFFICIAL_PROMPT_DIR = Path(__file__).parent / "assets" / "prompts"
OFFICIAL_PROMPT_NAMES = ("globe-train", "globe-cot", "globe-no-cot", "globe-rm-system")


def _official(name: str) -> str:
    with open(OFFICIAL_PROMPT_DIR / f"{name}.txt", encoding="utf-8", newline="") as f:
        return f.read()


OFFICIAL_PROMPTS: dict[str, str] = {name: _official(name) for name in OFFICIAL_PROMPT_NAMES}
GLOBE_TRAIN_PROMPT = OFFICIAL_PROMPTS["globe-train"]
GLOBE_COT_PROMPT = OFFICIAL_PROMPTS["globe-cot"]
GLOBE_NO_COT_PROMPT = OFFICIAL_PROMPTS["globe-no-cot"]
GLOBE_RM_SYSTEM_PROMPT = OFFICIAL_PROMPTS["globe-rm-system"]

PROMPTS: dict[str, str] = {**PROJECT_PROMPTS, **OFFICIAL_PROMPTS}


def prompt_named(name: str, key: str = "prompt") -> str:
    """The text of the prompt called `name` in `PROMPTS`; a clear error naming `key` (a params key) otherwise."""
    if name not in PROMPTS:
        raise KeyError(f"{key}: unknown prompt {name!r}; known: {sorted(PROMPTS)}")
    return PROMPTS[name]


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
