"""Fixtures shared across test folders: tiny seeded timm models, their exported ONNX files, stand-ins for TensorRT."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# Without a GPU, the Triton fusion step's tests (tests/ops/test_triton_step.py) run Triton's interpreter, which
# triton.jit picks when a kernel is defined: set it before anything can import tofu_edge.ops.triton_kernels.
os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")

import tofu_edge
import tofu_edge.engine.runner
from tests.kernels.ort_build import OrtBuild, build_ort_library
from tests.kernels.ort_build import missing_prerequisite as ort_missing_prerequisite
from tests.stubs.stub_runtime import add_stub_runtime, make_stub_cudart
from tests.stubs.stub_tensorrt import make_stub_tensorrt

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=3)

# name -> (timm model, overrides); token counts: vit 17, distilled 18, dinov2-reg 21, avg-pooled 16
FAMILIES = {
    "vit": ("vit_small_patch16_224", {}),
    "deit_distilled": ("deit_small_distilled_patch16_224", {}),
    "deit3_layerscale": ("deit3_small_patch16_224", {}),
    "dinov2_registers": ("vit_small_patch14_reg4_dinov2", dict(patch_size=14, img_size=56)),
    "clip_norm_pre": ("vit_base_patch16_clip_224", {}),
    "qk_norm": ("vit_small_patch16_224", dict(qk_norm=True)),
    "avg_pool": ("vit_medium_patch16_gap_256", {}),
}
FUSION = tofu_edge.FusionConfig(r=2)  # the schedule of the tiny ONNX files


def tiny_model(family: str, fused_attn: bool = True, seed: int = 0) -> torch.nn.Module:
    """A tiny random-weight model of ``family`` in eval mode, with LayerScale and biases made non-trivial."""
    name, overrides = FAMILIES[family]
    torch.manual_seed(seed)
    model = tofu_edge.create_model(name, **{**TINY, **overrides})
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param_name.endswith((".gamma", "bias")):  # timm initialises these to constants
                param.normal_(0.0, 0.1 if param_name.endswith("bias") else 0.5)
    for block in model.blocks:
        block.attn.fused_attn = fused_attn
    return model


def images_for(model: torch.nn.Module, batch: int = 2, seed: int = 1) -> torch.Tensor:
    """Random images of the model's input size."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *model.patch_embed.img_size, generator=generator)


@pytest.fixture(params=sorted(FAMILIES))
def family(request) -> str:
    return request.param


# --- tiny exported ONNX files (session-scoped: each is exported once per run) -----------------------------------


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """A tiny fused ViT exported with a static batch of 1: ``images`` [1, 3, 32, 32] -> ``logits``."""
    path = tmp_path_factory.mktemp("onnx") / "vit_static.onnx"
    return tofu_edge.export_onnx(tiny_model("vit"), path, FUSION).onnx_path


@pytest.fixture(scope="session")
def tiny_onnx_dynamic(tmp_path_factory):
    """The same model with a dynamic batch axis."""
    path = tmp_path_factory.mktemp("onnx") / "vit_dynamic.onnx"
    return tofu_edge.export_onnx(tiny_model("vit"), path, FUSION, dynamic_batch=True, batch=2).onnx_path


@pytest.fixture(scope="session")
def tiny_onnx_plugin(tmp_path_factory):
    """The same model, plugin flavour: every fusion step a ``TofuMatch`` and a ``TofuMerge`` node."""
    path = tmp_path_factory.mktemp("onnx") / "vit_plugin.onnx"
    return tofu_edge.export_onnx(tiny_model("vit"), path, FUSION, flavor="plugin").onnx_path


# --- the native onnxruntime ops (kernels/onnxruntime): built once per run ------------------------------------------

_ort_build_seconds: list[float] = []


@pytest.fixture(scope="session")
def ort_build(tmp_path_factory: pytest.TempPathFactory) -> OrtBuild:
    """libtofu_edge_ort.so (kernels/onnxruntime), configured and built once per session (``$TOFU_ORT_BUILD_DIR``
    reuses a build folder); skipped with the reason where cmake, a C++ compiler or onnxruntime's headers are missing."""
    reason = ort_missing_prerequisite()
    if reason is not None:
        pytest.skip(reason)
    reuse = os.environ.get("TOFU_ORT_BUILD_DIR")
    build_dir = Path(reuse) if reuse else tmp_path_factory.mktemp("ort-build")
    try:
        build = build_ort_library(build_dir)
    except RuntimeError as error:
        pytest.fail(str(error))
    _ort_build_seconds.append(build.seconds)
    return build


@pytest.fixture(scope="session")
def ort_library(ort_build: OrtBuild) -> Path:
    """The path of this run's libtofu_edge_ort.so."""
    return ort_build.library


def pytest_terminal_summary(terminalreporter) -> None:
    if _ort_build_seconds:
        terminalreporter.write_line(f"kernels/onnxruntime: cmake configure + build took {_ort_build_seconds[0]:.1f} s")


# --- TensorRT and cuda-python: stand-ins (tests/stubs), their absence, and the real thing -------------------------


@pytest.fixture
def stub_trt(monkeypatch):
    """Install the stand-in as ``tensorrt`` for one test; returns it (``.calls`` records each build)."""
    module = make_stub_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make ``import tensorrt`` fail even where TensorRT is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def cudart(stub_trt, monkeypatch):
    """Stand-ins for TensorRT (build and run side) and cuda-python; returns the cudart stand-in."""
    rt = make_stub_cudart()
    add_stub_runtime(stub_trt, rt)
    monkeypatch.setattr(tofu_edge.engine.runner, "import_cudart", lambda: rt)
    return rt


@pytest.fixture(scope="module")
def tensorrt_gpu():
    """Skip the module's tests unless TensorRT, cuda-python and a CUDA device are all here."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install tensorrt or NVIDIA's container)")
    from tofu_edge.engine.backend import import_cudart
    from tofu_edge.errors import MissingDependencyError

    try:
        cudart = import_cudart()
    except MissingDependencyError as error:
        pytest.skip(str(error))
    status, count = cudart.cudaGetDeviceCount()
    if status != cudart.cudaError_t.cudaSuccess or count == 0:
        pytest.skip(f"no CUDA device ({status})")


@pytest.fixture
def poisoned(monkeypatch):
    """Every ``new_empty`` (how the Triton step's ops allocate their outputs and scratch) filled with NaN or -7,
    so an element no program stores fails its test (CPU interpreter and GPU alike)."""
    original = torch.Tensor.new_empty

    def new_empty(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        return out.fill_(float("nan") if out.is_floating_point() else -7)

    monkeypatch.setattr(torch.Tensor, "new_empty", new_empty)
