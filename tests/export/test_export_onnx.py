"""`export_onnx`: portable graph, metadata, parity, atomic outputs, checkpoints, typed errors, the plugin flavour."""

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

import tofu_edge
from tests.conftest import images_for, tiny_model
from tofu_edge import FusionConfig
from tofu_edge.errors import CheckpointError, ExportError, OutputError, ParityError
from tofu_edge.export import ParityTolerance, export_onnx

CONFIG = FusionConfig(r=2, mode="tofu", switch=2)


@pytest.fixture(scope="module")
def fused_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fused")
    model = tiny_model("deit_distilled")
    report = export_onnx(model, folder / "m.onnx", CONFIG)
    assert not tofu_edge.is_fused(model)  # the caller's model is left as it was
    return model, report


def test_writes_onnx_and_report_with_the_same_stem(fused_export):
    _, report = fused_export
    assert report.onnx_path.is_file() and report.report_path == report.onnx_path.with_suffix(".json")
    saved = json.loads(report.report_path.read_text())
    assert saved["parity"]["passed"] and saved["opset"] == 17 and saved["input_shape"] == [1, 3, 32, 32]
    assert saved["plan"]["blocks"][0]["tokens_in"] == 18 and saved["gmacs"] < saved["unfused_gmacs"]
    assert set(saved["versions"]) >= {"tofu-edge", "torch", "timm", "onnx", "onnxruntime"}


def test_parity_covers_random_flat_and_real_photos(fused_export):
    sets = {s.name: s for s in fused_export[1].parity.sets}
    assert set(sets) == {"random", "flat", "photos"} and sets["photos"].images == 8
    assert all(s.min_cosine > 0.9999 and s.top1_agreement == 1.0 for s in sets.values())


def test_graph_is_portable_opset17_and_static(fused_export):
    proto = onnx.load(fused_export[1].onnx_path)
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    reductions = [
        a.s for n in proto.graph.node if n.op_type.startswith("Scatter") for a in n.attribute if a.name == "reduction"
    ]
    assert all(r == b"none" for r in reductions)
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    assert all(d.HasField("dim_value") for v in values for d in v.type.tensor_type.shape.dim)


def test_metadata_records_config_plan_and_versions(fused_export):
    meta = {p.key: p.value for p in onnx.load(fused_export[1].onnx_path).metadata_props}
    assert json.loads(meta["tofu_edge.config"])["mode"] == "tofu"
    assert [b["r"] for b in json.loads(meta["tofu_edge.plan"])["blocks"]] == [2, 2, 2, 2]
    assert "torch" in json.loads(meta["tofu_edge.versions"])


def test_exported_model_matches_the_fused_model(fused_export):
    model, report = fused_export
    session = ort.InferenceSession(str(report.onnx_path), providers=["CPUExecutionProvider"])
    images = images_for(model, batch=1, seed=5)
    with torch.no_grad():
        want = tofu_edge.fuse(copy.deepcopy(model), CONFIG)(images).numpy()
    np.testing.assert_allclose(session.run(None, {"images": images.numpy()})[0], want, atol=1e-4)


def test_dynamic_batch_opset18(tmp_path):
    report = export_onnx(
        tiny_model("vit"), tmp_path / "d.onnx", FusionConfig(r=3, mode="mean"), opset=18, dynamic_batch=True, batch=2
    )
    proto = onnx.load(report.onnx_path)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    session = ort.InferenceSession(str(report.onnx_path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"images": np.zeros((3, 3, 32, 32), np.float32)})[0].shape == (3, 1000)


def test_static_batch_is_fixed_in_the_graph(tmp_path):
    report = export_onnx(tiny_model("avg_pool"), tmp_path / "b.onnx", FusionConfig(r=2, mode="mlerp"), batch=3)
    assert report.input_shape == (3, 3, 32, 32)
    dims = onnx.load(report.onnx_path).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [3, 3, 32, 32]


def test_parity_failure_raises_and_leaves_nothing(tmp_path):
    with pytest.raises(ParityError, match="parity out of tolerance: random: cosine"):
        export_onnx(
            tiny_model("vit"), tmp_path / "p.onnx", FusionConfig(r=2), tolerance=ParityTolerance(min_cosine=1.0)
        )
    assert list(tmp_path.iterdir()) == []


def test_output_is_a_folder(tmp_path):
    with pytest.raises(OutputError, match="is a folder"):
        export_onnx(tiny_model("vit"), tmp_path, FusionConfig(r=1))


def small_state_dict():
    return {k: v.clone() for k, v in tofu_edge.create_model("deit_tiny_patch16_224", img_size=32).state_dict().items()}


def test_checkpoint_formats_load_the_weights(tmp_path):
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in small_state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 1}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        model = tofu_edge.create_model("deit_tiny_patch16_224", img_size=32)
        tofu_edge.checkpoint.load_checkpoint(model, tmp_path / name)
        assert torch.equal(model.head.weight, state["head.weight"])


def test_export_api_errors_are_typed(tmp_path):
    with pytest.raises(ExportError, match="opset 19 is not supported"):
        export_onnx(tiny_model("vit"), tmp_path / "m.onnx", opset=19)
    with pytest.raises(CheckpointError):
        export_onnx(tiny_model("vit"), tmp_path / "m.onnx", checkpoint=tmp_path / "missing.safetensors")
    assert list(tmp_path.iterdir()) == []


# --- plugin flavour ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def both_flavors(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flavors")
    model = tiny_model("dinov2_registers")
    config = FusionConfig(r=2, mode="tofu", switch=2)
    return {f: export_onnx(model, folder / f"{f}.onnx", config, flavor=f) for f in ("portable", "plugin")}, model


def test_plugin_flavor_has_one_match_and_one_merge_node_per_fused_block(both_flavors):
    proto = onnx.load(both_flavors[0]["plugin"].onnx_path)
    custom = [n for n in proto.graph.node if n.domain == "ai.onnx.contrib"]
    assert [n.op_type for n in custom] == ["TofuMatch", "TofuMerge"] * 4
    spec = json.loads(tofu_edge.export.plugin_spec.SPEC_PATH.read_text())
    for node in custom:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        declared = spec["plugins"][node.op_type]
        assert set(attributes) == set(declared["attributes"]) | {"plugin_version", "plugin_namespace"}
        assert attributes["plugin_version"] == declared["version"].encode()
        assert attributes["plugin_namespace"] == spec["namespace"].encode()
    modes = [a.i for n in custom if n.op_type == "TofuMerge" for a in n.attribute if a.name == "mode"]
    assert modes == [0, 0, 2, 2]  # prune below the switch, MLERP from it


def test_plugin_flavor_runs_in_onnxruntime_and_equals_the_portable_flavor(both_flavors):
    from tofu_edge.export import ort_session

    reports, model = both_flavors
    assert reports["plugin"].parity.passed and reports["plugin"].flavor == "plugin"
    images = images_for(model, batch=1, seed=9).numpy()
    portable = ort_session(reports["portable"].onnx_path).run(None, {"images": images})[0]
    plugin = ort_session(reports["plugin"].onnx_path).run(None, {"images": images})[0]
    np.testing.assert_allclose(plugin, portable, atol=1e-5, rtol=0)
