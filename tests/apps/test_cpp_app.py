"""The C++ app in export/cpp: compiles against the TensorRT headers (compile-only, no libnvinfer here), its host-only
input/output code agrees with the Python side, it links and parses its arguments (against a stub libnvinfer), and on
a GPU with TensorRT it classifies as the Python runner does."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.engine.test_engine_gpu import images
from tofu_edge.engine import EngineRunner, PreprocessConfig, build_engine, preprocess_image, top_k

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "export" / "cpp"
EXACT = 1e-6  # float32 (x / 255 - mean) / std in both languages
PROBABILITY = 1e-12  # softmax in float64 in both languages
STUB_LIBNVINFER = """
#include <cstdint>
// Stands in for libnvinfer at link time only: createInferRuntime() then returns null, which the app reports.
extern "C" void* createInferRuntime_INTERNAL(void*, int32_t) { return nullptr; }
"""


def tensorrt_headers() -> Path | None:
    """The TensorRT 10 public headers of the PyPI package kernel-lens, located without importing it."""
    spec = importlib.util.find_spec("kernel_lens")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "include" / "tensorrt"
    return folder if (folder / "NvInfer.h").is_file() else None


def cuda_toolkit() -> bool:
    return shutil.which("nvcc") is not None or Path("/usr/local/cuda/include/cuda_runtime_api.h").is_file()


def require_toolchain() -> Path:
    for tool in ("cmake", "g++"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not cuda_toolkit():
        pytest.skip("no CUDA toolkit (nvcc or /usr/local/cuda): cuda_runtime_api.h is needed to compile the app")
    headers = tensorrt_headers()
    if headers is None:
        pytest.skip("no TensorRT headers: pip install kernel-lens (it ships the TensorRT 10 public headers)")
    return headers


def cmake(*args, cwd=None):
    result = subprocess.run(["cmake", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def compile_only(tmp_path_factory):
    """export/cpp configured with -DTOFU_EDGE_COMPILE_ONLY=ON and built with warnings as errors."""
    headers = require_toolchain()
    build = tmp_path_factory.mktemp("app-compile-only")
    cmake(
        "-S",
        SOURCE,
        "-B",
        build,
        "-DTOFU_EDGE_COMPILE_ONLY=ON",
        "-DTOFU_EDGE_WERROR=ON",
        f"-DTensorRT_INCLUDE_DIR={headers}",
    )
    cmake("--build", build, "-j", "2")
    return build


def test_the_app_compiles_against_the_tensorrt_headers(compile_only):
    objects = list(compile_only.rglob("main.cpp.o"))
    assert len(objects) == 1 and objects[0].stat().st_size > 0
    assert not (compile_only / "tofu_edge_run").exists()  # compile-only links no executable


def test_host_selftest_passes_under_ctest(compile_only):
    result = subprocess.run(["ctest", "--output-on-failure"], cwd=compile_only, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ppm_normalization_matches_python(compile_only, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.ppm")
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)
    tool = compile_only / "tofu_tensor_io_test"
    subprocess.run(
        [tool, "normalize", tmp_path / "in.ppm", tmp_path / "out.bin", "0.5,0.4,0.3", "0.2,0.3,0.25"], check=True
    )
    theirs = np.fromfile(tmp_path / "out.bin", "<f4").reshape(1, 3, 24, 32)
    with Image.open(tmp_path / "in.ppm") as image:  # same size and crop_pct 1: no resize, no crop
        ours = preprocess_image(image, (24, 32), PreprocessConfig(mean=mean, std=std, crop_pct=1.0))
    assert np.abs(theirs - ours).max() <= EXACT


def test_top_k_matches_python(compile_only, tmp_path):
    logits = np.random.default_rng(1).normal(size=1000).astype(np.float32)
    logits[[7, 3]] = logits.max() + 1.0  # a tie: the lower index first in both
    logits.tofile(tmp_path / "logits.bin")
    output = subprocess.run(
        [compile_only / "tofu_tensor_io_test", "topk", tmp_path / "logits.bin", "1000", "5"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    theirs = [(int(i), float(p)) for i, p in (line.split() for line in output.splitlines())]
    ours = top_k(logits, 5)
    assert [i for i, _ in theirs] == [i for i, _ in ours] and theirs[0][0] == 3
    assert np.allclose([p for _, p in theirs], [p for _, p in ours], rtol=PROBABILITY, atol=0)


@pytest.fixture(scope="module")
def linked_app(tmp_path_factory):
    """The full executable, linked against a stub libnvinfer (just the symbol the app uses) and the real cudart."""
    headers = require_toolchain()
    build = tmp_path_factory.mktemp("app-linked")
    stub = build / "stub" / "libnvinfer.so"
    stub.parent.mkdir()
    (stub.parent / "stub.cpp").write_text(STUB_LIBNVINFER)
    subprocess.run(["g++", "-shared", "-fPIC", "-o", stub, stub.parent / "stub.cpp"], check=True)
    cmake(
        "-S",
        SOURCE,
        "-B",
        build,
        f"-DTensorRT_INCLUDE_DIR={headers}",
        f"-DTensorRT_LIBRARY={stub}",
        "-DTOFU_EDGE_BUILD_TESTS=OFF",
    )
    cmake("--build", build, "-j", "2")
    return build / "tofu_edge_run"


def run_app(app, *args):
    return subprocess.run([app, *map(str, args)], capture_output=True, text=True)


def test_the_app_links_and_shows_its_usage(linked_app):
    result = run_app(linked_app, "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: tofu_edge_run ENGINE INPUT")


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "error: expected ENGINE and INPUT"),
        (["m.engine", "x.ppm", "--top"], "error: --top needs a value"),
        (["m.engine", "x.ppm", "--mean", "1,2"], "error: bad value for --mean"),
        (["m.engine", "x.ppm", "--iterations", "0"], "error: need --iterations >= 1"),
        (["m.engine", "x.ppm", "--fast"], "error: unknown option --fast"),
    ],
)
def test_bad_arguments_exit_2(linked_app, args, message):
    result = run_app(linked_app, *args)
    assert result.returncode == 2 and result.stderr.startswith(message), result.stderr


def test_a_runtime_failure_exits_1(linked_app, tmp_path):
    result = run_app(linked_app, tmp_path / "m.engine", tmp_path / "x.ppm")
    assert result.returncode == 1 and result.stderr == "error: cannot create the TensorRT runtime\n"


def test_configure_without_libnvinfer_says_what_to_do(tmp_path):
    headers = require_toolchain()
    result = subprocess.run(
        [
            "cmake",
            "-S",
            SOURCE,
            "-B",
            tmp_path,
            f"-DTensorRT_INCLUDE_DIR={headers}",
            "-DTensorRT_LIBRARY=TensorRT_LIBRARY-NOTFOUND",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode == 0:
        pytest.skip("libnvinfer is installed here")
    assert "libnvinfer not found" in result.stderr and "TOFU_EDGE_COMPILE_ONLY=ON" in result.stderr


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.usefixtures("tensorrt_gpu")
def test_cpp_app_agrees_with_the_python_runner(tiny_onnx, tmp_path):
    app_binary = ROOT / "build" / "app" / "tofu_edge_run"
    if not app_binary.is_file():
        pytest.skip("the C++ app is not built: cmake -S export/cpp -B build/app && cmake --build build/app")
    report = build_engine(tiny_onnx, tmp_path / "m.engine", tf32=False)
    tensor = images()
    tensor.astype("<f4").tofile(tmp_path / "x.bin")
    with EngineRunner(report.engine_path) as runner:
        expected = int(runner.run(tensor).outputs["logits"].argmax())
    result = subprocess.run(
        [app_binary, report.engine_path, tmp_path / "x.bin", "--top", "1"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    rank_line = result.stdout.splitlines()[2].split()
    assert int(rank_line[1]) == expected and "CUDA events" in result.stdout
