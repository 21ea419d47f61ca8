"""The machine a measurement ran on: CPU, threads, allocator, GPU, package versions, Jetson model and power.

Everything here is best effort and never fails a benchmark: a missing tool or file leaves its field out.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from tofu_edge.measure.allocator import allocator_info
from tofu_edge.versions import MEASURE_PACKAGES, package_versions

__all__ = ["describe_environment", "jetson_info", "TegrastatsSampler", "parse_tegrastats", "torch_threads"]
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
TOOL_TIMEOUT_S = 5.0
CLOCKS_NOTE = "timings depend on the clocks: run `sudo jetson_clocks` first to pin them at the power mode's maximum"
# "VDD_IN 4966mW/4966mW" (Orin, JetPack 5+) or "POM_5V_IN 2345/2345" (Xavier, Nano): rail, instant, average
_POWER = re.compile(r"\b((?:VDD|VIN|POM)_[A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?")


def describe_environment(*, threads: int | None = None, device: str = "cpu") -> dict:
    """CPU, threads, versions, GPU and (on a Jetson) board and power mode, as plain JSON types.

    Args:
        threads: The thread count the benchmark asked for (recorded beside torch's own).
        device: ``cpu`` or ``cuda``; GPU details are recorded when CUDA is available either way.
    """
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "torch_threads": torch.get_num_threads() if (torch := _torch()) is not None else None,
        "python": platform.python_version(),
        "versions": package_versions(MEASURE_PACKAGES),
        "device": device,
        "allocator": allocator_info(),
    }
    gpu = gpu_info()
    if gpu:
        record["gpu"] = gpu
    jetson = jetson_info()
    if jetson:
        record["jetson"] = jetson
    return record


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (``model name``, or ``Model``/``Hardware`` on Arm)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for key in ("model name", "Model", "Hardware"):
            for line in cpuinfo.read_text(errors="replace").splitlines():
                if line.split(":", 1)[0].strip() == key:
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def gpu_info() -> dict:
    """Name, compute capability, CUDA runtime of torch and driver of the first CUDA device; ``{}`` without one."""
    info: dict = {}
    torch = _torch()
    if torch is not None and torch.cuda.is_available():
        info["name"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["torch_cuda"] = torch.version.cuda
    driver = _tool_output(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if driver:
        name, _, version = driver.splitlines()[0].rpartition(",")
        info.setdefault("name", name.strip())
        info["driver"] = version.strip()
    return info


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch's intra-op thread count at ``threads`` (unchanged for ``None`` or without torch)."""
    torch = _torch()
    if threads is None or torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _torch():
    """The torch module where it is installed (a device install may have none), else ``None``."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def jetson_info() -> dict:
    """Jetson board, L4T release, power mode (``nvpmodel -q``) and a clocks note; ``{}`` elsewhere."""
    if not TEGRA_RELEASE.is_file() and not DEVICE_TREE_MODEL.is_file():
        return {}
    model = (
        DEVICE_TREE_MODEL.read_bytes().rstrip(b"\x00").decode(errors="replace") if DEVICE_TREE_MODEL.is_file() else ""
    )
    if not TEGRA_RELEASE.is_file() and "jetson" not in model.lower():
        return {}  # a device tree without L4T: an Arm board, not a Jetson
    info = {"model": model, "clocks": CLOCKS_NOTE}
    if TEGRA_RELEASE.is_file():
        info["l4t"] = TEGRA_RELEASE.read_text(errors="replace").splitlines()[0].lstrip("# ").strip()
    power_mode = _tool_output(["nvpmodel", "-q"])
    if power_mode:
        info["power_mode"] = "; ".join(line.strip() for line in power_mode.splitlines() if line.strip())
    return info


def parse_tegrastats(line: str) -> dict[str, float]:
    """Instant power of each rail in one tegrastats line, in mW (``{}`` when the line has none).

    Example:
        ``"... VDD_GPU_SOC 1597mW/1597mW VDD_CPU_CV 399mW/399mW VDD_IN 4966mW/4966mW"`` ->
        ``{"VDD_GPU_SOC": 1597.0, "VDD_CPU_CV": 399.0, "VDD_IN": 4966.0}``
    """
    return {rail: float(instant) for rail, instant, _ in _POWER.findall(line)}


class TegrastatsSampler:
    """Reads power from ``tegrastats`` while a benchmark runs; a no-op where the binary does not exist.

    Example:
        with TegrastatsSampler() as power:
            measure_interleaved(...)
        power.summary()   # {"VDD_IN": {"mean_mw": ..., "max_mw": ...}, ...} or None

    Args:
        interval_ms: tegrastats' sampling interval.
        binary: The tegrastats executable (found on ``PATH`` when ``None``).
    """

    def __init__(self, interval_ms: int = 100, binary: str | None = None) -> None:
        self.interval_ms = interval_ms
        self.binary = binary or shutil.which("tegrastats")
        self.samples: list[dict[str, float]] = []
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> TegrastatsSampler:
        if self.binary is None:
            return self
        try:
            self._process = subprocess.Popen(
                [self.binary, "--interval", str(self.interval_ms)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError:
            return self
        self._reader = threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True)
        self._reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=TOOL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=TOOL_TIMEOUT_S)
        self._process = None

    def summary(self) -> dict[str, dict[str, float]] | None:
        """Mean and max instant power of each rail over the samples (mW), or ``None`` without samples."""
        if not self.samples:
            return None
        rails = sorted({rail for sample in self.samples for rail in sample})
        summary = {}
        for rail in rails:
            values = [sample[rail] for sample in self.samples if rail in sample]
            summary[rail] = {"mean_mw": sum(values) / len(values), "max_mw": max(values), "samples": len(values)}
        return summary

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            power = parse_tegrastats(line)
            if power:
                self.samples.append(power)


def _tool_output(command: list[str]) -> str:
    """A tool's stdout, or ``""`` when it is missing, fails or hangs."""
    if shutil.which(command[0]) is None:
        return ""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
