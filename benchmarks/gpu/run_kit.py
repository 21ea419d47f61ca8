"""The GPU proof kit in one run: environment, build, correctness, step and model timings, the CLI on a GPU, summary.

Usage (from the repository root; see benchmarks/gpu/README.md):

    PYTHONPATH=. python3 -m benchmarks.gpu.run_kit --output out/gpu-kit
    PYTHONPATH=. python3 -m benchmarks.gpu.run_kit --smoke --output /tmp/kit   # CPU dry run of every phase

Phases, each with its own time budget, each catching its own errors (recorded, then the next phase runs):

1. ``environment``: GPU, driver, CUDA, torch, timm, triton, SMs, L2, clocks (nvidia-smi), compilers, and
   `tofu_edge.measure.describe_environment`'s record;
2. ``build``: ``libtofu_edge_kernels.so`` for the local GPU's architecture only (cmake + ninja, no TensorRT);
3. ``correctness``: ``pytest -m gpu tests/gpu`` in a subprocess: the plugin kernels and the Triton step against the
   PyTorch reference, CUDA graphs, torch.compile, torch.export;
4. ``steps``: one whole fusion step per backend (PyTorch ops, Triton, plugin kernels), fp16, CUDA graphs
   (`step_bench`);
5. ``models``: fused against unfused DeiT-S and ViT-B, fp16, batch 1 / 8 / 64 / 256, eager and CUDA graphs, every step
   backend (`model_bench`);
6. ``compiled``: ``torch.compile``d unfused against ``torch.compile``d Triton-fused models at batch 1 and 64;
7. ``edge``: the graph timings on 8 and 16 SMs (green contexts), batch 1 / 4 / 16: an edge-GPU stand-in;
8. ``cli``: the product's own commands on the GPU as a user runs them: ``tofu-edge bench --device cuda`` with and
   without ``--compile``, ``tofu-edge eval --device cuda`` on a few images.

``kernels`` (the per-op kernel bench of 0.3, `kernel_bench`) runs only when asked for with ``--phases``.
``gpu_kit.json`` in the output folder is rewritten after every phase (a timeout keeps what was measured);
``gpu_kit.log`` holds everything printed; the summary table is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ElementTree
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULT_NAME = "gpu_kit.json"
LOG_NAME = "gpu_kit.log"
JUNIT_NAME = "pytest_gpu.xml"
SUMMARY_NAME = "summary.md"
SCHEMA = 1
PHASES = ("environment", "build", "correctness", "steps", "models", "compiled", "edge", "cli", "kernels")
DEFAULT_PHASES = PHASES[:-1]
DEFAULT_BUDGET_S = 460.0  # the device gives a command 8 minutes at most; one kit run must leave room for a rerun
BUILD_TIMEOUT_S = 120.0
CORRECTNESS_TIMEOUT_S = 100.0
STEPS_BUDGET_S = 30.0
KERNELS_BUDGET_S = 50.0
MODELS_BUDGET_S = 120.0
COMPILED_BUDGET_S = 70.0
EDGE_BUDGET_S = 35.0
CLI_TIMEOUT_S = 50.0
FINAL_MARGIN_S = 10.0
SMOKE_KERNELS_BUDGET_S = 4.0
SMOKE_MODELS_BUDGET_S = 10.0
OUTPUT_TAIL = 4000

# ToMe's published desktop-GPU figures, the anchor for the model timings (see benchmarks/gpu/README.md).
TOME_ANCHOR = {
    "source": (
        "Bolya et al., 'Token Merging: Your ViT But Faster', ICLR 2023; the off-the-shelf timm table of "
        "github.com/facebookresearch/ToMe (README): 'on ImageNet-1k val using a V100'"
    ),
    "gpu": "NVIDIA V100",
    "rows": [
        {"model": "ViT-S/16 (timm, AugReg)", "r": 13, "unfused_images_per_s": 953, "tome_images_per_s": 1564},
        {"model": "ViT-B/16 (timm, AugReg)", "r": 13, "unfused_images_per_s": 309, "tome_images_per_s": 511},
    ],
    "precision_and_batch": (
        "not stated beside these figures. ToMe's benchmark helper (tome.utils.benchmark) defaults to fp32 "
        "(use_fp16=False) and its benchmark notebook uses batch 256, so they are likely fp32 at a large batch; "
        "we did not confirm this in the paper"
    ),
    "comparable": (
        "DeiT-S has ViT-S/16's architecture and MACs, vit_base_patch16_224 is ViT-B/16; ToMe merges by the "
        "size-weighted mean (our 'mean r=13'). Compare speed-ups, not images/s: other GPU, precision and batch"
    ),
}
for _row in TOME_ANCHOR["rows"]:
    _row["speedup"] = round(_row["tome_images_per_s"] / _row["unfused_images_per_s"], 2)


class Kit:
    """The run's state: output folder, log, results JSON (rewritten after every phase) and the deadline."""

    def __init__(self, output: Path, budget_s: float, args: dict) -> None:
        self.output = output
        self.output.mkdir(parents=True, exist_ok=True)
        self.log_path = output / LOG_NAME
        self.log_path.write_text("")
        self.start = time.perf_counter()
        self.deadline = self.start + budget_s
        self.results: dict = {
            "schema": SCHEMA,
            "kit": "tofu-edge GPU proof kit (benchmarks/gpu/run_kit.py)",
            "started": _now(),
            "finished": None,
            "budget_s": budget_s,
            "args": args,
            "environment": {},
            "phases": {},
            "tome_anchor": TOME_ANCHOR,
        }

    def log(self, text: str) -> None:
        print(text, flush=True)
        with self.log_path.open("a") as handle:
            handle.write(text + "\n")

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def write(self) -> None:
        """Rewrite gpu_kit.json atomically."""
        path = self.output / RESULT_NAME
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        os.replace(temporary, path)

    def phase(self, name: str, body) -> dict:
        """Run one phase: its record gets status, seconds and error; the JSON is rewritten after it."""
        self.log(f"\n== {name} ({self.left():.0f} s of the budget left) ==")
        record: dict = {"status": "running"}
        self.results["phases"][name] = record
        self.write()
        start = time.perf_counter()
        try:
            record.update(body() or {})
            record["status"] = record.get("status_override", "ok")
            record.pop("status_override", None)
        except Exception as error:
            record["status"] = "failed"
            record["error"] = f"{type(error).__name__}: {error}"
            record["traceback"] = traceback.format_exc()[-OUTPUT_TAIL:]
            self.log(f"{name} FAILED: {record['error']}")
        record["seconds"] = round(time.perf_counter() - start, 2)
        self.log(f"-- {name}: {record['status']} in {record['seconds']:.1f} s")
        self.write()
        return record


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _command_output(command: list[str], timeout: float = 20.0) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (subprocess.TimeoutExpired, OSError):
        return None
    return (result.stdout + result.stderr).strip() if result.returncode == 0 else None


# Phase 1: environment.

NVIDIA_SMI_FIELDS = (
    "name",
    "driver_version",
    "pci.bus_id",
    "memory.total",
    "clocks.sm",
    "clocks.max.sm",
    "clocks.mem",
    "clocks.max.mem",
    "power.limit",
    "temperature.gpu",
    "pstate",
    "compute_mode",
)


def environment(kit: Kit, smoke: bool) -> dict:
    import numpy
    import timm
    import torch

    env: dict = {
        "date": _now(),
        "host": platform.node(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "cuda_available": torch.cuda.is_available(),
        "smoke": smoke,
        "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "CUDA_MODULE_LOADING") if k in os.environ},
    }
    try:
        import tofu_edge

        env["tofu_edge"] = tofu_edge.__version__
    except Exception as error:
        env["tofu_edge"] = f"import failed: {error}"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "l2_mib": round(getattr(props, "L2_cache_size", 0) / 2**20, 1),
            "device_count": torch.cuda.device_count(),
        }
    query = _command_output(
        ["nvidia-smi", f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}", "--format=csv,noheader,nounits"]
    )
    if query:
        values = [v.strip() for v in query.splitlines()[0].split(",")]
        env["nvidia_smi"] = dict(zip(NVIDIA_SMI_FIELDS, values, strict=False))
    header = _command_output(["nvidia-smi"])
    match = re.search(r"CUDA Version:\s*([0-9.]+)", header or "")
    env["driver_cuda_version"] = match.group(1) if match else None
    nvcc = _command_output(["nvcc", "--version"])
    env["nvcc"] = nvcc.splitlines()[-1] if nvcc else None
    cmake = _command_output(["cmake", "--version"])
    env["cmake"] = cmake.splitlines()[0] if cmake else None
    env["ninja"] = _command_output(["ninja", "--version"])
    commit = _command_output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    env["git_commit"] = commit
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    from tofu_edge.measure import describe_environment

    env["record"] = describe_environment(device="cuda" if torch.cuda.is_available() else "cpu")
    kit.results["environment"] = env
    gpu = env.get("gpu", {}).get("name", "no CUDA GPU")
    kit.log(f"{gpu}; driver {env.get('nvidia_smi', {}).get('driver_version')} (CUDA {env['driver_cuda_version']}); ")
    kit.log(f"torch {env['torch']} (CUDA {env['torch_cuda']}), timm {env['timm']}, nvcc: {env['nvcc']}")
    return {}


# Phase 2: build.


def build(kit: Kit, state: dict, build_dir: Path, arch: str | None, library: str | None) -> dict:
    from tofu_edge.export.cuda_kernels import CudaKernels
    from tofu_edge.export.kernel_build import build_kernel_api

    record: dict = {}
    if library:
        path = Path(library)
        record["library"] = str(path)
        record["prebuilt"] = True
    else:
        timeout = max(10.0, min(BUILD_TIMEOUT_S, kit.left() - 60))
        result = build_kernel_api(build_dir, archs=[arch] if arch else None, timeout=timeout)
        path = result.library
        record.update({"library": str(path), "archs": list(result.archs), "build_seconds": round(result.seconds, 1)})
        kit.log(result.log[-1500:])
    nm = _command_output(["nm", "-D", "--defined-only", str(path)])
    if nm is not None:
        record["exports"] = sorted(line.split()[-1] for line in nm.splitlines() if " T " in line)
    readelf = _command_output(["readelf", "-d", str(path)])
    if readelf is not None:
        record["needed"] = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf)
    kernels = CudaKernels(path)
    record["cuda_runtime_version"] = kernels.runtime_version()
    record["cuda_driver_version"] = kernels.driver_version()
    state["kernels"] = kernels
    state["library"] = path
    kit.log(f"library {path}: exports {record.get('exports')}")
    return record


# Phase 3: correctness.


def correctness(kit: Kit, state: dict) -> dict:
    if kit.results["phases"].get("build", {}).get("status") == "failed":
        return {"status_override": "skipped", "reason": "the kernel library did not build (see the build phase)"}
    timeout = max(20.0, min(CORRECTNESS_TIMEOUT_S, kit.left() - 90))
    junit = kit.output / JUNIT_NAME
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/gpu", "-q", "-rfEs", "-p", "no:cacheprovider"]
    command.append(f"--junitxml={junit}")
    env = dict(os.environ)
    if state.get("library"):
        env["TOFU_KERNEL_API_LIB"] = str(state["library"])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    kit.log(" ".join(command) + f"  (timeout {timeout:.0f} s)")
    try:
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        output, returncode = result.stdout + result.stderr, result.returncode
    except subprocess.TimeoutExpired as error:
        output = (error.stdout or b"").decode(errors="replace") if isinstance(error.stdout, bytes) else error.stdout
        output, returncode = (output or "") + f"\n[timed out after {timeout:.0f} s]", None
    kit.log(output[-OUTPUT_TAIL:])
    record: dict = {"returncode": returncode, "command": " ".join(command)}
    record.update(_junit_counts(junit))
    if returncode is None:
        record["status_override"] = "timeout"
    elif record.get("failed", 0) or record.get("errors", 0) or returncode not in (0, 5):
        record["status_override"] = "failed"
    elif not record.get("passed"):
        record["status_override"] = "skipped"
    kit.log(
        f"passed {record.get('passed')}, failed {record.get('failed')}, errors {record.get('errors')}, "
        f"skipped {record.get('skipped')}"
    )
    return record


def _junit_counts(path: Path) -> dict:
    """Counts, failing test ids and skip reasons from pytest's JUnit XML."""
    if not path.is_file():
        return {"junit": "missing"}
    root = ElementTree.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    failing, reasons = [], Counter()
    passed = failed = errors = skipped = 0
    for case in suite.iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None:
            failed += 1
            failing.append(test_id)
        elif case.find("error") is not None:
            errors += 1
            failing.append(test_id)
        elif case.find("skipped") is not None:
            skipped += 1
            reasons[case.find("skipped").get("message", "")[:200]] += 1
        else:
            passed += 1
    return {
        "passed": passed,
        "failed": failed,
        "errors": errors,
        "skipped": skipped,
        "failing": failing[:200],
        "skip_reasons": dict(reasons),
    }


# Phases 4 and 5: timings.


def kernels_phase(kit: Kit, state: dict, smoke: bool) -> dict:
    import torch

    from benchmarks.gpu.kernel_bench import kernel_cases, run_kernel_timings

    if smoke:
        cases = kernel_cases(batches=(1, 2), dtypes=("fp32",), channels=(384,))
        with torch.inference_mode():
            result = run_kernel_timings(
                None, torch.device("cpu"), budget_s=SMOKE_KERNELS_BUDGET_S, cases=cases, log=kit.log
            )
        result["note"] = "smoke run on the CPU: the PyTorch side only, host clocks, no CUDA kernels"
        result["status_override"] = "smoke"
        return result
    if not torch.cuda.is_available():
        return {"status_override": "skipped", "reason": "no CUDA device (torch.cuda.is_available() is False)"}
    kernels = state.get("kernels")
    budget = max(5.0, min(KERNELS_BUDGET_S, 0.35 * kit.left()))
    with torch.inference_mode():
        result = run_kernel_timings(kernels, torch.device("cuda"), budget_s=budget, log=kit.log)
    if kernels is None:
        result["status_override"] = "partial"
        result["reason"] = "the kernel library did not build or load: PyTorch side only"
    elif result["skipped"] or any("error" in r for r in result["results"]):
        result["status_override"] = "partial"
    return result


def steps_phase(kit: Kit, state: dict, smoke: bool) -> dict:
    import torch

    from benchmarks.gpu.step_bench import run_step_timings

    if smoke:
        with torch.inference_mode():
            result = run_step_timings(None, torch.device("cpu"), budget_s=2.0, batches=(1,), channels={"deit_s": 384})
        result.update(note="smoke run on the CPU: the PyTorch step only, host clocks", status_override="smoke")
        return result
    if not torch.cuda.is_available():
        return {"status_override": "skipped", "reason": "no CUDA device (torch.cuda.is_available() is False)"}
    with torch.inference_mode():
        result = run_step_timings(state.get("kernels"), torch.device("cuda"), budget_s=_budget(kit, STEPS_BUDGET_S))
    return result | ({"status_override": "partial"} if result["errors"] else {})


def models_phase(kit: Kit, state: dict, smoke: bool) -> dict:
    import torch

    from benchmarks.gpu.model_bench import run_model_timings, variant_specs

    if smoke:
        result = run_model_timings(
            torch.device("cpu"),
            budget_s=SMOKE_MODELS_BUDGET_S,
            batches=(1, 2),
            dtype=torch.float32,
            specs={k: v for k, v in variant_specs(rs=(8,), align_r=None).items() if not k.startswith("triton")},
            log=kit.log,
            depth=2,
            img_size=64,
        )
        result.update(note="smoke run on the CPU: depth-2 models at 64x64, fp32, eager, host clocks, PyTorch step")
        return result | {"status_override": "smoke"}
    if not torch.cuda.is_available():
        return {"status_override": "skipped", "reason": "no CUDA device (torch.cuda.is_available() is False)"}
    kernels = state.get("kernels")
    result = run_model_timings(torch.device("cuda"), _budget(kit, MODELS_BUDGET_S), kernels=kernels, log=kit.log)
    result["precision"] = "fp16 (model.half(), fp16 inputs)"
    return result | ({"status_override": "partial"} if result["skipped"] or result["errors"] else {})


def compiled_phase(kit: Kit, state: dict, smoke: bool) -> dict:
    import torch

    from benchmarks.gpu.model_bench import run_compiled_timings

    if smoke or not torch.cuda.is_available():
        return {"status_override": "skipped", "reason": "torch.compile is timed on a GPU only"}
    result = run_compiled_timings(torch.device("cuda"), _budget(kit, COMPILED_BUDGET_S), log=kit.log)
    result["precision"] = "fp16; torch.compile(fullgraph=True), default mode"
    return result | ({"status_override": "partial"} if result["skipped"] or result["errors"] else {})


def edge_phase(kit: Kit, state: dict, smoke: bool) -> dict:
    import torch

    from benchmarks.gpu.model_bench import run_edge_proxy

    if smoke or not torch.cuda.is_available():
        return {"status_override": "skipped", "reason": "green contexts need a CUDA GPU"}
    result = run_edge_proxy(torch.device("cuda"), _budget(kit, EDGE_BUDGET_S), log=kit.log)
    return result | ({"status_override": "partial"} if result["skipped"] or result["errors"] else {})


def cli_phase(kit: Kit, state: dict, smoke: bool) -> dict:
    """The product's commands as a user runs them, each in a subprocess with a timeout; their JSON is kept."""
    import numpy as np
    from PIL import Image

    device = "cpu" if smoke else "cuda"
    photos = kit.output / "cli-photos"
    for label in ("a", "b"):  # eval wants class folders; random photos are enough to run the command
        (photos / label).mkdir(parents=True, exist_ok=True)
        for index in range(4):
            pixels = np.random.default_rng(index).integers(0, 256, (256, 256, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(photos / label / f"{index}.jpg")
    model = ["deit_tiny_patch16_224", "--img-size", "64"] if smoke else ["deit_small_patch16_224"]
    common = ["--r", "13" if not smoke else "1,1", "--json"]
    commands = {
        "bench": ["bench", *model, "--backend", "torch", "--device", device, "--iterations", "20", *common],
        "bench --compile": ["bench", *model, "--device", device, "--compile", "--iterations", "20", *common],
        "eval": ["eval", *model[:1], str(photos), *model[1:], "--device", device, "--limit", "8", *common],
    }
    if smoke:
        del commands["bench --compile"]
    record: dict = {"commands": {}}
    for name, args in commands.items():
        timeout = max(5.0, min(CLI_TIMEOUT_S, kit.left() - FINAL_MARGIN_S))
        command = [sys.executable, "-c", "from tofu_edge.cli import main; main()", *args]
        kit.log("tofu-edge " + " ".join(args))
        try:
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
            entry = {"returncode": done.returncode, "stdout": done.stdout[-OUTPUT_TAIL:], "stderr": done.stderr[-2000:]}
        except subprocess.TimeoutExpired:
            entry = {"returncode": None, "error": f"timed out after {timeout:.0f} s"}
        record["commands"][name] = entry
        kit.log(f"{name}: exit {entry['returncode']}")
    if any(entry["returncode"] != 0 for entry in record["commands"].values()):
        record["status_override"] = "failed"
    return record


def _budget(kit: Kit, cap: float) -> float:
    """A phase's seconds: its cap, or what is left before the final margin, whichever is less."""
    return max(5.0, min(cap, kit.left() - FINAL_MARGIN_S))


# Summary.


def summary(results: dict) -> str:
    """The tables printed last: phases, kernels (graph medians), models (speed-ups), the ToMe anchor."""
    env = results.get("environment", {})
    gpu = env.get("gpu", {}).get("name") or "no CUDA GPU"
    driver = env.get("nvidia_smi", {}).get("driver_version")
    lines = [
        f"# tofu-edge GPU kit: {gpu}, driver {driver} (CUDA {env.get('driver_cuda_version')}), "
        f"torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), timm {env.get('timm')}",
        "",
        "| phase | status | s | note |",
        "|---|---|---:|---|",
    ]
    for name in PHASES:
        record = results.get("phases", {}).get(name)
        if record is None:
            continue
        note = record.get("error") or record.get("reason") or ""
        if name == "build" and "archs" in record:
            note = note or f"sm_{'/'.join(record['archs'])}, {record.get('build_seconds')} s"
        if name == "correctness" and "passed" in record:
            note = (
                f"{record['passed']} passed, {record['failed']} failed, {record['errors']} errors, "
                f"{record['skipped']} skipped"
            )
            if record.get("failing"):
                note += "; first failing: " + ", ".join(record["failing"][:3])
        lines.append(f"| {name} | {record.get('status')} | {record.get('seconds', '')} | {note[:150]} |")
    phases = results.get("phases", {})
    lines += _step_table(phases.get("steps", {}))
    lines += _kernel_table(phases.get("kernels", {}))
    lines += _model_table(phases.get("models", {}), ("model", "kind", "batch"))
    lines += _model_table(phases.get("compiled", {}), ("model", "batch"))
    lines += _model_table(phases.get("edge", {}), ("sms", "model", "batch"))
    lines += ["", "ToMe's published anchor (V100; precision/batch not stated beside it, likely fp32 at a large batch):"]
    for row in TOME_ANCHOR["rows"]:
        lines.append(
            f"- {row['model']} r={row['r']}: {row['unfused_images_per_s']} -> {row['tome_images_per_s']} im/s "
            f"({row['speedup']:.2f}x)"
        )
    return "\n".join(lines)


def _kernel_table(record: dict) -> list[str]:
    results = record.get("results") or []
    if not results:
        return []
    step = record.get("step", {})
    batches = sorted({r["batch"] for r in results})
    lines = [
        "",
        f"Kernels: one step at N={step.get('num_tokens')}, P={step.get('num_prefix')}, r={step.get('r')}; "
        "median us per call, CUDA graph replays (eager in brackets); kernel / PyTorch = speed-up",
        "| op | dtype | C | " + " | ".join(f"b={b}" for b in batches) + " | agrees |",
        "|---|---|---:|" + "---|" * len(batches) + "---|",
    ]
    rows: dict[tuple, dict] = {}
    for entry in results:
        key = (f"{entry['kernel']} {entry['mode'] or ''}".strip(), entry["dtype"], entry["channels"] or "-")
        rows.setdefault(key, {})[entry["batch"]] = entry
    for (op, dtype, channels), by_batch in rows.items():
        cells, agrees = [], set()
        for batch in batches:
            entry = by_batch.get(batch)
            cells.append(_kernel_cell(entry) if entry else "")
            if entry is not None and entry.get("agrees") is not None:
                agrees.add(entry["agrees"])
        agree_text = "-" if not agrees else ("yes" if agrees == {True} else "NO")
        lines.append(f"| {op} | {dtype} | {channels} | " + " | ".join(cells) + f" | {agree_text} |")
    if record.get("skipped"):
        lines.append(f"(skipped for the budget: {len(record['skipped'])} cases)")
    return lines


def _kernel_cell(entry: dict) -> str:
    if "error" in entry:
        return "error"

    def median(side: str, kind: str):
        value = entry.get(side, {}).get(kind, {})
        return value.get("median_us") if isinstance(value, dict) else None

    cuda_graph, torch_graph = median("cuda", "graph"), median("torch", "graph")
    cuda_eager, torch_eager = median("cuda", "eager"), median("torch", "eager")
    if cuda_graph and torch_graph:
        cell = f"{cuda_graph:.1f}/{torch_graph:.1f} {torch_graph / cuda_graph:.1f}x"
        if cuda_eager and torch_eager:
            cell += f" ({cuda_eager:.0f}/{torch_eager:.0f})"
        return cell
    if cuda_eager and torch_eager:
        return f"eager {cuda_eager:.0f}/{torch_eager:.0f} {torch_eager / cuda_eager:.1f}x"
    if torch_graph or torch_eager:
        return f"torch {torch_graph or torch_eager:.1f}"
    return ""


def _step_table(record: dict) -> list[str]:
    results = record.get("results") or []
    if not results:
        return []
    step = record.get("step", {})
    lines = [
        "",
        f"One fusion step (N={step.get('num_tokens')}, r={step.get('r')}, {step.get('op')}, {step.get('dtype')}): "
        f"median µs per step ({record.get('timing')}), speed-up over the PyTorch ops",
        "| model | batch | backend | µs | speed-up | agrees |",
        "|---|---:|---|---:|---:|---|",
    ]
    for row in results:
        speedup = f"{row['speedup_over_torch']:.1f}x" if row.get("speedup_over_torch") else "-"
        agrees = "yes" if row.get("agrees") else "NO"
        lines.append(
            f"| {row['model']} | {row['batch']} | {row['backend']} | {row['median_us']:.1f} | {speedup} | {agrees} |"
        )
    return lines


def _model_table(record: dict, keys: tuple[str, ...]) -> list[str]:
    """Speed-ups over the group's first variant (the unfused model), one row per group of ``keys``."""
    results = record.get("results") or []
    if not results:
        return []
    variants = list(dict.fromkeys(r["variant"] for r in results))
    base_name = variants[0]
    lines = [
        "",
        f"{record.get('precision', 'fp32 on the CPU')}: {base_name} median ms and im/s, then each variant's speed-up",
        f"| {' | '.join(keys)} | {base_name} ms | im/s | " + " | ".join(variants[1:]) + " |",
        "|" + "---|" * len(keys) + "---:|---:|" + "---:|" * (len(variants) - 1),
    ]
    groups: dict[tuple, dict] = {}
    for row in results:
        groups.setdefault(tuple(row[k] for k in keys), {})[row["variant"]] = row
    for key, rows in groups.items():
        base = rows.get(base_name)
        cells = [f"{rows[v]['speedup']:.2f}x" if v in rows else "-" for v in variants[1:]]
        base_cells = f"{base['median_ms']:.2f} | {base['images_per_s']:.0f}" if base else "- | -"
        lines.append(f"| {' | '.join(map(str, key))} | {base_cells} | " + " | ".join(cells) + " |")
    for error in record.get("errors", [])[:6]:
        lines.append(f"error: {json.dumps(error)[:200]}")
    if record.get("skipped"):
        lines.append(f"(skipped for the budget: {', '.join(record['skipped'])})")
    return lines


# Entry point.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(REPO / "out" / "gpu-kit"), help="folder for gpu_kit.json and logs")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="wall-time budget of all phases")
    parser.add_argument("--build-dir", default=str(REPO / "build" / "gpu-kit"), help="CMake build folder")
    parser.add_argument("--arch", default=None, help="CUDA arch to build for, e.g. 90 (default: the local GPU's)")
    parser.add_argument("--library", default=None, help="use this libtofu_edge_kernels.so instead of building")
    parser.add_argument(
        "--phases", default=",".join(DEFAULT_PHASES), help=f"comma-separated subset of {','.join(PHASES)}"
    )
    parser.add_argument("--smoke", action="store_true", help="CPU dry run: tiny sizes, host clocks, no GPU needed")
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        parser.error(f"unknown phases {unknown}; choose from {', '.join(PHASES)}")

    kit = Kit(Path(args.output), args.budget_s, vars(args))
    if args.smoke:  # the CPU is likely shared: one thread keeps host timings steady
        import torch

        torch.set_num_threads(1)
    kit.log(f"tofu-edge GPU kit: phases {', '.join(phases)}; budget {args.budget_s:.0f} s; output {kit.output}")
    state: dict = {}
    if "environment" in phases:
        kit.phase("environment", lambda: environment(kit, args.smoke))
    if "build" in phases:
        kit.phase("build", lambda: build(kit, state, Path(args.build_dir), args.arch, args.library))
    elif args.library:
        kit.phase("build", lambda: build(kit, state, Path(args.build_dir), args.arch, args.library))
    if "correctness" in phases:
        kit.phase("correctness", lambda: correctness(kit, state))
    bodies = {
        "steps": steps_phase,
        "models": models_phase,
        "compiled": compiled_phase,
        "edge": edge_phase,
        "cli": cli_phase,
        "kernels": kernels_phase,
    }
    for name, body in bodies.items():
        if name in phases:
            kit.phase(name, lambda body=body: body(kit, state, args.smoke))

    kit.results["finished"] = _now()
    kit.results["seconds"] = round(time.perf_counter() - kit.start, 1)
    try:
        text = summary(kit.results)
    except Exception as error:  # the JSON holds every number; a broken table must not hide them
        text = f"(no summary table: {type(error).__name__}: {error})"
    kit.results["summary"] = text
    kit.write()
    (kit.output / SUMMARY_NAME).write_text(text + "\n")
    kit.log(f"\n{text}\n\n{kit.output / RESULT_NAME} written; total {kit.results['seconds']:.0f} s")
    failed = [name for name, record in kit.results["phases"].items() if record.get("status") in ("failed", "timeout")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
