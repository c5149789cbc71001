"""Dataclass configs shared by the CLI, notebooks and papermill.

One dataclass per entry point is the single source of defaults: the CLI options, the
notebooks' ``parameters`` cells and the YAML profiles are all checked against it, so a
misspelt or ill-typed parameter fails loudly instead of being silently ignored.
"""
from __future__ import annotations

import argparse
import os
import dataclasses
import typing
from typing import Any, Mapping


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _base_type(tp):
    """``Optional[X]`` -> (X, True); ``X`` -> (X, False)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", ())) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _coerce(name: str, value: Any, tp) -> Any:
    base, optional = _base_type(tp)
    if value is None:
        if optional:
            return None
        raise TypeError(f"parameter {name!r} may not be None")
    if isinstance(value, str) and optional and value.lower() in ("none", "null", ""):
        return None
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TypeError(f"parameter {name!r} expects true/false, got {value!r}")
    if base is int:
        if isinstance(value, bool):
            raise TypeError(f"parameter {name!r} expects an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise TypeError(f"parameter {name!r} expects an integer, got {value!r}") from None
    if base is float:
        if isinstance(value, bool):
            raise TypeError(f"parameter {name!r} expects a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"parameter {name!r} expects a number, got {value!r}") from None
    if base is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise TypeError(f"parameter {name!r} expects a string, got {value!r}")
        return str(value)
    return value


def from_params(cls, params: Mapping[str, Any] | None = None, **overrides):
    """Build ``cls`` from a mapping, rejecting unknown names and ill-typed values.

    The error lists every valid name, so a typo in a papermill ``-p`` or a YAML profile is
    caught at once.
    """
    merged = dict(params or {})
    merged.update(overrides)
    types = _field_types(cls)
    unknown = sorted(set(merged) - set(types))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for {cls.__name__}; "
            f"valid parameters are: {', '.join(types)}"
        )
    values = {k: _coerce(k, v, types[k]) for k, v in merged.items()}
    return cls(**values)


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--option`` per dataclass field, with its default and help text in ``--help``.

    Options left out stay out of the parsed namespace, so :func:`from_args` can layer
    defaults < a YAML profile < what was typed.
    """
    types = _field_types(cls)
    for f in dataclasses.fields(cls):
        base, optional = _base_type(types[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        choices = f.metadata.get("choices")
        flag = "--" + f.name.replace("_", "-")
        if base is bool and not optional:
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS,
                                action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, choices=choices,
                                metavar=None if choices else f.name.upper(), help=help_text,
                                type=lambda v, n=f.name, t=types[f.name]: _coerce(n, v, t))


def from_args(cls, namespace: argparse.Namespace, base: Mapping[str, Any] | None = None):
    """``cls`` from defaults, then ``base`` (e.g. a YAML profile), then the options typed."""
    names = {f.name for f in dataclasses.fields(cls)}
    typed = {k: v for k, v in vars(namespace).items() if k in names}
    return from_params(cls, {**(base or {}), **typed})


def load_yaml_params(path) -> dict:
    import yaml

    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to values")
    return data
