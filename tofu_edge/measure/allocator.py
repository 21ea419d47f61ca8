"""Steady CPU timings on Linux: the glibc allocator settings the benchmarks run under, and a record of them.

On our 2-vCPU cloud VM the same ONNX file, opened in several onnxruntime sessions of one process, ran up to 20 %
apart from session to session, and each session kept its speed: where its memory landed (transparent huge pages
or not) decided it. Eager PyTorch showed the same, plus a model run right after a larger one paying for the pages
glibc had handed back. With glibc asked for huge pages (``glibc.malloc.hugetlb=1``) and to keep freed memory
(large mmap and trim thresholds), the sessions agreed within 2 % and the unfused DeiT-S ran 1.2-1.4x faster
(benchmarks/README.md, "Allocator"). glibc reads these settings only at start-up, so a benchmark re-executes
itself with them (`run_with_steady_allocator`); `tofu-edge bench` records them and says how to set them.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

__all__ = ["STEADY_GLIBC_TUNABLES", "allocator_info", "run_with_steady_allocator", "allocator_hint"]

STEADY_GLIBC_TUNABLES = (
    "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296"
)
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def allocator_info() -> dict:
    """``GLIBC_TUNABLES`` of this process and the kernel's transparent-huge-page mode (``None`` where unknown)."""
    try:
        mode = THP_ENABLED.read_text().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        mode = None
    return {"glibc_tunables": os.environ.get("GLIBC_TUNABLES"), "transparent_hugepage": mode}


def run_with_steady_allocator() -> None:
    """Re-execute this Python process with `STEADY_GLIBC_TUNABLES` unless ``GLIBC_TUNABLES`` is already set (a
    user's own choice is kept) or this is not Linux with glibc. Call it first thing in a benchmark's ``main``."""
    if not _unset_on_glibc():
        return
    os.environ["GLIBC_TUNABLES"] = STEADY_GLIBC_TUNABLES
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def allocator_hint() -> str | None:
    """One line on setting the steady allocator, for a timing run on Linux with glibc that has none set."""
    if not _unset_on_glibc():
        return None
    return (
        f"hint: for steadier CPU timings run with GLIBC_TUNABLES={STEADY_GLIBC_TUNABLES} "
        "(sessions agreed within 2 % instead of 20 % on a cloud VM; see the README, 'Timing on a CPU')"
    )


def _unset_on_glibc() -> bool:
    """Linux with glibc, and no ``GLIBC_TUNABLES`` of the user's own: where the steady settings apply."""
    return "GLIBC_TUNABLES" not in os.environ and _glibc_linux()


def _glibc_linux() -> bool:
    return sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
