"""Dataclass configs shared by the CLI, notebooks and papermill.

One dataclass per entry point is the single source of defaults: the CLI options, the
notebooks' ``parameters`` cells and the YAML profiles are all checked against it, so a
misspelt or ill-typed parameter fails loudly instead of being silently ignored.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import types
import typing
from typing import Any, Iterable, Mapping, MutableMapping


class ParameterError(ValueError, TypeError):
    """A parameter of the wrong type or outside its choices.

    A ``ValueError`` so the CLI reports it like any other bad input (exit code 2, no traceback),
    and a ``TypeError`` because that is what it is for callers that catch that.
    """


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _base_type(tp):
    """``Optional[X]`` -> (X, True); ``X`` -> (X, False)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, getattr(types, "UnionType", ())) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _coerce(name: str, value: Any, tp) -> Any:
    base, optional = _base_type(tp)
    if value is None:
        if optional:
            return None
        raise ParameterError(f"parameter {name!r} may not be None")
    if isinstance(value, str) and optional and value.lower() in ("none", "null", ""):
        return None
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ParameterError(f"parameter {name!r} expects true/false, got {value!r}")
    if base is int:
        if isinstance(value, bool):
            raise ParameterError(f"parameter {name!r} expects an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ParameterError(f"parameter {name!r} expects an integer, got {value!r}") from None
    if base is float:
        if isinstance(value, bool):
            raise ParameterError(f"parameter {name!r} expects a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ParameterError(f"parameter {name!r} expects a number, got {value!r}") from None
    if base is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ParameterError(f"parameter {name!r} expects a string, got {value!r}")
        return str(value)
    return value


def option(default, help: str, choices=None):
    """A config field with its ``--help`` text (and allowed values), read by :func:`add_arguments`."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def non_defaults(config) -> dict[str, Any]:
    """The fields of ``config`` that differ from its class's defaults: what a chapter prints, so a
    reader sees at once what the parameters cell, papermill or a profile changed."""
    default = type(config)()
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(default, f.name)}


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
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices")
        if choices and f.name in values and values[f.name] not in choices:
            raise ParameterError(f"parameter {f.name!r} is {values[f.name]!r}; valid values are: {', '.join(choices)}")
    return cls(**values)


def _cli_type(name: str, tp):
    """argparse's converter for a field; its error names the parameter and the expected type."""
    def convert(value: str):
        try:
            return _coerce(name, value, tp)
        except ParameterError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    convert.__name__ = name
    return convert


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--option`` per dataclass field, with its default and help text in ``--help``.

    Options left out stay out of the parsed namespace, so :func:`from_args` can layer
    defaults < a YAML profile < what was typed. Unknown options are rejected with the list of
    valid ones, and abbreviations are not accepted: a saved command must keep its meaning when
    an option is added later (``--max-step`` would silently become ambiguous or change target).
    """
    _strict(parser)
    types = _field_types(cls)
    for f in dataclasses.fields(cls):
        base, _ = _base_type(types[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        choices = f.metadata.get("choices")
        flag = "--" + f.name.replace("_", "-")
        if base is bool:    # --x / --no-x; an optional one left out stays None ("auto")
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS,
                                action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, choices=choices,
                                metavar=None if choices else f.name.upper(), help=help_text,
                                type=_cli_type(f.name, types[f.name]))


def _strict(parser: argparse.ArgumentParser) -> None:
    """Makes ``parser`` (a sub-command's) reject unknown options itself, listing the valid ones.

    Left alone, argparse hands a sub-command's unknown options up to the main parser, whose
    error shows only the main usage line.
    """
    parser.allow_abbrev = False
    parse_known = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        namespace, extras = parse_known(args, namespace)
        if extras:
            valid = sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))
            hints = [f"{e} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(e.split("=")[0], valid, 1))
                     else e for e in extras if e.startswith("-")]
            parser.error(f"unrecognized arguments: {' '.join(extras)}"
                         + (f"\n  {'; '.join(hints)}" if hints else "")
                         + f"\nvalid options are: {', '.join(valid)}")
        return namespace, extras

    parser.parse_known_args = parse_known_args


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


class NotebookParameters:
    """Checks a notebook's parameters, including those papermill injects, against a config class.

    Papermill's ``-p name value`` becomes an assignment in a cell it inserts after the cell tagged
    ``parameters``; a misspelt name is a new variable that nothing reads, so the run would silently
    use the default. Chapters therefore follow this pattern::

        # a code cell BEFORE the parameters cell (e.g. the imports cell)
        from byol_lite.config import NotebookParameters
        from byol_lite.pretrain import PretrainConfig
        params = NotebookParameters(PretrainConfig, globals())

        # the cell tagged "parameters": config fields (and any names listed in extra=) only
        max_steps = 200
        base_lr = 0.45

        # the cell right after it
        config = params.config()

    :meth:`config` looks at every variable created or re-bound since the first cell, i.e. those of
    the parameters cell plus papermill's injected ones. A name that is neither a field of the
    config class (nor in ``extra``) is refused with the list of valid names; values are coerced to
    the field's type (papermill passes ``-r`` values as strings) or refused, and the coerced values
    are written back to the notebook's variables. Fields not set in the notebook keep the class
    defaults; ``allowed`` restricts which fields a chapter accepts.
    """

    def __init__(self, cls, namespace: MutableMapping[str, Any], allowed: Iterable[str] | None = None,
                 extra: Iterable[str] = ()):
        self.cls, self.namespace = cls, namespace
        fields = list(_field_types(cls))
        self.allowed = list(allowed) if allowed is not None else fields
        unknown = sorted(set(self.allowed) - set(fields))
        if unknown:
            raise ValueError(f"allowed names {', '.join(unknown)} are not fields of {cls.__name__}")
        self.extra = list(extra)
        self._before = {k: id(v) for k, v in namespace.items()}

    def _changed(self) -> list[str]:
        # Not parameters: IPython's history variables (_, _i3, _3, ...), this object (bound after the
        # snapshot), and modules, classes and functions imported in the same cell.
        return [k for k, v in self.namespace.items()
                if not k.startswith("_") and self._before.get(k) != id(v) and v is not self
                and not isinstance(v, (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType))]

    def config(self):
        names = self._changed()
        valid = self.allowed + self.extra
        unknown = sorted(set(names) - set(valid))
        if unknown:
            close = {u: difflib.get_close_matches(u, valid, 1) for u in unknown}
            hints = "; ".join(f"{u} (did you mean {m[0]}?)" for u, m in close.items() if m)
            raise ValueError(
                f"unknown notebook parameter(s) {', '.join(unknown)} for {self.cls.__name__}"
                + (f" -- {hints}" if hints else "") + f"; valid parameters are: {', '.join(valid)}")
        fields = [n for n in names if n not in self.extra]
        config = from_params(self.cls, {n: self.namespace[n] for n in fields})
        for n in fields:
            self.namespace[n] = getattr(config, n)
        return config
