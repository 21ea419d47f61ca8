"""`quantize_onnx`: an exported float file quantized on its own is the file ``export_onnx(int8=...)`` writes, and
the float model is judged by ``export_onnx``'s tolerance while the INT8 model is judged by ``Int8Config.tolerance``."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_model
from tofu_edge import FusionConfig
from tofu_edge.errors import ParityError
from tofu_edge.export import Int8Config, ParityTolerance, export_onnx, onnx_metadata, quantize_onnx

FUSION = FusionConfig(r=2)
LINEAR_LAYERS = 16  # tiny models: qkv, proj, fc1, fc2 in each of 4 blocks


def test_a_float_file_quantized_on_its_own_is_the_file_export_writes_with_int8(tmp_path):
    model = tiny_model("vit")
    float_path = export_onnx(model, tmp_path / "float.onnx", FUSION).onnx_path
    exported = export_onnx(model, tmp_path / "exported.onnx", FUSION, int8=Int8Config()).onnx_path
    quantized = quantize_onnx(float_path, tmp_path / "quantized.onnx", Int8Config(), model)
    assert (tmp_path / "quantized.onnx").read_bytes() == exported.read_bytes()
    assert len(quantized.layers) == LINEAR_LAYERS and quantized.calibration is None
    metadata = onnx_metadata(tmp_path / "quantized.onnx")
    assert metadata["plan"] == onnx_metadata(float_path)["plan"] and "int8" in metadata


def test_export_tolerance_judges_the_float_model_and_the_int8_config_the_int8_model(tmp_path):
    strict = ParityTolerance(min_cosine=1.0)
    with pytest.raises(ParityError, match="float graph, onnxruntime vs PyTorch parity out of tolerance"):
        export_onnx(tiny_model("vit"), tmp_path / "m.onnx", FUSION, int8=Int8Config(), tolerance=strict)
    with pytest.raises(ParityError, match="INT8 vs float fused .onnxruntime. parity out of tolerance"):
        export_onnx(tiny_model("vit"), tmp_path / "m.onnx", FUSION, int8=Int8Config(tolerance=strict))
    assert list(tmp_path.iterdir()) == []
