"""Process settings for training on CPU."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from langrl.config.base import RunConfig
    from langrl.models.lm import LM

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit systems, for when mmap is used
TRIM_THRESHOLD = 2**31 - 1  # free heap memory the process keeps before returning any to the kernel


def reuse_freed_memory() -> bool:
    """Let glibc hand memory that torch frees back to the next allocations instead of to the kernel.

    A training step allocates and frees tensors of the same sizes at every step (activations, gradients,
    logits, the packed weights of decoding). By default glibc returns blocks above a moving threshold
    to the kernel, so the next step gets fresh pages and takes a page fault on the first touch of every
    4 KiB: 300k-400k faults per step of SmolLM2-135M here. Serving every block from the heap (no mmap;
    glibc still falls back to it when the heap cannot grow) and trimming the heap only past 2 GiB of
    free memory keeps them for reuse. Measured on the project's 2-core machine (`benchmarks/RESULTS.md`):
    GRPO step about -6% with blocks up to 32 MiB kept, a further ~-2.5% with all, peak memory unchanged.
    Process-wide and only on glibc (Linux); returns whether it was applied.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_MMAP_MAX, 0))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


def load_run_lm(cfg: RunConfig) -> LM:
    """What every LM run does first: the config's torch threads and seed, then its model (with freed memory
    kept for reuse on CPU)."""
    from langrl.models import load_lm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    lm = load_lm(cfg.model, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed)
    if lm.model.device.type == "cpu":
        reuse_freed_memory()
    return lm
