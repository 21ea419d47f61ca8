"""`tofu_edge.diffusion.export_onnx`: portable, static ONNX with parity, atomic writes, external data, TensorRT-RTX."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

import tofu_edge.diffusion as td
from tests.diffusion.conftest import step_kwargs, tiny_model
from tofu_edge.errors import OutputError, ParityError
from tofu_edge.export.parity import SetParity

MIN_COSINE = 0.9999  # onnxruntime against PyTorch on the tiny models (fp32)


def _tensorrt_rtx_installed() -> bool:
    try:
        from tofu_edge.engine import tensorrt_rtx_available
    except ImportError:  # before it moved from tofu_edge.export into tofu_edge.engine
        from tofu_edge.export.tensorrt_rtx import tensorrt_rtx_available
    return tensorrt_rtx_available()


def test_unet_exports_with_external_data_and_tensorrt_rtx_builds_it(tmp_path):
    """The default run's export: every op kind in one graph (attn1 + ff fused, MLERP), external data, TRT-RTX."""
    if not _tensorrt_rtx_installed():
        pytest.skip("tensorrt-rtx is not installed (pip install tensorrt-rtx)")
    model = tiny_model("unet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = td.DiffusionFusionConfig(ratio=0.5, op="mlerp", merge_mlp=True)
    report = td.export_onnx(
        model, tmp_path / "unet.onnx", config, encoder_length=5, parity_runs=1, external_data=True, tensorrt_rtx=True
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.json", "unet.onnx", "unet.onnx.data"]
    assert report.parity.passed and min(s.min_cosine for s in report.parity.sets) > MIN_COSINE
    assert {s.name for s in report.parity.sets} == {"random", "flat"}
    assert report.tensorrt_rtx["parsed"] and report.tensorrt_rtx["built"]
    assert report.inputs == {"sample": [1, 4, 16, 16], "timestep": [1], "encoder_hidden_states": [1, 5, 32]}
    saved = json.loads((tmp_path / "unet.json").read_text())
    assert saved["plan"]["levels"][0]["r"] == 128 and saved["external_data"].endswith("unet.onnx.data")
    graph = onnx.load(str(tmp_path / "unet.onnx"), load_external_data=False)
    assert not any(n.op_type in ("ScatterElements", "ScatterND") for n in graph.graph.node)  # gather-only unmerge
    assert all(d.HasField("dim_value") for v in graph.graph.output for d in v.type.tensor_type.shape.dim)
    # the model is left as it was, weights untouched
    assert not td.is_applied(model)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_export_restores_an_earlier_fusion(tmp_path):
    model = tiny_model("dit")
    td.apply(model, td.DiffusionFusionConfig(ratio=0.3, op="prune"))
    before = model(**step_kwargs(model))[0]
    td.export_onnx(model, tmp_path / "dit.onnx", td.DiffusionFusionConfig(ratio=0.5, op="mean", merge_mlp=True))
    assert model.tofu_plan.config.op.value == "prune"
    assert torch.equal(model(**step_kwargs(model))[0], before)


def test_failed_parity_writes_nothing(tmp_path, monkeypatch):
    import tofu_edge.diffusion.export as export_module

    def far_off(name, got, want):
        return SetParity(name, len(got), 1.0, 0.5, 0.5, 1.0)

    monkeypatch.setattr(export_module, "compare_outputs", far_off)
    with pytest.raises(ParityError, match="parity out of tolerance: random: cosine 0.50000 < 0.999") as error:
        td.export_onnx(tiny_model("dit"), tmp_path / "m.onnx", td.DiffusionFusionConfig(ratio=0.5))
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_fails_before_any_work(tmp_path):
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        td.export_onnx(tiny_model("unet"), tmp_path / "dir.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dit", "pixart"])
@pytest.mark.parametrize("op", ["prune", "mean", "mlerp"])
def test_transformers_export_with_parity(tmp_path, family, op):
    config = td.DiffusionFusionConfig(ratio=0.5, op=op, merge_crossattn=True, merge_mlp=True)
    report = td.export_onnx(tiny_model(family), tmp_path / "m.onnx", config, encoder_length=6)
    assert report.parity.passed and min(s.min_cosine for s in report.parity.sets) > MIN_COSINE
