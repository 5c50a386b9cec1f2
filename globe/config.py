"""Parameters, profiles, paths and seeding.

`params.yaml` at the project root is the single source of parameters, grouped by stage. Each notebook takes the
keys of `common` plus those of its own stage as papermill parameters; `dvc.yaml` passes them with
`papermill ... -y "$(globe params STAGE)"`. A profile (`profiles/NAME.yaml`) is a set of overrides that
`globe profile NAME` merges into params.yaml, comments kept, so the paper profile runs the same code path.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"
PROFILES_DIR = "profiles"

# Notebook -> the params.yaml group it reads (plus `common`).
STAGES: dict[str, str] = {
    "01_data": "data",
    "02_distill": "distill",
    "03_sft": "sft",
    "04_grpo": "grpo",
    "05_eval": "eval",
    "06_analysis": "analysis",
}


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest directory at or above `start` (default: cwd) holding params.yaml."""
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / PARAMS_FILE).is_file():
            return d
    raise FileNotFoundError(f"no {PARAMS_FILE} found at or above {here}; run from inside the globe repository")


def enter_project_root() -> Path:
    """chdir to the project root so params' relative paths work from notebooks/ (jupyter) and the root (papermill)."""
    root = project_root()
    os.chdir(root)
    return root


def load_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The whole params.yaml as a dict."""
    p = Path(path) if path else project_root() / PARAMS_FILE
    with open(p, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping of stage groups at the top level")
    return data


def stage_params(stage: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """`common` merged with one stage's group (the stage wins): exactly a notebook's parameters."""
    params = load_params(path)
    group = STAGES.get(stage, stage)
    if group not in params:
        raise KeyError(f"params.yaml has no group {group!r}; groups: {sorted(params)}")
    return {**(params.get("common") or {}), **(params[group] or {})}


def deep_merge(base: Any, overlay: Mapping) -> Any:
    """Merge `overlay` into `base` in place, recursing into mappings; lists and scalars are replaced."""
    for key, value in overlay.items():
        if key in base and isinstance(base[key], Mapping) and isinstance(value, Mapping):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def apply_profile(name: str, params_path: str | os.PathLike | None = None, profiles_dir: str | os.PathLike | None = None) -> Path:
    """Merge `profiles/<name>.yaml` into params.yaml, keeping its comments. Returns the params path."""
    from ruamel.yaml import YAML

    root = project_root(Path(params_path).parent if params_path else None)
    params_path = Path(params_path) if params_path else root / PARAMS_FILE
    profile_path = Path(profiles_dir or root / PROFILES_DIR) / f"{name}.yaml"
    if not profile_path.is_file():
        known = sorted(p.stem for p in profile_path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"no profile {name!r} ({profile_path}); known profiles: {known}")
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 120
    with open(params_path, encoding="utf-8") as f:
        params = rt.load(f)
    with open(profile_path, encoding="utf-8") as f:
        # Round-trip load keeps each scalar's written form: a float such as 1.0e-6 dumped back as 1e-06 would read
        # as a string to YAML 1.1 parsers (PyYAML, DVC).
        overlay = rt.load(f) or {}
    unknown = [k for k in overlay if k not in params]
    if unknown:
        raise KeyError(f"profile {name!r} names groups that params.yaml lacks: {unknown}")
    deep_merge(params, overlay)
    params.setdefault("common", {})["profile"] = name
    with open(params_path, "w", encoding="utf-8") as f:
        rt.dump(params, f)
    return params_path


def seed_everything(seed: int) -> None:
    """Seed python, numpy and (when installed) torch, for runs that repeat exactly."""
    random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def offline_hub() -> None:
    """Forbid hub downloads for the default profile: a missing local file must fail loudly, not fetch."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def notebook_path(stage: str, root: str | os.PathLike | None = None) -> Path:
    return Path(root or project_root()) / "notebooks" / f"{stage}.ipynb"


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
