"""The pipeline's stages: each notebook's params group, the `common` keys it reads and its typed config.

A stage's parameters are exactly its group plus those `common` keys (`stage_params`, what `globe params STAGE` prints
for papermill); `stage_config` builds its typed config from them (or from a notebook's namespace), and
`sync_notebook_parameters` writes them into the notebook's `parameters` cell.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from globe.config.params import load_params, project_root
from globe.config.typed import StageConfig


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: its params group, the `common` keys it reads, and its typed config ("module:Class")."""

    group: str
    common: tuple[str, ...]
    config: str


# Notebook -> its stage. The order is the pipeline's.
STAGES: dict[str, Stage] = {
    "01_data": Stage("data", ("seed", "offline"), "globe.data:DataParams"),
    "02_distill": Stage("distill", ("seed", "offline"), "globe.distill:DistillParams"),
    "03_sft": Stage("sft", ("seed", "base_model", "offline"), "globe.train.sft:SFTParams"),
    "03b_reward_model": Stage("reward_model", ("seed", "base_model", "offline"),
                              "globe.reward_model:RewardModelParams"),
    "04_grpo": Stage("grpo", ("seed", "base_model", "offline"), "globe.train.grpo:GRPOParams"),
    "05_eval": Stage("eval", ("seed", "base_model", "offline"), "globe.evaluate:EvalParams"),
    "06_analysis": Stage("analysis", ("seed",), "globe.analysis:AnalysisParams"),
}


def stage_of(name: str) -> Stage:
    """A stage by notebook name ("04_grpo") or params group ("grpo")."""
    if name in STAGES:
        return STAGES[name]
    for stage in STAGES.values():
        if stage.group == name:
            return stage
    raise KeyError(f"no stage or params group {name!r}; stages: {list(STAGES)}")


def notebook_of(name: str) -> str:
    """The notebook name of a stage given by notebook name or group."""
    stage = stage_of(name)
    return next(nb for nb, s in STAGES.items() if s == stage)


def stage_params(stage: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Exactly a notebook's parameters: the `common` keys its stage uses, then its group (references resolved)."""
    try:
        st = stage_of(stage)
    except KeyError:
        raise KeyError(f"params.yaml has no group {stage!r}; stages: {list(STAGES)}") from None
    params = load_params(path)
    if st.group not in params:
        raise KeyError(f"params.yaml has no group {st.group!r}; groups: {sorted(params)}")
    common = params.get("common") or {}
    missing = [k for k in st.common if k not in common]
    if missing:
        raise KeyError(f"params.yaml: common lacks {missing}, which stage {st.group!r} reads")
    return {**{k: common[k] for k in st.common}, **(params[st.group] or {})}


def config_class(stage: str) -> type[StageConfig]:
    module, _, name = stage_of(stage).config.partition(":")
    return getattr(importlib.import_module(module), name)


def stage_config(stage: str, namespace: Mapping[str, Any] | None = None, path: str | os.PathLike | None = None):
    """A stage's typed config, from a notebook's namespace (its parameters: `stage_config("04_grpo", globals())`)
    or, without one, from params.yaml. Validation happens here, before anything heavy is imported; so does
    `quiet_libraries` (environment switches only), so that no library bar reaches the notebook before a stage's own
    `prepare_run`."""
    from globe.config.environment import quiet_libraries

    quiet_libraries()
    cls = config_class(stage)
    if namespace is None:
        return cls.from_params(stage_params(stage, path))
    names = [f.name for f in dataclasses.fields(cls) if f.name in namespace]
    return cls.from_params({k: namespace[k] for k in names})


def notebook_path(stage: str, root: str | os.PathLike | None = None) -> Path:
    return Path(root or project_root()) / "notebooks" / f"{notebook_of(stage)}.ipynb"


def sync_notebook_parameters(stage: str, params_path: str | os.PathLike | None = None) -> bool:
    """Rewrite a notebook's `parameters` cell from params.yaml (keeping its leading comment lines), so that the
    defaults a user sees in jupyter, and that `papermill ... -p steps 2000` starts from, are params.yaml's.
    Returns True when the cell changed."""
    import nbformat

    values = stage_params(stage, params_path)
    path = notebook_path(stage, Path(params_path).parent if params_path else None)
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in (c.metadata.get("tags") or [])]
    if len(cells) != 1:
        raise ValueError(f"{path}: expected one cell tagged 'parameters', found {len(cells)}")
    head = [line for line in cells[0].source.splitlines() if line.startswith("#")]
    from pprint import pformat

    source = "\n".join(head + [f"{k} = {pformat(v, width=116 - len(k), sort_dicts=False)}" for k, v in values.items()])
    if source == cells[0].source:
        return False
    cells[0].source = source
    nbformat.write(nb, path)
    return True
