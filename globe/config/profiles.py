"""Profiles: recipes composed over the default.

A profile file holds overrides in params.yaml's layout, plus an optional top-level `extends: OTHER` (the profile it
builds on: `unsloth` extends `paper`). `globe profile NAME` always starts from the DEFAULT profile's text (never
from whatever recipe params.yaml holds now), merges the chain of overlays into it and writes params.yaml with the
default's layout and comments, except that: a changed value's end-of-line comment becomes the profile's comment for
it (or is removed: a comment written for the old value would now mislead); block comments the profile writes above
a key replace the default's; nulls stay `null`; the header says which recipe the file holds. The default's text is
kept in `.globe/params.default.yaml` the first time params.yaml is seen holding it, so `globe profile default`
restores it byte for byte (as does `git checkout params.yaml`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from globe.config.params import PARAMS_FILE, ParamsError, deep_merge, project_root

PROFILES_DIR = "profiles"
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
