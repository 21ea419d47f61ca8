"""TensorRT engines: build a plan from ONNX (`build_engine`) and run it (`EngineRunner`).

TensorRT and cuda-python are imported only when an engine is built or run, so this package imports (and its input
checks, sidecars and preprocessing work) on a machine without a GPU.
"""

from __future__ import annotations

from tofu_edge.engine.backend import EngineError
from tofu_edge.engine.build import BuildReport, build_engine
from tofu_edge.engine.classify import Classification, classify_image
from tofu_edge.engine.preprocess import PreprocessConfig, load_input, preprocess_image, top_k
from tofu_edge.engine.runner import EngineRunner, RunResult
from tofu_edge.engine.sidecar import (
    BatchProfile,
    TensorSpec,
    check_input_shape,
    inspect_onnx,
    read_sidecar,
    sidecar_path,
)
from tofu_edge.engine.tensorrt_rtx import TensorRTCheck, check_with_tensorrt_rtx, tensorrt_rtx_available
from tofu_edge.stats import LatencyStats

__all__ = [
    "build_engine",
    "BuildReport",
    "EngineRunner",
    "classify_image",
    "Classification",
    "RunResult",
    "LatencyStats",
    "EngineError",
    "BatchProfile",
    "TensorSpec",
    "PreprocessConfig",
    "inspect_onnx",
    "read_sidecar",
    "sidecar_path",
    "check_input_shape",
    "preprocess_image",
    "load_input",
    "top_k",
    "check_with_tensorrt_rtx",
    "tensorrt_rtx_available",
    "TensorRTCheck",
]
