"""TofuMatch and TofuMerge inside TensorRT engines on a GPU, against tofu_edge's PyTorch ops.

Each test builds a small strongly typed network (one plugin layer, or the two chained), serializes and
deserializes the engine (so the plugins go through createPlugin in the runtime phase), runs it on CUDA memory
owned by torch and compares with the reference. Needs TensorRT >= 10 (`import tensorrt`) and a CUDA GPU; the
plugin library comes from the session build (with the local GPU's arch added, see conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tofu_edge.config import StepOp
from tofu_edge.ops import fuse_tokens, match_tokens
from tofu_edge.ops.match import cosine_scores, match_scores

pytestmark = [pytest.mark.gpu, pytest.mark.trt]

ATOL_FP32 = 1e-5
RTOL_FP32 = 1e-5
TOL_FP16 = 2e-3  # one rounding of the output to fp16; the kernels accumulate in fp32
MODES = {StepOp.PRUNE: 0, StepOp.MEAN: 1, StepOp.MLERP: 2}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
# (batch, num_tokens, num_prefix, r, channels): tiny, DeiT-S at r=13, |A| above the block size, registers.
SHAPES = [(2, 17, 1, 4, 48), (8, 197, 1, 13, 384), (2, 577, 1, 200, 100), (3, 261, 5, 64, 130)]
SHAPE_IDS = ["tiny", "deit-s", "vit-l-384", "registers"]


@pytest.fixture(scope="module")
def trt():
    tensorrt = pytest.importorskip("tensorrt", reason="TensorRT's Python package (tensorrt >= 10) is not installed")
    if int(tensorrt.__version__.split(".")[0]) < 10:
        pytest.skip(f"TensorRT {tensorrt.__version__} has no IPluginV3 (needs >= 10)")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return tensorrt


@pytest.fixture(scope="module")
def registry(trt, kernel_build, specs):
    registry = trt.get_plugin_registry()
    handle = registry.load_library(str(kernel_build.plugin_library))
    assert handle is not None, f"TensorRT could not load {kernel_build.plugin_library}"
    for name, plugin in specs["plugins"].items():
        assert registry.get_creator(name, plugin["version"], specs["namespace"]) is not None, name
    yield registry
    registry.deregister_library(handle)


class Engine:
    """A strongly typed network of tofu_edge plugin layers, built, serialized, deserialized and runnable."""

    def __init__(self, trt, registry, specs) -> None:
        self.trt, self.registry, self.specs = trt, registry, specs
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.builder = trt.Builder(self.logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        self.network = self.builder.create_network(flags)
        self.context = None

    def input(self, name: str, tensor: torch.Tensor):
        dtype = {torch.float32: self.trt.float32, torch.float16: self.trt.float16, torch.int32: self.trt.int32}
        return self.network.add_input(name, dtype[tensor.dtype], tuple(tensor.shape))

    def plugin(self, name: str, inputs: list, attributes: dict[str, int], outputs: list[str]) -> list:
        creator = self.registry.get_creator(name, self.specs["plugins"][name]["version"], self.specs["namespace"])
        fields = self.trt.PluginFieldCollection(
            [
                self.trt.PluginField(key, np.array([value], np.int32), self.trt.PluginFieldType.INT32)
                for key, value in attributes.items()
            ]
        )
        plugin = creator.create_plugin(name, fields, self.trt.TensorRTPhase.BUILD)
        assert plugin is not None, f"{name} rejected {attributes}"
        layer = self.network.add_plugin_v3(inputs, [], plugin)
        tensors = [layer.get_output(i) for i in range(len(outputs))]
        for tensor, output_name in zip(tensors, outputs, strict=True):
            tensor.name = output_name
        return tensors

    def mark_outputs(self, tensors: list) -> None:
        for tensor in tensors:
            self.network.mark_output(tensor)

    def run(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        trt = self.trt
        config = self.builder.create_builder_config()
        serialized = self.builder.build_serialized_network(self.network, config)
        assert serialized is not None, "engine build failed"
        engine = trt.Runtime(self.logger).deserialize_cuda_engine(serialized)
        assert engine is not None, "engine deserialization failed"
        context = engine.create_execution_context()
        torch_dtype = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
        results: dict[str, torch.Tensor] = {}
        keep = [feed.contiguous().cuda() for feed in feeds.values()]
        for name, tensor in zip(feeds, keep, strict=True):
            context.set_tensor_address(name, tensor.data_ptr())
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                shape = tuple(context.get_tensor_shape(name))
                results[name] = torch.empty(shape, dtype=torch_dtype[engine.get_tensor_dtype(name)], device="cuda")
                context.set_tensor_address(name, results[name].data_ptr())
        stream = torch.cuda.Stream()
        assert context.execute_async_v3(stream.cuda_stream), "enqueue failed"
        stream.synchronize()
        return {name: tensor.cpu() for name, tensor in results.items()}


@pytest.fixture
def engine(trt, registry, specs) -> Engine:
    return Engine(trt, registry, specs)


def inputs_for(batch: int, num_tokens: int, channels: int, seed: int) -> tuple[torch.Tensor, ...]:
    """metric with repeated rows (exact ties), x with varied norms, integer sizes."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(num_tokens // 3 + 1, 16, generator=generator)
    metric = vectors[torch.randint(vectors.shape[0], (batch, num_tokens), generator=generator)]
    jitter = torch.randn(batch, num_tokens, 16, generator=generator) * (
        torch.rand(batch, num_tokens, 1, generator=generator) > 0.5
    )
    metric = metric + 0.05 * jitter  # half the rows exact copies, half nearly
    x = (
        torch.randn(batch, num_tokens, channels, generator=generator)
        * torch.rand(batch, num_tokens, 1, generator=generator)
        * 3
    )
    size = torch.randint(1, 5, (batch, num_tokens, 1), generator=generator).to(torch.float32)
    return metric, x, size


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(("batch", "num_tokens", "num_prefix", "r", "channels"), SHAPES, ids=SHAPE_IDS)
def test_match_engine_equals_match_scores(engine, dtype, batch, num_tokens, num_prefix, r, channels):
    metric, _, _ = inputs_for(batch, num_tokens, channels, seed=r)
    scores = cosine_scores(metric, num_prefix).to(DTYPES[dtype])
    order, dst_slot = engine.plugin(
        "TofuMatch",
        [engine.input("scores", scores)],
        {"num_tokens": num_tokens, "num_prefix": num_prefix, "r": r},
        ["order", "dst_slot"],
    )
    engine.mark_outputs([order, dst_slot])
    out = engine.run({"scores": scores})
    expected = match_scores(scores.float(), num_tokens, num_prefix, r)  # fp16 -> fp32 is exact: same ranking
    torch.testing.assert_close(out["order"], expected.order.int(), atol=0, rtol=0)
    torch.testing.assert_close(out["dst_slot"], expected.dst_slot.int(), atol=0, rtol=0)


def test_match_engine_on_all_tied_scores(engine):
    batch, num_tokens, num_prefix, r = 2, 197, 1, 98
    scores = torch.full((batch, 98, 98), 0.25)
    order, dst_slot = engine.plugin(
        "TofuMatch",
        [engine.input("scores", scores)],
        {"num_tokens": num_tokens, "num_prefix": num_prefix, "r": r},
        ["order", "dst_slot"],
    )
    engine.mark_outputs([order, dst_slot])
    out = engine.run({"scores": scores})
    expected = match_scores(scores, num_tokens, num_prefix, r)
    torch.testing.assert_close(out["order"], expected.order.int(), atol=0, rtol=0)
    torch.testing.assert_close(out["dst_slot"], expected.dst_slot.int(), atol=0, rtol=0)


@pytest.mark.parametrize("mode", list(MODES), ids=str)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(("batch", "num_tokens", "num_prefix", "r", "channels"), SHAPES, ids=SHAPE_IDS)
def test_merge_engine_equals_fuse_tokens(engine, mode, dtype, batch, num_tokens, num_prefix, r, channels):
    metric, x, size = inputs_for(batch, num_tokens, channels, seed=num_tokens)
    x, size = x.to(DTYPES[dtype]), size.to(DTYPES[dtype])
    match = match_tokens(metric, num_prefix, r)
    order, dst_slot = match.order.int(), match.dst_slot.int()
    x_out, size_out = engine.plugin(
        "TofuMerge",
        [engine.input(n, t) for n, t in (("x", x), ("size", size), ("order", order), ("dst_slot", dst_slot))],
        {"num_tokens": num_tokens, "r": r, "mode": MODES[mode]},
        ["x_out", "size_out"],
    )
    engine.mark_outputs([x_out, size_out])
    out = engine.run({"x": x, "size": size, "order": order, "dst_slot": dst_slot})
    expected_x, expected_size = fuse_tokens(x.float(), size.float(), match, mode)  # fp32 math on the same inputs
    assert out["x_out"].dtype == DTYPES[dtype]
    tolerance = {"atol": ATOL_FP32, "rtol": RTOL_FP32} if dtype == "fp32" else {"atol": TOL_FP16, "rtol": TOL_FP16}
    torch.testing.assert_close(out["x_out"].float(), expected_x, **tolerance)
    torch.testing.assert_close(out["size_out"].float(), expected_size, atol=0, rtol=0)


@pytest.mark.parametrize("mode", list(MODES), ids=str)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_match_then_merge_engine_equals_the_pytorch_step(engine, mode, dtype):
    batch, num_tokens, num_prefix, r, channels = 4, 197, 1, 16, 384
    metric, x, size = inputs_for(batch, num_tokens, channels, seed=7)
    scores = cosine_scores(metric, num_prefix).to(DTYPES[dtype])
    x, size = x.to(DTYPES[dtype]), size.to(DTYPES[dtype])
    order, dst_slot = engine.plugin(
        "TofuMatch",
        [engine.input("scores", scores)],
        {"num_tokens": num_tokens, "num_prefix": num_prefix, "r": r},
        ["order", "dst_slot"],
    )
    x_out, size_out = engine.plugin(
        "TofuMerge",
        [engine.input("x", x), engine.input("size", size), order, dst_slot],
        {"num_tokens": num_tokens, "r": r, "mode": MODES[mode]},
        ["x_out", "size_out"],
    )
    engine.mark_outputs([x_out, size_out])
    out = engine.run({"scores": scores, "x": x, "size": size})
    expected_x, expected_size = fuse_tokens(
        x.float(), size.float(), match_scores(scores.float(), num_tokens, num_prefix, r), mode
    )
    tolerance = {"atol": ATOL_FP32, "rtol": RTOL_FP32} if dtype == "fp32" else {"atol": TOL_FP16, "rtol": TOL_FP16}
    torch.testing.assert_close(out["x_out"].float(), expected_x, **tolerance)
    torch.testing.assert_close(out["size_out"].float(), expected_size, atol=0, rtol=0)


def test_match_engine_equals_the_host_math(engine, host):
    batch, num_tokens, num_prefix, r = 4, 197, 1, 13
    metric, _, _ = inputs_for(batch, num_tokens, 8, seed=3)
    scores = cosine_scores(metric, num_prefix).half()
    order, dst_slot = engine.plugin(
        "TofuMatch",
        [engine.input("scores", scores)],
        {"num_tokens": num_tokens, "num_prefix": num_prefix, "r": r},
        ["order", "dst_slot"],
    )
    engine.mark_outputs([order, dst_slot])
    out = engine.run({"scores": scores})
    host_order, host_dst = host.match(scores.numpy(), num_tokens, num_prefix, r)
    np.testing.assert_array_equal(out["order"].numpy(), host_order)
    np.testing.assert_array_equal(out["dst_slot"].numpy(), host_dst)
