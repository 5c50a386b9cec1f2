"""params.yaml itself: where it is, reading it, resolving its `${group.key}` references, merging overlays.

`params.yaml` at the project root is the single source of parameters, one group per stage plus `common`; a value may
refer to another one as `${group.key}` (say a path once: `sft.dataset: ${distill.out}`), which `load_params`
resolves. Every other part of `globe.config` builds on this module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"


class ParamsError(ValueError):
    """A parameter with a wrong name, type or value; the message names the key."""


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


def deep_merge(base: Any, overlay: Mapping) -> Any:
    """Merge `overlay` into `base` in place, recursing into mappings; lists and scalars are replaced."""
    for key, value in overlay.items():
        if key in base and isinstance(base[key], Mapping) and isinstance(value, Mapping):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base
