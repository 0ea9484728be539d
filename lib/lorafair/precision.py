"""Which arithmetic a training run uses, chosen per model from measurement, not by device type.

- On a GPU: bf16 autocast (fp32 weights and optimizer states), as the original study.
- On a CPU: bf16 autocast only for the models whose ``ModelSpec.cpu_bf16`` is set (the transformer
  models, where ``lorafair bench --cpu`` measured bf16 steps about twice as fast as fp32 on CPUs with
  native bf16 instructions), and only when this CPU has them (AVX512-BF16 or AMX). Everywhere else
  fp32: the convolutional networks were slower in bf16 even with native support, and a CPU without
  native bf16 (e.g. AVX2 only) emulates it, more than ten times slower than fp32.

``LORAFAIR_CPU_PRECISION`` (``auto``, ``fp32``, ``bf16``) overrides the CPU choice. The precision is
a speed setting, not part of a run's hashed configuration; every record states the precision it
used and the CPU's capabilities (``environment``), so a reader can tell fp32 records from bf16 ones.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from .errors import LorafairError, choose
from .models import get_spec

CHOICES = ("auto", "fp32", "bf16")
ENV_VAR = "LORAFAIR_CPU_PRECISION"


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """The CPU's name and the capabilities that decide its precision."""
    name = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"name": name or "unknown", "capability": torch.backends.cpu.get_cpu_capability(),
            "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
            "amx": bool(torch.cpu._is_amx_tile_supported())}


def native_bf16() -> bool:
    info = cpu_info()
    return info["avx512_bf16"] or info["amx"]


def choose_precision(model: str | None, requested: str | None = None) -> tuple[str, str]:
    """(``bf16`` or ``fp32``, the reason) for training ``model`` on this machine."""
    if torch.cuda.is_available():
        return "bf16", "GPU: bf16 autocast"
    requested = requested or os.environ.get(ENV_VAR, "auto")
    choose(f"CPU precision ({ENV_VAR})", requested, CHOICES)
    if requested != "auto":
        return requested, f"set by {ENV_VAR}={requested}"
    wants = bool(model) and get_spec(model).cpu_bf16
    if not wants:
        return "fp32", f"{model}: fp32 is faster on a CPU (lorafair bench --cpu)"
    if not native_bf16():
        return "fp32", (f"{model} would use bf16, but this CPU ({cpu_info()['capability']}) has no native bf16 "
                        "(AVX512-BF16/AMX): fp32")
    return "bf16", f"{model}: bf16 autocast on a CPU with native bf16"


def autocast(precision: str, device: str = "cpu"):
    """The autocast context of a precision (a no-op for fp32)."""
    if precision not in ("bf16", "fp32"):
        raise LorafairError(f"unknown precision {precision!r}; valid choices: bf16, fp32")
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")
