"""The GPU kit's CPU dry run (``run_kit --smoke``): every timing phase's logic, the JSON and the summary, no GPU.

Runs in a subprocess (the smoke run pins torch to one thread). The build and correctness phases are left out
here: tests/kernels/test_kernel_api_build.py builds the library, and tests/gpu are the correctness phase.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMOKE_TIMEOUT_S = 120


def test_smoke_run_writes_the_results_json_and_prints_the_summary_last(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "benchmarks.gpu.run_kit", "--smoke", "--output", str(tmp_path)]
    command += ["--phases", "environment,kernels,models"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    results = json.loads((tmp_path / "gpu_kit.json").read_text())
    assert results["schema"] == 1 and results["finished"]
    assert {name: p["status"] for name, p in results["phases"].items()} == {
        "environment": "ok",
        "kernels": "smoke",
        "models": "smoke",
    }
    assert results["environment"]["torch"] and "cuda_available" in results["environment"]

    kernels = results["phases"]["kernels"]
    assert {(r["kernel"], r["mode"]) for r in kernels["results"]} == {
        ("match", None),
        ("step", "mlerp"),
        ("step", "mean"),
        ("merge", "mlerp"),
        ("merge", "mean"),
        ("merge", "prune"),
    }
    assert all(r["torch"]["eager"]["median_us"] > 0 for r in kernels["results"])

    models = results["phases"]["models"]
    assert not models["errors"], models["errors"]
    groups = {(r["model"], r["batch"], r["kind"]) for r in models["results"]}
    assert ("deit_s", 1, "eager") in groups
    unfused = [r for r in models["results"] if r["variant"] == "unfused"]
    assert unfused and all(r["speedup"] == 1.0 for r in unfused)
    assert all(r["speedup"] > 0 and r["images_per_s"] > 0 for r in models["results"])
    assert all(r.get("finite_output", True) for r in models["results"])

    anchor = results["tome_anchor"]["rows"]
    assert [(row["unfused_images_per_s"], row["tome_images_per_s"]) for row in anchor] == [(953, 1564), (309, 511)]
    assert "| deit_s | eager | 1 |" in results["summary"]
    assert (tmp_path / "summary.md").read_text().strip() == results["summary"].strip()
    assert results["summary"].splitlines()[-1] in result.stdout.splitlines()[-4:]  # the table comes last
