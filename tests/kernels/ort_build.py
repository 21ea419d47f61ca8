"""Builds libtofu_edge_ort.so (kernels/onnxruntime) with cmake for the tests, and recomputes what it reports
about its own sources.

The build needs cmake, a C++ compiler and onnxruntime's headers: ``$TOFU_ORT_INCLUDE_DIR``, else
``<repo>/build/onnxruntime-headers/include`` (where ``kernels/onnxruntime/fetch_onnxruntime_headers.sh
build/onnxruntime-headers`` puts them). No CUDA, no TensorRT.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ORT_DIR = REPO / "kernels" / "onnxruntime"
DEFAULT_HEADERS = REPO / "build" / "onnxruntime-headers" / "include"
FETCH_HINT = "kernels/onnxruntime/fetch_onnxruntime_headers.sh build/onnxruntime-headers"
EXPORTED_FUNCTIONS = {
    "RegisterCustomOps",
    "tofu_ort_contract_sha256",
    "tofu_ort_sources",
    "tofu_ort_sources_sha256",
    "tofu_ort_api_version",
}
BUILD_JOBS = 2  # the development machines have 2 cores, shared


@dataclass(frozen=True)
class OrtBuild:
    """A build of kernels/onnxruntime.

    Args:
        build_dir: CMake build directory.
        library: ``libtofu_edge_ort.so``.
        seconds: Wall time of configure + build.
    """

    build_dir: Path
    library: Path
    seconds: float


def onnxruntime_include_dir() -> Path | None:
    """The onnxruntime headers: $TOFU_ORT_INCLUDE_DIR, else the fetch script's default folder, else None."""
    from_env = os.environ.get("TOFU_ORT_INCLUDE_DIR")
    candidate = Path(from_env) if from_env else DEFAULT_HEADERS
    return candidate if (candidate / "onnxruntime_cxx_api.h").is_file() else None


def cxx_compiler() -> str | None:
    """The C++ compiler CMake would pick: $CXX, else c++ / g++ / clang++ on PATH."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    return next((shutil.which(c) for c in candidates if shutil.which(c)), None)


def missing_prerequisite() -> str | None:
    """Why libtofu_edge_ort.so cannot be built here, or None."""
    if shutil.which("cmake") is None:
        return "cmake is not on PATH (needed to build kernels/onnxruntime)"
    if cxx_compiler() is None:
        return "no C++ compiler ($CXX, c++, g++ or clang++) to build kernels/onnxruntime"
    if onnxruntime_include_dir() is None:
        return f"no onnxruntime headers: set TOFU_ORT_INCLUDE_DIR or run `{FETCH_HINT}`"
    return None


def build_ort_library(build_dir: Path, sanitize: bool = False) -> OrtBuild:
    """Configures and builds kernels/onnxruntime into ``build_dir``: Release, or with ``sanitize`` a Debug build
    with ASan + UBSan (-O0 compiles in a third of the time, and the sanitizers see every access as written).

    Raises:
        RuntimeError: configure or build failed (the tail of their output is in the message).
    """
    start = time.perf_counter()
    configure = [
        "cmake",
        "-S",
        str(ORT_DIR),
        "-B",
        str(build_dir),
        f"-DCMAKE_BUILD_TYPE={'Debug' if sanitize else 'Release'}",
        f"-DONNXRUNTIME_INCLUDE_DIR={onnxruntime_include_dir()}",
        f"-DTOFU_SANITIZE={'ON' if sanitize else 'OFF'}",
    ]
    for command in (configure, ["cmake", "--build", str(build_dir), "--parallel", str(BUILD_JOBS)]):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-6000:]
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{output}")
    return OrtBuild(build_dir, build_dir / "libtofu_edge_ort.so", time.perf_counter() - start)


def sources_sha256(paths: list[str], root: Path = REPO) -> str:
    """What tofu_ort_sources_sha256() must be for ``paths`` (repository-relative) in the checkout at ``root``:
    SHA-256 over ``"<path>\\n<hex SHA-256 of the file>\\n"`` for each path, in order."""
    manifest = "".join(f"{path}\n{hashlib.sha256((root / path).read_bytes()).hexdigest()}\n" for path in paths)
    return hashlib.sha256(manifest.encode()).hexdigest()
