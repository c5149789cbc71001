"""Every numeric option of every entry point refuses a value outside its range, with one message that names
the option, the value and the range: from the command line, a YAML profile, a notebook's parameters
(papermill's route) and a Python call alike."""
import dataclasses
import re
import typing

import pytest

from byol_lite.cli import main
from byol_lite.config import NotebookParameters, Range, _base_type
from byol_lite.finetune import FinetuneConfig
from byol_lite.pretrain import PretrainConfig

ENTRY_POINTS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig}


def _outside(valid: Range, tp) -> list:
    """Just below the range (by one unit, or exactly its open end), and just above it when it has an end."""
    step = 1 if tp is int else 0.5
    values = [valid.low if valid.open_low else valid.low - step]
    if valid.high is not None:
        values.append(valid.high if valid.open_high else valid.high + step)
    return values


def _numeric_options():
    for command, cls in ENTRY_POINTS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = _base_type(hints[f.name])[0]
            if tp in (int, float) and f.metadata.get("range") is not None:
                for value in _outside(f.metadata["range"], tp):
                    yield pytest.param(command, f.name, tp(value), str(f.metadata["range"]), id=f"{f.name}={value}")


def test_every_numeric_field_has_a_range_or_choices():
    for cls in ENTRY_POINTS.values():
        hints = typing.get_type_hints(cls)
        unchecked = [f.name for f in dataclasses.fields(cls) if _base_type(hints[f.name])[0] in (int, float)
                     and f.metadata.get("range") is None and not f.metadata.get("choices")]
        assert unchecked == [], f"{cls.__name__}: numeric options without a valid range: {unchecked}"


@pytest.mark.parametrize("command, name, value, valid", list(_numeric_options()))
def test_out_of_range_is_refused_alike_everywhere(command, name, value, valid, tmp_path, capsys):
    cls = ENTRY_POINTS[command]
    message = f"parameter {name!r} is {value!r}; valid range: {valid}"
    with pytest.raises(ValueError, match=re.escape(message)):            # the Python API
        cls(**{name: value})
    namespace = {}
    params = NotebookParameters(cls, namespace)
    namespace[name] = value                                              # a parameters cell, or papermill's -p
    with pytest.raises(ValueError, match=re.escape(message)):
        params.config()
    profile = tmp_path / "profile.yaml"
    profile.write_text(f"{name}: {value}\n")
    assert main([command, "--params", str(profile)]) == 2                # a YAML profile: refused before any run
    assert f"error: {message}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:                             # an option typed on the command line
        main([command, "--" + name.replace("_", "-"), str(value)])
    assert exit_.value.code == 2 and f"argument --{name.replace('_', '-')}: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["pretrain", "--batch-size", "-3"], "parameter 'batch_size' is -3; valid range: >= 2"),
    (["pretrain", "--width", "0"], "parameter 'width' is 0; valid range: >= 1"),
    (["pretrain", "--base-lr", "-1"], "parameter 'base_lr' is -1.0; valid range: > 0"),
    (["pretrain", "--base-tau", "1.5"], "parameter 'base_tau' is 1.5; valid range: [0, 1]"),
    (["pretrain", "--epochs", "-2"], "parameter 'epochs' is -2; valid range: >= 1"),
    (["pretrain", "--image-size", "7"], "parameter 'image_size' is 7; valid range: >= 16"),
    (["finetune", "--output-stride", "12"], "parameter 'output_stride' is 12; valid values are: 8, 16, 32"),
    (["evaluate", "--checkpoint", "x", "--batch-size", "0"], "parameter 'batch_size' is 0; valid range: >= 1"),
    (["experiment", "x.yaml", "--jobs", "0"], "parameter 'jobs' is 0; valid range: >= 1"),
    (["data", "synthetic", "--out", "x", "--seed", "-1"], "parameter 'seed' is -1; valid range: >= 0"),
    (["data", "synthetic", "--out", "x", "--image-size", "7"], "parameter 'image_size' is 7; valid range: [16, 512]"),
    (["data", "synthetic", "--out", "x", "--train", "0"], "parameter 'train' is 0; valid range: >= 1"),
    (["data", "synthetic", "--out", "x", "--unlabeled", "-1"], "parameter 'unlabeled' is -1; valid range: >= 0"),
])
def test_the_cases_a_new_user_tried_and_the_plain_options(args, message, capsys):
    """The six values issue 20 tried on main (a torch traceback, or a run that "trained"), and the numeric
    options that are not config fields."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_scale_max_below_scale_min_is_refused():
    with pytest.raises(ValueError, match=r"parameter 'scale_max' is 0\.4; valid range: >= scale_min \(0\.5\)"):
        FinetuneConfig(scale_max=0.4)
