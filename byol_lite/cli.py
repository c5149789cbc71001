"""``python -m byol_lite <command>``: one sub-command per workflow, each defined next to its code."""
from __future__ import annotations

import argparse
import importlib
import sys

from byol_lite.training.distributed import cleanup, is_main_process

# name -> module that defines ``add_cli(subparsers)``; imported lazily so ``--help`` is quick.
COMMANDS = {
    "pretrain": "byol_lite.pretrain",
    "data": "byol_lite.data.cli",
    "finetune": "byol_lite.finetune",
    "evaluate": "byol_lite.segmentation.evaluation",   # also adds `predict`
    "experiment": "byol_lite.experiment",
    "sweep": "byol_lite.sweep",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m byol_lite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(module).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as err:
        if is_main_process():   # under torchrun every process has the error; one message is enough
            print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        cleanup()
