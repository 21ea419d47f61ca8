"""`tofu-edge bench FILE` and `run FILE` on files that are not one-input float classifiers: a diffusion step (several
inputs, integer class labels, a timestep), an INT8 file, and inputs that cannot be fed.

The small graphs here are written with onnx.helper (milliseconds); one real `diffusion export` file is timed too.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from tofu_edge.cli import app
from tofu_edge.engine.feeds import example_feeds
from tofu_edge.engine.sidecar import TensorSpec

FAST = ["--warmup", "1", "--iterations", "3", "--threads", "1"]
CLASSES = 10  # rows of the class-label table: onnxruntime's Gather fails on an index outside it
runner = CliRunner()


def diffusion_like_file(path, *, batch=2, metadata=None, latent_shape=None):
    """A DiT-like step: hidden_states [B, 4, 2, 2] float, timestep [B] float, class_labels [B] int64 (looked up in a
    table of `CLASSES` rows) -> hidden_states + table[class_labels] + timestep, broadcast."""
    table = numpy_helper.from_array(np.arange(CLASSES * 4, dtype=np.float32).reshape(CLASSES, 4), "table")
    shape = latent_shape or [batch, 4, 2, 2]
    nodes = [
        helper.make_node("Gather", ["table", "class_labels"], ["label"], axis=0),  # [B, 4]
        helper.make_node("Unsqueeze", ["label", "axes"], ["label4"]),  # [B, 4, 1, 1]
        helper.make_node("Unsqueeze", ["timestep", "taxes"], ["t4"]),  # [B, 1, 1, 1]
        helper.make_node("Add", ["hidden_states", "label4"], ["sum"]),
        helper.make_node("Add", ["sum", "t4"], ["noise_pred"]),
    ]
    axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
    taxes = numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "taxes")
    graph = helper.make_graph(
        nodes,
        "step",
        [
            helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("timestep", TensorProto.FLOAT, [batch]),
            helper.make_tensor_value_info("class_labels", TensorProto.INT64, [batch]),
        ],
        [helper.make_tensor_value_info("noise_pred", TensorProto.FLOAT, shape)],
        [table, axes, taxes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    ranges = {"timestep": [0, 1000], "class_labels": [0, CLASSES]}
    entries = {"diffusion_plan": "{}", "input_ranges": json.dumps(ranges)}
    for key, value in (metadata if metadata is not None else entries).items():
        model.metadata_props.add(key=f"tofu_edge.{key}", value=value)
    onnx.save(model, str(path))
    return path


def classifier_file(path, metadata=None):
    """images [1, 3, 4, 4] -> logits [1, 3] (a global average pool), with the given ``tofu_edge.*`` metadata."""
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["logits"]),
        ],
        "classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=f"tofu_edge.{key}", value=value)
    onnx.save(model, str(path))
    return path


def bench_json(*args):
    result = runner.invoke(app, ["bench", *map(str, args), *FAST, "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_bench_feeds_every_input_a_diffusion_step_declares(tmp_path):
    header, row = bench_json(diffusion_like_file(tmp_path / "dit.onnx"))
    assert header["precision"] == "fp32" and row["batch"] == 2 and row["stats"]["samples"] == 3
    assert row["gmacs"] is None and row["r_schedule"] is None  # no ViT plan in a diffusion file


def test_feeds_follow_the_declared_dtypes_and_the_recorded_ranges():
    specs = [
        TensorSpec("hidden_states", (-1, 4, 2, 2), "float32"),
        TensorSpec("timestep", (-1,), "float32"),
        TensorSpec("class_labels", (-1,), "int64"),
        TensorSpec("mask", (-1,), "int32"),
    ]
    ranges = {"input_ranges": {"timestep": [0, 1000], "class_labels": [0, CLASSES]}}
    feeds = example_feeds(specs, ranges, 64, 0, "f.onnx")
    assert feeds["hidden_states"].shape == (64, 4, 2, 2) and feeds["hidden_states"].dtype == np.float32
    timestep, labels = feeds["timestep"], feeds["class_labels"]
    assert timestep.dtype == np.float32 and (timestep == np.round(timestep)).all() and 0 <= timestep.min()
    assert timestep.max() < 1000 and timestep.max() > 1  # integer steps over the range, not a normal draw
    assert labels.dtype == np.int64 and 0 <= labels.min() and labels.max() < CLASSES and len(set(labels)) > 1
    assert feeds["mask"].dtype == np.int32 and not feeds["mask"].any()  # no range recorded: index 0, always valid
    again = example_feeds(specs, ranges, 64, 0, "f.onnx")
    assert all(np.array_equal(feeds[name], again[name]) for name in feeds)  # seeded


def test_an_input_with_a_dynamic_axis_besides_the_batch_is_refused_in_one_line(tmp_path):
    path = diffusion_like_file(tmp_path / "dyn.onnx", latent_shape=[2, 4, "h", "w"])
    result = runner.invoke(app, ["bench", str(path), *FAST])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: dyn.onnx: input 'hidden_states' has the dynamic shape [2, 4, -1, -1]")
    assert result.stderr.count("\n") == 1


def test_bench_labels_an_int8_file_int8_in_the_json_and_the_table_title(tmp_path):
    int8 = json.dumps({"target": "onnxruntime-cpu", "recipe": "dynamic-u8s8"})
    path = classifier_file(tmp_path / "m_int8.onnx", {"int8": int8, "model": "deit_tiny_patch16_224"})
    header, row = bench_json(path)
    assert header["precision"] == "int8" and row["batch"] == 1
    table = runner.invoke(app, ["bench", str(path), *FAST])
    assert table.exit_code == 0, table.output
    assert "batch 1, int8, 3 rounds" in table.stdout


def test_bench_of_a_float_file_beside_an_int8_baseline_names_both_precisions(tmp_path):
    int8 = classifier_file(tmp_path / "int8.onnx", {"int8": json.dumps({"target": "onnxruntime-cpu"})})
    header, *_ = bench_json(classifier_file(tmp_path / "float.onnx"), "--baseline", int8)
    assert header["precision"] == "fp32/int8"


def test_run_refuses_a_diffusion_step_in_one_line(tmp_path):
    path = diffusion_like_file(tmp_path / "dit.onnx")
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 2, 2), np.float32))
    result = runner.invoke(app, ["run", str(path), str(tmp_path / "x.npy")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: dit.onnx is one denoising step of a diffusion model (inputs: hidden_states")
    assert "tofu-edge bench" in result.stderr and result.stderr.count("\n") == 1


VIT = ["export", "deit_tiny_patch16_224", "--img-size", "32", "--r", "1", "--clamp"]
FLAVOURS = {  # what each kind of file tofu-edge writes is exported with, and the precision bench must report
    "portable": (VIT, "fp32"),
    "plugin": ([*VIT, "--flavor", "plugin"], "fp32"),
    "int8-onnxruntime-cpu": ([*VIT, "--int8"], "int8"),
    "int8-tensorrt": ([*VIT, "--int8", "--int8-target", "tensorrt"], "int8"),
    "int8-plugin-tensorrt": ([*VIT, "--flavor", "plugin", "--int8", "--int8-target", "tensorrt"], "int8"),
    **{
        preset: (["diffusion", "export", preset, "--parity-runs", "1"], "fp32")
        for preset in ("tiny-unet", "tiny-dit", "tiny-pixart")
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_bench_times_every_kind_of_file_tofu_edge_writes(tmp_path, flavour):
    args, precision = FLAVOURS[flavour]
    output = tmp_path / f"{flavour}.onnx"
    exported = runner.invoke(app, [*args, "-o", str(output)])
    assert exported.exit_code == 0, exported.output
    header, row = bench_json(output)
    assert header["precision"] == precision and row["variant"] == flavour and row["stats"]["samples"] == 3
    if flavour == "tiny-dit":
        entries = {p.key: p.value for p in onnx.load(str(output), load_external_data=False).metadata_props}
        assert json.loads(entries["tofu_edge.input_ranges"]) == {"timestep": [0, 1000], "class_labels": [0, 10]}
