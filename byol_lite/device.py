"""Where and how a run computes: device, precision, memory format, random state, eval mode.

Shared by training and evaluation, so a model is evaluated with the arithmetic it was trained with.
"""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch
from torch import nn


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast is a speed-up on ``device``: CUDA, or a CPU with bf16 instructions
    (AVX512-BF16 or AMX). Elsewhere oneDNN emulates bf16, which is slower than fp32."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")   # torch.cpu's own CPU-feature probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(device: torch.device, precision: str) -> str:
    """``auto`` is bf16 where :func:`native_bf16` says it pays (measured on the 2-core AMD EPYC with
    AVX512-BF16: the book's pretraining step 1.6x faster than fp32, a fine-tuning step 1.5x), fp32
    elsewhere. Not everywhere: on a 2-core Intel Xeon with AVX512-BF16 and no AMX, bf16 pretraining
    ran at 0.8x fp32 (chapter 5); pass ``fp32`` there."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; choose auto, fp32 or bf16")
    return precision


def autocast(device: torch.device, precision: str):
    """``precision``: ``fp32``, ``bf16``, or ``auto`` (see :func:`resolve_precision`)."""
    if resolve_precision(device, precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def resolve_channels_last(device: torch.device, setting: bool | None) -> bool:
    """``None`` (the default) is on: cuDNN's bf16 convolutions want NHWC, and so do oneDNN's on a CPU
    (measured on the 2-core CPU: the book's pretraining step 1.4x faster in fp32, 1.2x in bf16).
    It changes speed only (tests/test_fast_step.py)."""
    return True if setting is None else setting


def seed_all(seed: int) -> None:
    """Seeds torch, numpy and Python's ``random``: a run's RNG state then depends on its seed only,
    so the state stored in a checkpoint is the same in an interrupted and an uninterrupted run."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # numpy arrays are not allowed by weights_only loading: store the key as a tensor.
    state = {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """``module`` in eval mode inside the block, back in the mode it had after it (evaluation inside training)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
