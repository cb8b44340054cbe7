"""Settings checked at the boundary: dataclasses built from dicts, and options generated from them.

The ground floor of configuration (it imports no other ``qrepro`` module but :mod:`qrepro.errors`):

* :func:`from_mapping` builds a dataclass from a dict (a TOML table, a JSON object, the
  CLI's options): unknown keys, wrong types and out-of-range values are rejected with a
  :class:`ConfigError` naming the file and the field (``qrepro/presets/full.toml:
  search.budget: expected an integer, got '60'``).  Types come from the dataclass's
  annotations; ranges from its ``__post_init__``.
* :func:`add_options` / :func:`options_given` turn a dataclass's scalar fields into
  ``--field-name`` options, so no option list is ever copied by hand.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import tomllib

from .errors import BadInput


class ConfigError(BadInput):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a table of {_type_name(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return f"a table of {tp.__name__} fields"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "none (leave it out)"}.get(tp, getattr(tp, "__name__", str(tp)))


def coerce(tp, value, where: str):
    """``value`` checked against the annotation ``tp`` (ints are accepted as floats, never the
    reverse; ``bool`` is not an integer; strings are never parsed)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return coerce(a, value, where)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): coerce(item, v, f"{where}.{k}") for k, v in value.items()}
    if tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_mapping(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"config type {tp!r} of {where} is not supported")  # a bug in a dataclass, not bad input


def check_field_types(obj, where: str = ""):
    """Check every field of dataclass instance ``obj`` against its annotation (for dataclasses
    built directly in Python, not through :func:`from_mapping`); ints become floats where a
    float is annotated."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = coerce(hints[f.name], getattr(obj, f.name), f"{where}{f.name}")
        object.__setattr__(obj, f.name, value)


def from_mapping(cls, data, where: str = "config"):
    """``cls(**data)`` with every field checked; a :class:`ConfigError` names ``where.field``."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table (JSON object / TOML table) with fields "
                          f"{', '.join(names)}; got {type(data).__name__} {str(data)[:60]}")
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
                          f"accepted: {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required field(s) {', '.join(missing)}")
    sep = ": " if where.endswith((".toml", ".json")) else "."  # file: field, or table.field
    kwargs = {k: coerce(hints[k], v, f"{where}{sep}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def read_config_file(path: str | Path) -> dict:
    """A TOML or JSON file as a dict; one clear error for a missing, unreadable or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist (or is not a file); check the path")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {p} cannot be read as text ({err}); pass a .toml or .json file") from None
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        kind = "TOML" if p.suffix == ".toml" else "JSON"
        raise ConfigError(f"config file {p} is not valid {kind}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold one object of fields, got a {type(data).__name__}")
    return data


def _scalar(tp):
    """``(scalar type, is a list)`` of an option for annotation ``tp`` (``int | None`` -> ``(int, False)``,
    ``list[int] | None`` -> ``(int, True)``), or ``(None, False)`` for a type no option takes."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _scalar(args[0]) if len(args) == 1 else (None, False)
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return (item, True) if item in (int, float, str) else (None, False)
    return (tp, False) if tp in (int, float, str, bool) else (None, False)


def _parse_as(tp, name: str):
    def parse(text: str):
        if tp is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise argparse.ArgumentTypeError(f"--{name} takes true or false, got {text!r}")
        try:
            return tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} takes {_type_name(tp)}, got {text!r}") from None
    return parse


def add_options(parser: argparse.ArgumentParser, cls, exclude=(), helps: Mapping[str, str] | None = None):
    """One ``--field-name`` option per scalar field of dataclass ``cls`` (default: not given)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, many = _scalar(hints[f.name])
        if f.name in exclude or tp is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        text = (helps or {}).get(f.name, f.metadata.get("help", ""))
        choices = f.metadata.get("choices")  # read now: a registry may have grown since the class was made
        values = f"one of {', '.join(choices)}; " if choices else ""
        parser.add_argument(flag, dest=f.name, type=_parse_as(tp, flag[2:]), default=None, nargs="+" if many else None,
                            metavar=tp.__name__.upper(), help=f"{text} ({values}default: {default})".strip())


def options_given(args: argparse.Namespace, cls) -> dict:
    """The fields of ``cls`` given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def check_names(values, accepted, what: str):
    bad = [v for v in values if v not in accepted]
    if bad:
        raise ValueError(f"{what}: unknown {', '.join(map(repr, bad))}; accepted values: {', '.join(accepted)}")
