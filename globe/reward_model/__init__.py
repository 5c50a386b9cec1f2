"""The localizability reward model: train it, score with it in process, serve it, and call a served one.

GLOBE's localizability reward asks a reward model "is this image visually locatable, given this reasoning?" and reads
P(yes) / (P(yes) + P(no)) from the distribution of the first generated token, summing every vocabulary token that
decodes to a case variant of "yes" / "no" with or without a leading space. The paper's reward model (a LoRA on the
VLM) and its data are unreleased and its code calls a hard-coded server that silently returns 0 on any error; here:

One module per job: `config` (settings, shared names), `readout` (prompt, inputs, the yes/no readout), `scorer`
(in-process scoring and the error accounting every scorer shares), `client` (`EndpointScorer`), `server` (`serve`),
`metrics` (held-out figures), `train` (`train_reward_model`).

- `train_reward_model(cfg)` fits a LoRA (PEFT, via `globe.models.load_vlm`) with TRL's `SFTTrainer` on the
  localizability labels written by distillation: a conversational prompt-completion dataset (user turn = image +
  `REWARD_MODEL_PROMPT`, assistant turn = "yes" / "no"), loss on the assistant turn only. It holds out a seeded split
  (grouped by image id, stratified by label) and writes accuracy, ROC AUC, expected calibration error and the class
  balance to a JSON file.
- `LocalizabilityScorer` scores (image, reasoning) pairs in batches in this process, either from its own copy of the
  base model + adapter, or as a second named adapter on the policy's `PeftModel` (one copy of the base weights).
- `serve(scorer, ...)` puts a scorer behind an OpenAI-compatible `POST /v1/chat/completions` returning first-token
  `logprobs` / `top_logprobs` (`globe serve-reward-model`), and `EndpointScorer` calls such an endpoint as GLOBE's
  setup does, with timeouts, retries with backoff and an error budget.

Failures are never silently turned into a score. A scorer counts each failed item in `scorer.stats` (`errors`,
`errors_by_kind`, `last_error`) and logs it, then, by `on_error`: "nan" returns NaN for it, "neutral" returns the
neutral score 0.5 (for a GRPO reward: the item neither pushes towards nor away from its reasoning), "raise" raises
`RewardModelError` at once. Past `error_budget` failed items it raises `RewardModelError` whatever `on_error` says.
For GRPO use `on_error="neutral"` with a budget (the localizability reward in globe.rewards rejects NaN): a few bad
requests cost a neutral reward each, counted and logged, and a dead server stops the run with a clear error.
"""

from globe.reward_model.client import EndpointScorer
from globe.reward_model.config import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_MODEL_NAME,
    NEUTRAL,
    SETTINGS_FILE,
    RewardModelError,
    RewardModelParams,
)
from globe.reward_model.metrics import classification_metrics, expected_calibration_error, roc_auc
from globe.reward_model.readout import (
    NO,
    YES,
    NoYesNoError,
    clean_reasoning,
    reward_prompt,
    yes_no_from_top_logprobs,
    yes_no_probabilities,
    yes_no_token_ids,
)
from globe.reward_model.scorer import LocalizabilityScorer, Scorer
from globe.reward_model.server import RewardModelServer, serve
from globe.reward_model.train import load_labels, split_indices, train_reward_model

__all__ = [
    "DEFAULT_API_KEY_ENV", "DEFAULT_MODEL_NAME", "NEUTRAL", "SETTINGS_FILE", "NO", "YES", "EndpointScorer",
    "LocalizabilityScorer", "NoYesNoError", "RewardModelError", "RewardModelParams", "RewardModelServer", "Scorer",
    "classification_metrics", "clean_reasoning", "expected_calibration_error", "load_labels", "reward_prompt",
    "roc_auc", "serve", "split_indices", "train_reward_model", "yes_no_from_top_logprobs", "yes_no_probabilities",
    "yes_no_token_ids",
]
