"""The commands the README, the chapters, the profiles and the scripts show are ones the code accepts.

Readers copy them; a renamed option or parameter must fail here, not in a reader's terminal.
"""
import argparse
import ast
import dataclasses
import re
from pathlib import Path

import nbformat
import yaml

from byol_lite.cli import build_parser
from byol_lite.finetune import FinetuneConfig
from byol_lite.pretrain import PretrainConfig
from test_book_params import _chapters_with_parameters

ROOT = Path(__file__).resolve().parents[1]
PAPERMILL = r"papermill\s+book/(\d\d_\w+\.ipynb)([^\n`]*)"


def _accepted_parameters(chapter: Path) -> set[str]:
    """The names a chapter's NotebookParameters accepts, read from its setup cell without running it."""
    classes = {"PretrainConfig": PretrainConfig, "FinetuneConfig": FinetuneConfig}
    for cell in nbformat.read(chapter, as_version=4).cells:
        if cell.cell_type != "code" or "NotebookParameters(" not in cell.source:
            continue
        code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%"))
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "NotebookParameters":
                keywords = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
                fields = keywords.get("allowed") or [f.name for f in dataclasses.fields(classes[node.args[0].id])]
                return set(fields) | set(keywords.get("extra", []))
    raise AssertionError(f"{chapter.name}: no NotebookParameters call")


def _documents():
    for path in [*sorted(ROOT.glob("*.md")), *sorted(ROOT.glob("*/README.md")), *sorted(ROOT.glob("*/*.sh")),
                 *sorted((ROOT / "book").glob("*.ipynb")), *sorted((ROOT / "book" / "params").glob("*"))]:
        text = ("\n".join(c.source for c in nbformat.read(path, as_version=4).cells) if path.suffix == ".ipynb"
                else path.read_text())
        yield path, re.sub(r"\\\n[#\s]*", " ", text)          # join continued lines (also inside YAML comments)


def test_every_papermill_command_in_the_docs_uses_parameters_its_chapter_accepts():
    """The commands readers copy: each `-p`/`-r` name and each key of a `-f` file must pass the chapter's check."""
    seen, chapters = 0, _chapters_with_parameters()
    for path, text in _documents():
        for chapter, args in re.findall(PAPERMILL, text):
            accepted = _accepted_parameters(ROOT / "book" / chapter)
            names = re.findall(r"-[pr]\s+(\w+)", args)
            for profile in re.findall(r"-f\s+(\S+\.yaml)", args):
                names += list(yaml.safe_load((ROOT / profile).read_text()))
            wrong = sorted(set(names) - accepted)
            assert not wrong, f"{path.name}: `papermill book/{chapter}` is shown with {wrong}, which it refuses"
            seen += len(names)
        if path.name in chapters:
            own = re.findall(r"`-[pr]\s+(\w+)", re.sub(PAPERMILL, "", text))
            wrong = sorted(set(own) - _accepted_parameters(path)) if own else []
            assert not wrong, f"{path.name}: its prose suggests `-p {wrong[0]}`, which the chapter refuses"
            seen += len(own)
    assert seen >= 20       # the commands were found (README, chapters 0, 2, 4-7, the profiles)


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def test_every_command_line_in_the_docs_uses_options_the_cli_has():
    """`python -m byol_lite CMD [SUB] --option ...`: the command exists and every --option is one of its own."""
    commands = _subcommands(build_parser())
    seen = 0
    for path, text in _documents():
        for line in re.findall(r"-m byol_lite\s+([^\n`#]*)", text):
            words = line.split()
            parser = commands.get(words[0].rstrip(").,")) if words else None
            assert parser is not None, f"{path.name}: `python -m byol_lite {line.strip()}` names no command"
            if len(words) > 1 and words[1] in _subcommands(parser):        # data check / synthetic / prepare-voc
                parser = _subcommands(parser)[words[1]]
            known = {s for action in parser._actions for s in action.option_strings}
            wrong = sorted({w.split("=")[0] for w in words if w.startswith("--")} - known)
            assert not wrong, f"{path.name}: `python -m byol_lite {line.strip()}` uses {wrong}, which it refuses"
            seen += 1
    assert seen >= 40       # README, data/checkpoints/benchmarks READMEs, chapters 5-8, profiles, scripts
