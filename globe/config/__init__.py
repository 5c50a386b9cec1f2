"""Parameters: params.yaml, its stages, profiles, typed stage configs, paths and seeding.

`params.yaml` at the project root is the single source of parameters, one group per stage (`data`, `distill`, `sft`,
`reward_model`, `grpo`, `eval`, `analysis`) plus `common` (seed, base model, offline). A value may refer to another
one as `${group.key}` (say a path once: `sft.dataset: ${distill.out}`); `load_params` resolves the references.

Each stage is a notebook (`STAGES`): its parameters are its group plus the `common` keys it uses, which `dvc.yaml`
passes with `papermill ... -y "$(globe params STAGE)"`. Each stage has a typed config, a dataclass deriving from
`StageConfig`, built the one way everything builds them: `StageConfig.from_params(mapping)`, which refuses unknown
keys and checks every value's type and range before anything heavy loads (so `-p steps abc` fails in milliseconds
with a message naming the key). Notebooks call `stage_config(stage, globals())`.

A profile (`profiles/NAME.yaml`) is a set of overrides that `globe profile NAME` merges into params.yaml, comments
kept, so a recipe runs the same code path with other values.

The parts: `params` (the file, its references), `stages` (the stage registry, stage parameters and configs, notebook
parameter cells), `typed` (`StageConfig` and its checks), `profiles` (recipes), `environment` (run setup).
"""

from __future__ import annotations

from globe.config.environment import offline_hub, prepare_run, read_only_datasets, use_reproducible_cpu
from globe.config.params import ParamsError, deep_merge, enter_project_root, load_params, project_root
from globe.config.profiles import apply_profile, profile_chain, render_profile
from globe.config.stages import (
    STAGES,
    config_class,
    notebook_of,
    stage_config,
    stage_of,
    stage_params,
    sync_notebook_parameters,
)
from globe.config.typed import StageConfig, check_env_name

__all__ = ["STAGES", "ParamsError", "StageConfig", "apply_profile", "check_env_name", "config_class", "deep_merge",
           "enter_project_root", "load_params", "notebook_of", "offline_hub", "prepare_run", "profile_chain",
           "project_root", "read_only_datasets", "render_profile", "stage_config", "stage_of", "stage_params",
           "sync_notebook_parameters", "use_reproducible_cpu"]
