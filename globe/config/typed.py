"""Typed stage configs: `StageConfig.from_params` refuses unknown keys and checks every value's type (`check_value`)
and range (`validate`) before anything heavy loads, so `-p steps abc` fails in milliseconds with a message naming the
key; `check_env_name` keeps secrets out of params.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar, Union

from globe.config.params import ParamsError

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
