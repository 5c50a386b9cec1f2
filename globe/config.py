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
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import random
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union

import yaml

PARAMS_FILE = "params.yaml"
PROFILES_DIR = "profiles"


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


class ParamsError(ValueError):
    """A parameter with a wrong name, type or value; the message names the key."""


# ---------------------------------------------------------------------------------------------------------------------
# params.yaml


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


_REF = re.compile(r"\$\{([A-Za-z_][\w-]*)\.([A-Za-z_][\w-]*)\}")


def resolve_references(params: dict[str, Any]) -> dict[str, Any]:
    """Replace `${group.key}` in string values by that value (a whole-string reference keeps the value's type)."""

    def lookup(group: str, key: str, chain: tuple[str, ...]) -> Any:
        ref = f"{group}.{key}"
        if ref in chain:
            raise ParamsError(f"params.yaml: circular reference {' -> '.join((*chain, ref))}")
        if group not in params or not isinstance(params[group], Mapping) or key not in params[group]:
            raise ParamsError(f"params.yaml: {chain[-1] if chain else '?'} refers to ${{{ref}}}, which does not exist")
        return resolve(params[group][key], (*chain, ref))

    def resolve(value: Any, chain: tuple[str, ...]) -> Any:
        if isinstance(value, str):
            m = _REF.fullmatch(value)
            if m:
                return lookup(m.group(1), m.group(2), chain)
            return _REF.sub(lambda m: str(lookup(m.group(1), m.group(2), chain)), value)
        if isinstance(value, Mapping):
            return {k: resolve(v, chain) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, chain) for v in value]
        return value

    return {g: ({k: resolve(v, (f"{g}.{k}",)) for k, v in body.items()} if isinstance(body, Mapping) else body)
            for g, body in params.items()}


def load_params(path: str | os.PathLike | None = None, resolve: bool = True) -> dict[str, Any]:
    """The whole params.yaml as a dict, `${group.key}` references resolved (unless `resolve=False`)."""
    p = Path(path) if path else project_root() / PARAMS_FILE
    with open(p, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{p}: expected a mapping of stage groups at the top level")
    return resolve_references(data) if resolve else data


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
    or, without one, from params.yaml. Validation happens here, before anything heavy is imported."""
    cls = config_class(stage)
    if namespace is None:
        return cls.from_params(stage_params(stage, path))
    names = [f.name for f in dataclasses.fields(cls) if f.name in namespace]
    return cls.from_params({k: namespace[k] for k in names})


def deep_merge(base: Any, overlay: Mapping) -> Any:
    """Merge `overlay` into `base` in place, recursing into mappings; lists and scalars are replaced."""
    for key, value in overlay.items():
        if key in base and isinstance(base[key], Mapping) and isinstance(value, Mapping):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def apply_profile(name: str, params_path: str | os.PathLike | None = None,
                  profiles_dir: str | os.PathLike | None = None) -> Path:
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


# ---------------------------------------------------------------------------------------------------------------------
# Typed stage configs

T = TypeVar("T", bound="StageConfig")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(tp, "__name__", str(tp))


def check_value(where: str, value: Any, tp: Any) -> Any:
    """`value` checked against the annotation `tp` (and lightly converted: an int where a float is expected, a
    numeric string where YAML 1.1 read `1e-6` as text, a mapping into a nested config); raises ParamsError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return check_value(where, value, a)
            except ParamsError as e:
                errors.append(e)
        raise ParamsError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is Literal:
        if value in args:
            return value
        raise ParamsError(f"{where}: must be one of {', '.join(repr(a) for a in args)}; got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ParamsError(f"{where}: expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ParamsError(f"{where}: expected true or false, got {value!r} ({type(value).__name__})")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        raise ParamsError(f"{where}: expected an integer, got {value!r} ({type(value).__name__})")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ParamsError(f"{where}: expected a number, got {value!r} ({type(value).__name__})")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ParamsError(f"{where}: expected a string, got {value!r} ({type(value).__name__})")
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, (list, tuple)):
            inner = args[0] if args else Any
            return [check_value(f"{where}[{i}]", v, inner) for i, v in enumerate(value)]
        raise ParamsError(f"{where}: expected a list, got {value!r} ({type(value).__name__})")
    if origin is dict or tp is dict:
        if isinstance(value, Mapping):
            kt, vt = args if args else (Any, Any)
            return {check_value(f"{where} key", k, kt): check_value(f"{where}.{k}", v, vt) for k, v in value.items()}
        raise ParamsError(f"{where}: expected a mapping, got {value!r} ({type(value).__name__})")
    if isinstance(tp, type) and issubclass(tp, StageConfig):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return tp.from_params(value, where=where)
        raise ParamsError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ParamsError(f"{where}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


@dataclass
class StageConfig:
    """Base of every typed config: `from_params` refuses unknown keys and checks types; `validate` checks values.

    Subclasses are dataclasses whose fields are the params group's keys (with the `common` keys the stage reads);
    `group` names the group in messages.
    """

    group: ClassVar[str] = "params"

    @classmethod
    def from_params(cls: type[T], params: Mapping[str, Any] | None, *, where: str | None = None) -> T:
        where = where or cls.group
        params = dict(params or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise ParamsError(f"unknown {where} parameter(s) {unknown}; known: {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        values = {k: check_value(f"{where}.{k}", v, hints[k]) for k, v in params.items()}
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check values and their combinations; raise ParamsError naming the key."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def require(self, ok: bool, key: str, message: str) -> None:
        """Raise ParamsError `group.key: message` unless `ok`."""
        if not ok:
            raise ParamsError(f"{self.group}.{key}: {message}")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_env_name(value: Any, where: str) -> str | None:
    """`value` if it is the NAME of an environment variable (or None); else a ParamsError that never shows it.

    Secrets come from environment variables only: a key pasted where its variable's name belongs (`api_key_env:
    sk-...`) must not be echoed into an error, a log or an executed notebook.
    """
    if value is None:
        return None
    if isinstance(value, str) and _ENV_NAME.fullmatch(value) and len(value) <= 64 and not value.startswith("sk"):
        return value
    raise ParamsError(f"{where} must be the NAME of an environment variable holding the key (such as "
                      "OPENAI_API_KEY), not the key itself; the value given looks like a key and is not shown here. "
                      "Put the key in an environment variable and name that variable instead")


# ---------------------------------------------------------------------------------------------------------------------
# Environment


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


def read_only_datasets() -> None:
    """Turn off `datasets`' cache files for this process: `.map` / `.filter` on a dataset loaded from a finished DVC
    output would otherwise write cache-*.arrow files beside it (changing the output). Stages call this once."""
    import datasets

    datasets.disable_caching()


def prepare_run(seed: int, offline: bool) -> None:
    """What every stage does first: seed everything, forbid hub downloads when offline, keep `datasets` read-only,
    and keep library progress bars (weight loading, dataset maps) out of the stage's streamed output."""
    if offline:
        offline_hub()
    seed_everything(seed)
    read_only_datasets()
    quiet_libraries()


def quiet_libraries() -> None:
    """No tqdm bars from transformers (weight loading), the hub or datasets (maps): stages print their own progress
    lines. Environment switches, read at import, so that nothing is imported here (unsloth must come first)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # transformers reads huggingface_hub's switch
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    if "datasets" in sys.modules:  # already imported: the environment switch came too late for it
        sys.modules["datasets"].disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    import warnings

    # transformers 5 renamed `is_gradient_checkpointing`; PEFT (PeftModel.__init__) and TRL (generation unwrapping)
    # still read the old name on every model load and rollout. Their calls, not ours (ours use the new names).
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


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
