"""The GPU kit's CPU dry run (``run_kit --smoke``): every timing phase's logic, the JSON and the summary, no GPU.

Runs in a subprocess (the smoke run pins torch to one thread). The build and correctness phases are left out
here: tests/kernels/test_kernel_api_build.py builds the library, and tests/gpu are the correctness phase. The
compiled and edge phases skip without a GPU; the cli phase runs the commands on the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMOKE_TIMEOUT_S = 180


def test_smoke_run_writes_the_results_json_and_prints_the_summary_last(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "benchmarks.gpu.run_kit", "--smoke", "--output", str(tmp_path)]
    command += ["--phases", "environment,steps,models,compiled,edge,cli"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    results = json.loads((tmp_path / "gpu_kit.json").read_text())
    assert results["schema"] == 1 and results["finished"]
    assert {name: p["status"] for name, p in results["phases"].items()} == {
        "environment": "ok",
        "steps": "smoke",
        "models": "smoke",
        "compiled": "skipped",
        "edge": "skipped",
        "cli": "ok",
    }
    environment = results["environment"]
    assert environment["torch"] and "cuda_available" in environment
    assert environment["record"]["versions"]["tofu-edge"]  # describe_environment's record

    steps = results["phases"]["steps"]
    assert [(r["backend"], r["agrees"]) for r in steps["results"]] == [("torch", True)]

    models = results["phases"]["models"]
    assert not models["errors"], models["errors"]
    groups = {(r["model"], r["batch"], r["kind"]) for r in models["results"]}
    assert ("deit_s", 1, "eager") in groups
    unfused = [r for r in models["results"] if r["variant"] == "unfused"]
    assert unfused and all(r["speedup"] == 1.0 for r in unfused)
    assert all(r["speedup"] > 0 and r["images_per_s"] > 0 and r["samples"] > 0 for r in models["results"])

    commands = results["phases"]["cli"]["commands"]
    assert set(commands) == {"bench", "eval"} and all(c["returncode"] == 0 for c in commands.values())
    assert json.loads(commands["bench"]["stdout"].splitlines()[0])["fusion_step"] == "auto"

    anchor = results["tome_anchor"]["rows"]
    assert [(row["unfused_images_per_s"], row["tome_images_per_s"]) for row in anchor] == [(953, 1564), (309, 511)]
    assert "| deit_s | eager | 1 |" in results["summary"]
    assert (tmp_path / "summary.md").read_text().strip() == results["summary"].strip()
    assert results["summary"].splitlines()[-1] in result.stdout.splitlines()[-4:]  # the table comes last
