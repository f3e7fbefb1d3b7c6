"""The precision a run trains in: bf16 autocast or plain float32, and where bf16 is worth it.

Every preset pins bf16, the precision its shipped run trained in. On a device that only emulates bf16 (a CPU
without AMX or AVX-512 BF16, e.g. an AVX2-only AMD EPYC, where a training step ran 14-18x slower than in fp32:
docs/benchmarks.md) a preset's bf16 that the command line did not ask for becomes fp32, and the run says so;
``--precision bf16`` keeps the preset's arithmetic anywhere, at that cost.
"""

from __future__ import annotations

from pathlib import Path

import torch

from glimpse_env.config import resolve_device

PRECISIONS = ("auto", "bf16", "fp32")  # what --precision takes
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp32": None}  # what a run trains in -> its autocast dtype (None: off)
# How results.json has said the precision a run trained in: "bf16"/"fp32" (as config.json), and before that the
# autocast dtype ("torch.bfloat16"); readers of committed records go through this.
RECORDED_PRECISIONS = {"bf16": "bf16", "fp32": "fp32", "torch.bfloat16": "bf16"}


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls are fast on ``device``: CUDA that supports them, or a CPU with bf16 instructions (AMX
    tiles on Xeons; AVX-512 BF16, e.g. on recent AMD EPYCs, where a training step ran 2.5-3.6x faster than in
    fp32). Elsewhere bf16 is emulated and much slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to tell here, so fp32
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def precision_in_use(precision: str, device: torch.device) -> str:
    """What a run of ``precision`` (a --precision value) trains in on ``device``: ``"bf16"`` or ``"fp32"``, the
    words config.json and results.json use. The one place ``auto`` is decided."""
    if precision == "auto":
        return "bf16" if has_fast_bf16(device) else "fp32"
    return precision


def pick_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain float32."""
    return AUTOCAST_DTYPES[precision_in_use(precision, device)]


def precision_here(values: dict, explicit: dict) -> str:
    """The precision of a new run of ``values`` (a preset's or a recipe stage's, flags applied) on this machine: the
    pinned one, except a preset's bf16 that ``explicit`` (the flags given) does not name, on a device that would
    only emulate it: fp32 there."""
    precision = values.get("precision", "auto")
    if precision != "bf16" or "precision" in explicit:
        return precision
    try:
        device = resolve_device(values.get("device", "auto"))
    except ValueError:  # a bad --device: the configuration check names it
        return precision
    return precision if has_fast_bf16(device) else "fp32"


def precision_note(precision: str, preset_precision: str | None, device: torch.device) -> str | None:
    """What a run on ``device`` should say about its ``precision`` (None: nothing): bf16 where it is emulated, or
    fp32 in place of the preset's bf16."""
    if has_fast_bf16(device):
        return None
    if precision == "bf16":
        return (f"precision bf16 on {device.type}: no bf16 instructions here (AMX or AVX-512 BF16), so bf16 is "
                "emulated and a training step runs many times slower than in fp32 (--precision fp32)")
    if precision == "fp32" and preset_precision == "bf16":
        return (f"precision fp32: the preset's shipped run trained in bf16, which {device.type} here would only "
                "emulate (no AMX or AVX-512 BF16), many times slower; its figures may differ a little from the "
                "record's (--precision bf16 trains as the record did)")
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device``; a no-op for None (float32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
