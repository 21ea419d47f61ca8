"""`export_onnx(int8=...)`: INT8 on the Linear layers only, for onnxruntime on CPUs and for TensorRT (symmetric Q/DQ),
with metadata, report, parity against the float fused and unfused models, atomic writes and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image
from rich.console import Console

from tests.conftest import tiny_model
from tofu_edge import FusionConfig
from tofu_edge.cli.export import render_export
from tofu_edge.errors import ConfigError, ExportError, ParityError
from tofu_edge.export import ParityTolerance, export_onnx
from tofu_edge.export.int8_export import INT8_TOLERANCE, linear_weights
from tofu_edge.export.int8_graph import linear_nodes
from tofu_edge.export.quantize import Int8Config, Int8Recipe, Int8Target

FUSION = FusionConfig(r=2)
BLOCKS, LINEARS_PER_BLOCK = 4, 4  # tiny models: qkv, proj, fc1, fc2 in each of 4 blocks
INT8_MIN_COSINE = 0.999  # tiny random-weight models stay this close to their float fused model in INT8
PLUGIN_OPS = {"TofuMatch", "TofuMerge"}


@pytest.fixture(scope="module")
def cpu_export(tmp_path_factory):
    """q/k-norm model: its key projection is a C x C MatMul, the shape of proj, which must stay float."""
    folder = tmp_path_factory.mktemp("cpu")
    return export_onnx(tiny_model("qk_norm"), folder / "m.onnx", FUSION, int8=Int8Config())


@pytest.fixture(scope="module")
def tensorrt_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trt")
    return export_onnx(tiny_model("vit"), folder / "m.onnx", FUSION, int8=Int8Config(target="tensorrt"))


@pytest.fixture(scope="module")
def plugin_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugin")
    config = Int8Config(target=Int8Target.TENSORRT)
    return export_onnx(tiny_model("vit"), folder / "m.onnx", FUSION, int8=config, flavor="plugin")


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in model.graph.node for output in node.output}


def float_matmuls_read_no_quantized_tensor(model: onnx.ModelProto) -> bool:
    made = producers(model)
    quantized = {"DequantizeLinear", "DynamicQuantizeLinear", "QuantizeLinear", "MatMulInteger"}
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and any(i in made and made[i].op_type in quantized for i in node.input):
            return False
    return True


def test_cpu_int8_quantizes_the_linear_layers_only(cpu_export):
    model = onnx.load(cpu_export.onnx_path)
    ops = cpu_export.ops
    assert ops["MatMulInteger"] == BLOCKS * LINEARS_PER_BLOCK and ops["DynamicQuantizeLinear"] <= ops["MatMulInteger"]
    made = producers(model)
    for node in model.graph.node:
        if node.op_type == "MatMulInteger":
            assert made[node.input[0]].op_type == "DynamicQuantizeLinear"
    # the fusion step's key projection (C x C on q/k-norm models), scores and assignment matmuls stay float
    assert ops["MatMul"] > 0 and float_matmuls_read_no_quantized_tensor(model)
    assert ops["LayerNormalization"] >= 2 * BLOCKS + 1 and "QuantizeLinear" not in ops
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}


def test_tensorrt_int8_is_symmetric_qdq_on_the_linear_layers(tensorrt_export):
    model = onnx.load(tensorrt_export.onnx_path)
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert tensorrt_export.ops["QuantizeLinear"] == BLOCKS * LINEARS_PER_BLOCK  # one per Linear input
    for node in qdq:
        zero_point = initializers[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any()  # symmetric int8: zero point 0
    weights = [n for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in initializers]
    assert len(weights) == BLOCKS * LINEARS_PER_BLOCK
    assert all(initializers[n.input[1]].ndim == 1 for n in weights)  # per output channel
    dequantized = {name for node in qdq if node.op_type == "DequantizeLinear" for name in node.output}
    readers = [node for node in model.graph.node if set(node.input) & dequantized]
    # the Linear MatMuls, both inputs INT8, read Q/DQ outputs; nothing else does (fusion step, norms, head)
    assert len(readers) == BLOCKS * LINEARS_PER_BLOCK and {n.op_type for n in readers} == {"MatMul"}
    assert all(set(node.input[:2]) <= dequantized for node in readers)
    assert tensorrt_export.ops["MatMul"] > len(readers)  # the fusion step's matmuls, in float
    assert tensorrt_export.ops["LayerNormalization"] == 2 * BLOCKS + 1 and tensorrt_export.ops["Gemm"] == 1


def test_plugin_flavour_keeps_its_plugin_nodes_float(plugin_export, tensorrt_export):
    model = onnx.load(plugin_export.onnx_path)
    made = producers(model)
    plugins = [n for n in model.graph.node if n.op_type in PLUGIN_OPS]
    assert len(plugins) == 2 * BLOCKS
    for node in plugins:
        assert node.domain == "ai.onnx.contrib"
        assert not any(made[i].op_type in ("DequantizeLinear", "QuantizeLinear") for i in node.input if i in made)
    assert plugin_export.ops["QuantizeLinear"] == BLOCKS * LINEARS_PER_BLOCK
    # calibrated on the portable twin, the ranges carried over layer by layer: the same INT8 model
    got = {s.name: s.min_cosine for s in plugin_export.int8.parity.sets}
    want = {s.name: s.min_cosine for s in tensorrt_export.int8.parity.sets}
    assert got.keys() == want.keys() and all(abs(got[k] - want[k]) < 1e-4 for k in got)


def test_one_file_with_metadata_and_an_int8_report(tensorrt_export):
    folder = tensorrt_export.onnx_path.parent
    assert sorted(p.name for p in folder.iterdir()) == ["m.json", "m.onnx"]  # no float model left beside it
    meta = {p.key: p.value for p in onnx.load(tensorrt_export.onnx_path).metadata_props}
    entry = json.loads(meta["tofu_edge.int8"])
    assert entry["target"] == "tensorrt" and entry["recipe"] == "symmetric-qdq"
    assert entry["quantized_layers"] == BLOCKS * LINEARS_PER_BLOCK
    assert entry["calibration"]["images"] == 12 and "foolbox" in entry["calibration"]["source"]
    assert {"tofu_edge.plan", "tofu_edge.config", "tofu_edge.flavor"} <= meta.keys()
    report = json.loads(tensorrt_export.report_path.read_text())["int8"]
    assert report["quantized_layers"][:4] == [f"blocks.0.{n}" for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    assert report["parity_vs_float_fused"]["passed"]
    assert report["parity_vs_float_fused"]["tolerance"]["min_cosine"] == INT8_TOLERANCE.min_cosine
    for key in ("vs_unfused_float", "float_fused_vs_unfused_float"):
        assert [s["name"] for s in report[key]] == ["random", "flat", "photos"]
        assert all({"max_abs", "min_cosine", "top1_agreement"} <= s.keys() for s in report[key])


def test_text_report_names_the_recipe_calibration_and_parity(tensorrt_export):
    console = Console(record=True, width=200)
    render_export(tensorrt_export, console)
    text = console.export_text()
    assert f"INT8 for tensorrt: symmetric-qdq, {BLOCKS * LINEARS_PER_BLOCK} Linear layers quantized" in text
    assert "calibration: 12 images (64 asked) from foolbox's ImageNet photos" in text
    assert "INT8 parity: passed" in text


def test_int8_stays_close_to_the_float_fused_model(cpu_export, tensorrt_export):
    for report in (cpu_export, tensorrt_export):
        assert report.parity.passed and report.int8.parity.passed
        assert all(s.min_cosine >= INT8_MIN_COSINE for s in report.int8.parity.sets)


def test_calibration_folder_count_progress_and_a_failed_int8_parity_leaves_nothing(tmp_path):
    photos = tmp_path / "photos" / "class_a"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    calls = []
    config = Int8Config(
        recipe="static-qdq",
        calibration_images=tmp_path / "photos",
        calibration_count=3,
        tolerance=ParityTolerance(min_cosine=1.0),
    )
    out = tmp_path / "out"
    with pytest.raises(ParityError, match="m.onnx: INT8 vs float fused .onnxruntime. parity out of tolerance"):
        export_onnx(
            tiny_model("vit"),
            out / "m.onnx",
            FUSION,
            batch=2,
            int8=config,
            calibration_progress=lambda done, total: calls.append((done, total)),
        )
    assert calls == [(2, 3), (3, 3)]  # a static batch of 2: the last batch padded
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(target="tflite"), "unknown INT8 target 'tflite'; choose one of onnxruntime-cpu, tensorrt"),
        (dict(recipe="fp8"), "unknown INT8 recipe 'fp8'"),
        (dict(target="tensorrt", recipe="dynamic"), "the tensorrt INT8 target takes symmetric Q/DQ only"),
        (dict(recipe="static-qdq", calibration_count=0), "calibration count must be >= 1, got 0"),
        (dict(calibration_images="photos"), "the dynamic INT8 recipe scales activations at run time"),
        (dict(recipe="static-qdq", calibration_data=np.zeros((2, 3, 32))), "calibration data must be .N, C, H, W."),
    ],
)
def test_bad_config_is_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message) as error:
        Int8Config(**kwargs)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(int8=Int8Config(), flavor="plugin"), "INT8 for onnxruntime on CPUs takes the portable flavour"),
        (dict(int8=Int8Config(recipe="static-qdq", calibration_images="missing")), "calibration folder missing"),
        (dict(int8=Int8Config(recipe="static-qdq", calibration_data=np.zeros((2, 3, 8, 8)))), r"must be \[N, 3, 32"),
    ],
)
def test_bad_export_input_fails_before_any_work(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        export_onnx(tiny_model("vit"), tmp_path / "out" / "m.onnx", FUSION, **kwargs)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_empty_calibration_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="calibration folder .*empty has no .jpg"):
        export_onnx(
            tiny_model("vit"), tmp_path / "m.onnx", FUSION, int8=Int8Config("tensorrt", None, tmp_path / "empty")
        )


def test_linear_layers_are_found_by_their_weights(cpu_export):
    model = tiny_model("vit")
    graph = onnx.load(cpu_export.onnx_path)  # another model's graph: none of this model's weights are in it
    with pytest.raises(ExportError, match="cannot find the Linear layers .* blocks.0.attn.qkv .0 nodes."):
        linear_nodes(graph, linear_weights(model))


def test_recipe_defaults_follow_the_target():
    assert Int8Config().recipe is Int8Recipe.DYNAMIC and not Int8Config().recipe.calibrated
    assert Int8Config(target="tensorrt").recipe is Int8Recipe.SYMMETRIC_QDQ
    assert Int8Config(recipe="static-qoperator").count == 64
