"""Dataclass configs shared by the CLI, notebooks and papermill.

One dataclass per entry point is the single source of defaults: the CLI options, the notebooks'
``parameters`` cells and the YAML profiles are all checked against it, so a misspelt, ill-typed or
out-of-range parameter fails loudly instead of being silently used.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping, MutableMapping, NamedTuple, Optional


class ParameterError(ValueError, TypeError):
    """A parameter of the wrong type or outside its choices or range; a ``ValueError``, so the CLI reports it
    like any other bad input (exit code 2, no traceback)."""


class Range(NamedTuple):
    """The values a numeric option accepts: from ``low`` up to ``high`` (None: no upper bound), each bound
    included unless ``open_low`` / ``open_high``. Printed as ``>= 1``, ``> 0`` or ``[0, 1)``."""

    low: float
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return f"{'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


AT_LEAST_1, NON_NEGATIVE, POSITIVE, UNIT = Range(1), Range(0), Range(0, open_low=True), Range(0, 1)
# 16 px: the smallest view whose last feature map is still 2x2 with the small stem (stride 8)
IMAGE_SIDE = Range(16)


def _fields(cls) -> list[dataclasses.Field]:
    """A config's own fields, then those it inherits (the run control): the order of ``--help`` and messages."""
    own = inspect.get_annotations(cls)
    return sorted(dataclasses.fields(cls), key=lambda f: f.name not in own)


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in _fields(cls)}


def _check(name: str, metadata: Mapping, value) -> None:
    """Refuses a value outside a field's choices or range, naming the field, the value and what is valid."""
    choices, valid = metadata.get("choices"), metadata.get("range")
    if value is None:
        return
    if choices and value not in choices:
        raise ParameterError(f"parameter {name!r} is {value!r}; valid values are: {', '.join(map(str, choices))}")
    if valid is not None and value not in valid:
        raise ParameterError(f"parameter {name!r} is {value!r}; valid range: {valid}")


def _base_type(tp):
    """``Optional[X]`` -> (X, True); ``X`` -> (X, False)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None)), True
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
    if base in (int, float):
        kind = "an integer" if base is int else "a number"
        if isinstance(value, bool):
            raise ParameterError(f"parameter {name!r} expects {kind}, got {value!r}")
        if base is int and isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return base(value)
        except (TypeError, ValueError):
            raise ParameterError(f"parameter {name!r} expects {kind}, got {value!r}") from None
    if base is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ParameterError(f"parameter {name!r} expects a string, got {value!r}")
        return str(value)
    return value


def option(default, help: str, choices=None, valid: Range | None = None):
    """A config field with its ``--help`` text and its allowed values (``choices``) or range (``valid``)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "range": valid})


def probability(default: float, help: str):
    """A config field that is a probability: valid range [0, 1]."""
    return option(default, help, valid=UNIT)


def bounded(name: str, tp, valid: Range):
    """An argparse ``type`` for a plain option (not a config field) with a range: the same message as a field's."""
    return _cli_type(name, tp, {"range": valid})


def non_defaults(config) -> dict[str, Any]:
    """The fields of ``config`` that differ from its class's defaults: what a chapter prints, so a
    reader sees at once what the parameters cell, papermill or a profile changed."""
    default = type(config)()
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(default, f.name)}


def from_params(cls, params: Mapping[str, Any] | None = None, **overrides):
    """Build ``cls`` from a mapping; an unknown name (a typo in a papermill ``-p`` or a YAML profile) is an
    error that lists the valid ones. The construction checks the values."""
    merged = {**(params or {}), **overrides}
    names = [f.name for f in _fields(cls)]
    unknown = sorted(set(merged) - set(names))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for {cls.__name__}; "
                         f"valid parameters are: {', '.join(names)}")
    return cls(**merged)


def _cli_type(name: str, tp, metadata: Mapping):
    """argparse's converter for a field; its error names the parameter and the expected type or range."""
    def convert(value: str):
        try:
            converted = _coerce(name, value, tp)
            _check(name, metadata, converted)
            return converted
        except ParameterError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    convert.__name__ = name
    return convert


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--option`` per dataclass field, with its default and help text in ``--help``. Options left out
    stay out of the namespace, so :func:`from_args` can layer defaults < a YAML profile < what was typed."""
    _strict(parser)
    types = _field_types(cls)
    for f in _fields(cls):
        base, _ = _base_type(types[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        choices = f.metadata.get("choices")
        flag = "--" + f.name.replace("_", "-")
        if base is bool:    # --x / --no-x; an optional one left out stays None ("auto")
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS,
                                action=argparse.BooleanOptionalAction, help=help_text)
        else:
            shown = choices if base is str else None     # other choices (output_stride) are checked by the type
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, choices=shown,
                                metavar=None if shown else f.name.upper(), help=help_text,
                                type=_cli_type(f.name, types[f.name], f.metadata))


def _strict(parser: argparse.ArgumentParser) -> None:
    """Makes ``parser`` (a sub-command's) reject unknown options itself, listing the valid ones (argparse would
    hand them up to the main parser, whose error shows only the main usage line). No abbreviations: a saved
    command must keep its meaning when an option is added later."""
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


def add_command(subparsers, name: str, cls, run, help: str, description: str) -> None:
    """A sub-command with one option per field of ``cls`` and ``--params FILE.yaml`` (a profile the typed
    options override); ``run(config)`` does the work and returns the exit code."""
    p = subparsers.add_parser(name, help=help, description=f"{description} --params FILE.yaml sets values from a "
                                                           "profile; options typed on the command line win.")
    p.add_argument("--params", metavar="FILE.yaml", help="YAML file of parameters")
    add_arguments(p, cls)
    p.set_defaults(func=lambda args: run(from_args(cls, args, load_yaml_params(args.params) if args.params else None)))


def load_yaml_params(path) -> dict:
    import yaml

    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to values")
    return data


class NotebookParameters:
    """Checks a notebook's parameters, including those papermill injects, against a config class: a misspelt
    ``-p`` name would otherwise be a new variable nothing reads, a silent run with defaults.

    ``params = NotebookParameters(PretrainConfig, globals())`` goes before the ``parameters`` cell and
    ``config = params.config()`` after it: every variable created or re-bound in between must be a field
    (or in ``extra``), and is coerced, checked and written back. ``allowed`` restricts the fields accepted.
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


@dataclass
class RunConfig:
    """The run control every training entry point shares (an entry point's config adds its own fields).
    Every field is coerced and checked when a config is made, so a Python call, the CLI, a YAML profile
    and papermill get the same message for the same bad value."""

    # Settings that may change when a run is resumed: they do not alter the trajectory.
    RESUMABLE_CHANGES: ClassVar[tuple[str, ...]] = ("device", "num_workers", "log_every", "progress",
                                                    "checkpoint_every", "skip_nonfinite", "compile")

    device: str = option("auto", "cuda, cpu, or auto (CUDA when present)")
    precision: str = option("auto", "auto (bf16 on CUDA and on CPUs with bf16 instructions, else fp32), "
                                    "fp32 or bf16", ["auto", "fp32", "bf16"])
    channels_last: Optional[bool] = option(None, "channels_last memory format; unset: on (only speed changes)")
    compile: bool = option(False, "torch.compile the model's forward (inductor, compiled on the first steps); "
                                  "off by default: no gain measured on 2-core CPUs (README, Speed)")
    num_workers: int = option(0, "DataLoader worker processes (pretraining: for image sets too large to cache)",
                              valid=NON_NEGATIVE)
    seed: int = option(0, "seed of initialisation, batch order, augmentation and dropout", valid=NON_NEGATIVE)
    log_every: int = option(10, "log metrics every N steps", valid=AT_LEAST_1)
    checkpoint_every: int = option(100, "write a checkpoint every N steps", valid=AT_LEAST_1)
    skip_nonfinite: bool = option(False, "skip a batch whose loss or gradients are NaN/inf (counted) instead of "
                                         "stopping the run")
    resume: bool = option(False, "continue the run in out_dir from its last checkpoint")
    overwrite: bool = option(False, "start again in out_dir (the old folder is kept aside)")
    force_resume: bool = option(False, "resume even if settings differ from the run's")
    progress: bool = option(True, "show a progress bar")
    sync_batchnorm: bool = option(True, "under torchrun with several processes: BatchNorm statistics over the "
                                        "global batch (SyncBatchNorm); no effect in one process")

    def __post_init__(self):
        types = _field_types(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(f.name, getattr(self, f.name), types[f.name])
            _check(f.name, f.metadata, value)
            setattr(self, f.name, value)

    @classmethod
    def of(cls, config=None, **params):
        """``config`` (default: the defaults) with ``params`` overriding fields by name: what an entry point runs."""
        return from_params(cls, {**dataclasses.asdict(config or cls()), **params})
