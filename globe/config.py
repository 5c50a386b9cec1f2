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


# ---------------------------------------------------------------------------------------------------------------------
# Profiles: recipes composed over the default
#
# A profile file holds overrides in params.yaml's layout, plus an optional top-level `extends: OTHER` (the profile it
# builds on: `unsloth` extends `paper`). `globe profile NAME` always starts from the DEFAULT profile's text (never
# from whatever recipe params.yaml holds now), merges the chain of overlays into it and writes params.yaml with the
# default's layout and comments, except that: a changed value's end-of-line comment becomes the profile's comment for
# it (or is removed: a comment written for the old value would now mislead); block comments the profile writes above
# a key replace the default's; nulls stay `null`; the header says which recipe the file holds. The default's text is
# kept in `.globe/params.default.yaml` the first time params.yaml is seen holding it, so `globe profile default`
# restores it byte for byte (as does `git checkout params.yaml`).

DEFAULT_PROFILE = "default"
SAVED_DEFAULT = Path(".globe") / "params.default.yaml"
PROFILE_META_KEYS = ("extends",)  # top-level profile keys that are not params groups
_DEFAULT_HEADER = "# This file is the default (smoke) profile"  # first line of the header paragraph a recipe replaces


def _round_trip():
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    return rt


def _profile_of(text: str) -> str | None:
    data = yaml.safe_load(text) or {}
    return ((data.get("common") or {}) if isinstance(data, dict) else {}).get("profile")


def profile_chain(name: str, profiles_dir: str | os.PathLike) -> list[Path]:
    """The profile files `name` is built from, base first (following `extends:`)."""
    chain: list[Path] = []
    current: str | None = name
    while current is not None and current != DEFAULT_PROFILE:
        path = Path(profiles_dir) / f"{current}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))
            raise FileNotFoundError(f"no profile {current!r} ({path}); known profiles: {[DEFAULT_PROFILE, *known]}")
        if path in chain:
            raise ParamsError(f"profile {name!r}: `extends` loops ({' -> '.join(p.stem for p in chain)} -> {current})")
        chain.insert(0, path)
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        current = data.get("extends")
    return chain


def default_params_text(params_path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """The default profile's params.yaml text: params.yaml itself when it holds the default (a copy is saved to
    `.globe/params.default.yaml`), else that copy, else the committed params.yaml (`git show HEAD:params.yaml`)."""
    import subprocess

    params_path = Path(params_path)
    root = Path(root) if root else params_path.parent
    saved = root / SAVED_DEFAULT
    text = params_path.read_text(encoding="utf-8")
    if _profile_of(text) == DEFAULT_PROFILE:
        saved.parent.mkdir(parents=True, exist_ok=True)
        if not saved.is_file() or saved.read_text(encoding="utf-8") != text:
            saved.write_text(text, encoding="utf-8")
        return text
    if saved.is_file() and _profile_of(saved.read_text(encoding="utf-8")) == DEFAULT_PROFILE:
        return saved.read_text(encoding="utf-8")
    try:
        rel = params_path.resolve().relative_to(root.resolve())
        committed = subprocess.run(["git", "show", f"HEAD:{rel.as_posix()}"], cwd=root, capture_output=True,
                                   text=True, check=True).stdout
    except (ValueError, OSError, subprocess.CalledProcessError):
        committed = ""
    if committed and _profile_of(committed) == DEFAULT_PROFILE:
        return committed
    raise ParamsError(f"{params_path} holds profile {_profile_of(text)!r} and no copy of the default profile is at "
                      f"hand ({saved} is missing); run `git checkout {params_path.name}` first")


def _is_comment_or_blank(line: str, max_indent: int | None = None) -> bool:
    stripped = line.strip()
    if not stripped:
        return True
    if not stripped.startswith("#"):
        return False
    return max_indent is None or len(line) - len(line.lstrip(" ")) <= max_indent


def _spans(cmap, lines: list[str], end: int) -> dict:
    """key -> (first line, end line, indent) of each key of a ruamel mapping in its source text: the key's line and
    its value's lines, without the blank and comment lines after it that lead into the next key."""
    keys = list(cmap.keys())
    out = {}
    for i, key in enumerate(keys):
        line, col = cmap.lc.key(key)
        stop = cmap.lc.key(keys[i + 1])[0] if i + 1 < len(keys) else end
        while stop > line + 1 and _is_comment_or_blank(lines[stop - 1], col):
            stop -= 1
        out[key] = (line, stop, col, cmap.lc.key(keys[i + 1])[0] if i + 1 < len(keys) else end)
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _lead_lines(lines: list[str], first: int, indent: int) -> tuple[int, list[str]]:
    """The comment lines directly above line `first` at this indentation: (their first line, the lines)."""
    i = first
    while i > 0 and lines[i - 1].strip().startswith("#") and _indent(lines[i - 1]) == indent:
        i -= 1
    return i, lines[i:first]


def _flow_text(value) -> str:
    """A mapping or list as one line of YAML flow style (for a merged one-line value)."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_flow_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow_text(v) for v in value) + "]"
    return yaml.safe_dump(_plain(value), default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def _patches(base, base_lines, base_end, overlay, over_lines, over_end, where: str) -> list[tuple[int, int, list[str]]]:
    """Line replacements (start, stop, new lines) that merge `overlay` into `base` (both ruamel mappings with line
    information from their source texts): a leaf the profile sets takes the profile's lines verbatim (its value and
    its comments); a mapping the profile sets part of is merged key by key; block comments the profile writes above
    a key replace the default's."""
    out: list[tuple[int, int, list[str]]] = []
    b_spans, o_spans = _spans(base, base_lines, base_end), _spans(overlay, over_lines, over_end)
    for key in overlay:
        here = f"{where}.{key}" if where else str(key)
        if key not in base:
            raise KeyError(f"the profile sets {here}, which params.yaml lacks (a typo would add a dead key)")
        b_first, b_stop, b_col, b_next = b_spans[key]
        o_first, o_stop, o_col, o_next = o_spans[key]
        old, value = base[key], overlay[key]
        o_lead_start, o_lead = _lead_lines(over_lines, o_first, o_col)
        if not o_lead and not any("#" in ln for ln in over_lines[o_first:o_stop]) and _plain(old) == _plain(value):
            continue  # the profile repeats the default's value without a word: the default's line (and comment) stays
        if o_lead:
            b_lead_start, _ = _lead_lines(base_lines, b_first, b_col)
            out.append((b_lead_start, b_first, [" " * b_col + ln.lstrip(" ") for ln in o_lead]))
        block = lambda m: isinstance(m, Mapping) and not (hasattr(m, "fa") and m.fa.flow_style())  # noqa: E731
        if isinstance(old, Mapping) and isinstance(value, Mapping) and value and block(old) and block(value):
            out += _patches(old, base_lines, b_next, value, over_lines, o_next, here)
            continue
        if isinstance(old, Mapping) and isinstance(value, Mapping) and value and set(old) - set(value):
            merged = deep_merge(yaml.safe_load(_flow_text(old)) or {}, yaml.safe_load(_flow_text(value)) or {})
            comment = over_lines[o_first].partition(" #")[2]
            line = " " * b_col + f"{key}: {_flow_text(merged)}" + (f"  #{comment}" if comment else "")
            out.append((b_first, b_stop, [line]))
            continue
        shift = b_col - o_col
        new = [(" " * shift + ln) if shift >= 0 else ln[-shift:] if ln[:-shift].strip() == "" else ln
               for ln in over_lines[o_first:o_stop]]
        out.append((b_first, b_stop, new))
    return out


def _plain(value):
    """A ruamel value (CommentedMap, ScalarFloat, ...) as plain Python."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def _apply_patches(lines: list[str], patches: list[tuple[int, int, list[str]]]) -> list[str]:
    for start, stop, new in sorted(patches, key=lambda p: (p[0], p[1]), reverse=True):
        lines[start:stop] = new
    return lines


def _recipe_header(lines: list[str], name: str, chain: list[Path]) -> list[str]:
    """Replace the default's "This file is the default profile" header paragraph by one naming this recipe."""
    head_end = next((i for i, ln in enumerate(lines) if not ln.startswith("#")), len(lines))
    cut = next((i for i in range(head_end) if lines[i].startswith(_DEFAULT_HEADER)), head_end)
    files = " over ".join(f"profiles/{p.name}" for p in reversed(chain))
    text = [f"# This file holds the `{name}` recipe (`globe profile {name}`): {files},",
            "# merged over the default profile.",
            *_profile_description(chain[-1]),
            f"# `globe profile {DEFAULT_PROFILE}` (or `git checkout params.yaml`) returns to the default profile."]
    return lines[:cut] + text + lines[head_end:]


def _profile_description(path: Path) -> list[str]:
    """A profile file's leading comment paragraph (up to the first line that is not a comment)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        out.append(line.rstrip())
    return out


def render_profile(name: str, default_text: str, profiles_dir: str | os.PathLike) -> str:
    """params.yaml's text for profile `name`: its chain of overlays merged over `default_text` (see above)."""
    import re as _re

    if name == DEFAULT_PROFILE:
        return default_text
    chain = profile_chain(name, profiles_dir)
    rt = _round_trip()
    text = default_text
    expected = yaml.safe_load(default_text)
    for path in chain:
        over_text = path.read_text(encoding="utf-8")
        overlay = rt.load(over_text) or {}
        plain = yaml.safe_load(over_text) or {}
        for meta in PROFILE_META_KEYS:
            if meta in overlay:
                del overlay[meta]
            plain.pop(meta, None)
        base = rt.load(text)
        unknown = [k for k in overlay if k not in base]
        if unknown:
            raise KeyError(f"profile {path.stem!r} names groups that params.yaml lacks: {unknown}")
        lines, over_lines = text.splitlines(), over_text.splitlines()
        try:
            patches = _patches(base, lines, len(lines), overlay, over_lines, len(over_lines), "")
        except KeyError as e:
            raise KeyError(f"profile {path.stem!r}: {e.args[0]}") from None
        text = "\n".join(_apply_patches(lines, patches)) + "\n"
        deep_merge(expected, plain)
    lines = text.splitlines()
    for i, line in enumerate(lines):  # common.profile names the recipe (its comment kept in place)
        m = _re.match(r"^(  profile: )(\S+)(\s*)(#.*)?$", line)
        if m:
            pad = max(1, len(m.group(2)) + len(m.group(3)) - len(name)) if m.group(4) else 0
            lines[i] = m.group(1) + name + (" " * pad + m.group(4) if m.group(4) else "")
            break
    expected.setdefault("common", {})["profile"] = name
    text = "\n".join(_recipe_header(lines, name, chain)) + "\n"
    # The rendering must read back as exactly the merged values (comments aside), or it is not written.
    if yaml.safe_load(text) != expected:
        raise ParamsError(f"profile {name!r}: the rendered params.yaml does not read back as the merged values "
                          "(check the profile's indentation); params.yaml was left unchanged")
    return text


def apply_profile(name: str, params_path: str | os.PathLike | None = None,
                  profiles_dir: str | os.PathLike | None = None) -> Path:
    """Write params.yaml for recipe `name` (`profiles/NAME.yaml`, over what it extends, over the default profile);
    `default` restores the default. Returns the params path."""
    root = project_root(Path(params_path).parent if params_path else None)
    params_path = Path(params_path) if params_path else root / PARAMS_FILE
    profiles_dir = Path(profiles_dir) if profiles_dir else root / PROFILES_DIR
    if name != DEFAULT_PROFILE:
        profile_chain(name, profiles_dir)  # an unknown name fails before anything is read or saved
    text = render_profile(name, default_params_text(params_path, root), profiles_dir)
    tmp = params_path.with_suffix(".yaml.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, params_path)
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
        if len(errors) == 1:  # `X | None`: X's own message (it says what X needs), noting that null is allowed
            raise ParamsError(f"{errors[0].args[0]} (or null)") from None
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
