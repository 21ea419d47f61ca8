"""Places where no file can be made, and options the installed exporter cannot honour: one line in our words, exit
2, before the work where it can be known before."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from tests.faults.tmpfs import mounted_tmpfs
from tofu_edge.cli import app
from tofu_edge.errors import ExportError, OutputError
from tofu_edge.export.graph import convert_opset
from tofu_edge.files import check_writable

runner = CliRunner()


def assert_one_line(result, start: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {start}") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output


def test_export_under_proc_fails_before_any_work():
    result = runner.invoke(app, ["export", "deit_tiny_patch16_224", "-o", "/proc/x.onnx"])
    assert_one_line(result, "cannot create files in /proc (for x.onnx)")


def test_bench_output_under_proc_fails_before_timing():
    result = runner.invoke(app, ["bench", "deit_tiny_patch16_224", "--img-size", "32", "-o", "/proc/b.jsonl"])
    assert_one_line(result, "cannot create files in /proc (for b.jsonl)")


def test_export_into_a_read_only_file_system_fails_before_any_work(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as mount:  # root passes os.access on it: only a file tells
        result = runner.invoke(app, ["export", "deit_tiny_patch16_224", "-o", str(mount / "m.onnx")])
        assert_one_line(result, f"cannot create files in {mount} (for m.onnx): read-only file system")


def test_check_writable_leaves_nothing_behind_where_it_can_write(tmp_path):
    check_writable(tmp_path / "new" / "m.onnx")
    assert list((tmp_path / "new").iterdir()) == []
    with pytest.raises(OutputError, match="is a folder"):
        check_writable(tmp_path / "new")


def test_an_opset_the_converter_cannot_reach_is_one_line_naming_the_op_and_the_opset_that_works():
    graph = helper.make_graph(
        [helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=0)],
        "split",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2]) for name in ("a", "b")],
        [numpy_helper.from_array(np.array([2, 2], dtype=np.int64), "sizes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ExportError) as caught:
        convert_opset(model, 17)
    message = str(caught.value)
    assert message.startswith("opset 17 cannot hold this graph: its Split nodes have the opset-18 form")
    assert message.endswith("export with --opset 18, the opset this graph was traced in")
    assert "\n" not in message and "Assertion" not in message and "$" not in message


@pytest.mark.slow
def test_diffusion_export_at_opset_17_of_a_unet_with_geglu(tmp_path):
    result = runner.invoke(app, ["diffusion", "export", "tiny-unet", "-o", str(tmp_path / "u.onnx"), "--opset", "17"])
    assert_one_line(result, "opset 17 cannot hold this graph: its Split nodes")
    assert list(tmp_path.iterdir()) == []
