"""Selection strategies export to the portable flavour (parity on random, flat and real photos; TensorRT-RTX parses
and builds it) and are refused, in one line, by the plugin flavour."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from tests.conftest import images_for, tiny_model
from tofu_edge import FusionConfig, fuse
from tofu_edge.engine.tensorrt_rtx import check_with_tensorrt_rtx, tensorrt_rtx_available
from tofu_edge.errors import ConfigError
from tofu_edge.export import export_onnx
from tofu_edge.export.session import ort_session


@pytest.fixture(scope="module", params=["energy", "attention"])
def selected_export(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    model = tiny_model("deit3_layerscale")
    config = FusionConfig(r=3, mode="mlerp", selection=request.param)
    return model, config, export_onnx(model, folder / "m.onnx", config)


def test_parity_passes_on_random_flat_and_photos(selected_export):
    _, config, report = selected_export
    sets = {s.name: s for s in report.parity.sets}
    assert set(sets) == {"random", "flat", "photos"}
    assert all(s.min_cosine > 0.9999 and s.top1_agreement == 1.0 for s in sets.values())
    saved = json.loads(report.report_path.read_text())
    assert saved["plan"]["blocks"][0]["selection"] == config.selection.value


def test_graph_uses_standard_ops_only_and_runs_like_the_fused_model(selected_export):
    model, config, report = selected_export
    proto = onnx.load(report.onnx_path)
    assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"}
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(metadata["tofu_edge.config"])["selection"] == config.selection.value
    images = images_for(model, batch=1, seed=7)
    with torch.no_grad():
        want = fuse(model, config)(images).numpy()
    got = ort_session(report.onnx_path).run(None, {"images": images.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not tensorrt_rtx_available(), reason="tensorrt_rtx is not importable (pip install tensorrt-rtx)")
def test_tensorrt_rtx_parses_and_builds_it(selected_export):
    result = check_with_tensorrt_rtx(selected_export[2].onnx_path)
    assert result.parsed and result.built, result


def test_plugin_flavour_refuses_a_selection_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="selection=energy runs on the PyTorch ops and in the portable ONNX flavour"):
        export_onnx(tiny_model("vit"), tmp_path / "p.onnx", FusionConfig(r=2, selection="energy"), flavor="plugin")
    assert not list(tmp_path.iterdir())
