"""`python -m globe.train.grpo` (single process, or under `accelerate launch` / `torchrun`)."""

import sys

from globe.train.grpo.trainer import cli

sys.exit(cli())
