"""What every benchmark script shares: where results go and how they are written. Timing, statistics and the
environment record come from `tofu_edge.measure` and `tofu_edge.stats`, the same code `tofu-edge bench` runs."""

from __future__ import annotations

import json
from pathlib import Path

from tofu_edge.files import atomic_outputs
from tofu_edge.measure.environment import describe_environment

__all__ = ["RESULTS", "environment", "write_json"]

RESULTS = Path(__file__).parent / "results"


def environment(threads: int | None = None, device: str = "cpu") -> dict:
    """CPU, threads, GPU, versions and date, recorded with every result (`describe_environment`)."""
    return describe_environment(threads=threads, device=device)


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON, atomically (nothing half-written on failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_outputs(path) as (temp,):
        temp.write_text(json.dumps(payload, indent=2) + "\n")
