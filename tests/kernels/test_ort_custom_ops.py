"""libtofu_edge_ort.so, TofuMatch and TofuMerge as onnxruntime CPU custom ops, against tofu_edge's PyTorch ops.

The library is built once per session by the ``ort_build`` fixture (cmake + a C++ compiler + onnxruntime's
headers; no CUDA). Graphs of one node, or of Match feeding Merge, run through
``SessionOptions.register_custom_ops_library``, as the Python loader will run them.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from tests.kernels.ort_build import (
    EXPORTED_FUNCTIONS,
    ORT_DIR,
    REPO,
    OrtBuild,
    build_ort_library,
    cxx_compiler,
    onnxruntime_include_dir,
    sources_sha256,
)
from tests.kernels.ort_graphs import chain_model, match_model, match_node, merge_model, merge_node, session
from tests.kernels.test_host_math import CASE_IDS, CASES
from tests.kernels.test_kernel_build import exported_functions, needed
from tofu_edge.arch import split_sizes
from tofu_edge.config import StepOp
from tofu_edge.export.plugin_spec import MODE_CODES, SPEC_PATH
from tofu_edge.ops import TokenMatch, fuse_tokens, match_tokens
from tofu_edge.ops.match import cosine_scores, match_scores

TOL = 1e-6
FP16_TOL = 2e-3  # output rounding to fp16 (half an ulp is 4.9e-4 relative); sums are fp32
BATCHES = (1, 2, 5)
MODES = list(MODE_CODES)
ORT_ERRORS = (Fail, InvalidArgument, RuntimeException)


@pytest.fixture(scope="module")
def library(ort_build: OrtBuild) -> Path:
    return ort_build.library


def metric(kind: str, batch: int, num_tokens: int, seed: int) -> torch.Tensor:
    """Matching features: random, drawn from 3 vectors (many exact ties, within and across rows) or constant.

    Shapes:
        returns: [batch, num_tokens, 6]
    """
    generator = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(batch, num_tokens, 6, generator=generator)
    if kind == "repeated":
        vectors = torch.randn(3, 6, generator=generator)
        return vectors[torch.randint(3, (batch, num_tokens), generator=generator)]
    return torch.ones(batch, num_tokens, 6)


def tokens(batch: int, num_tokens: int, seed: int, channels: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """x with rows of very different norms (MLERP's maximum matters) and integer sizes, as after earlier steps.

    Shapes:
        returns: [batch, num_tokens, channels], [batch, num_tokens, 1]
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, num_tokens, channels, generator=generator)
    x = x * torch.rand(batch, num_tokens, 1, generator=generator) * 3
    size = torch.randint(1, 5, (batch, num_tokens, 1), generator=generator).to(torch.float32)
    return x, size


def assert_plan_equal(order: np.ndarray, dst_slot: np.ndarray, expected: TokenMatch) -> None:
    assert order.dtype == np.int32 and dst_slot.dtype == np.int32
    np.testing.assert_array_equal(order, expected.order.numpy())
    np.testing.assert_array_equal(dst_slot, expected.dst_slot.numpy())


def assert_tokens_close(x_out: np.ndarray, size_out: np.ndarray, expected: tuple, tolerance: float) -> None:
    expected_x, expected_size = expected
    actual_x = torch.from_numpy(x_out).float()
    torch.testing.assert_close(actual_x, expected_x.float(), atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(torch.from_numpy(size_out).float(), expected_size.float(), atol=0, rtol=0)


# TofuMatch


@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("kind", ["random", "repeated", "constant"])
def test_match_equals_match_scores(library, num_tokens, num_prefix, r, kind):
    step = session(library, match_model(match_node(num_tokens, num_prefix, r)))
    for batch in BATCHES:
        scores = cosine_scores(metric(kind, batch, num_tokens, seed=num_tokens * 7 + r + batch), num_prefix)
        order, dst_slot = step.run(None, {"scores": scores.numpy()})
        # The very tensor match_scores ranks: a bit-exact comparison, ties included.
        assert_plan_equal(order, dst_slot, match_scores(scores, num_tokens, num_prefix, r))


@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), CASES, ids=CASE_IDS)
def test_match_of_all_tied_scores_takes_the_first_tokens_to_the_first_partner(library, num_tokens, num_prefix, r):
    num_a, num_b = split_sizes(num_tokens, num_prefix)
    step = session(library, match_model(match_node(num_tokens, num_prefix, r)))
    for batch in BATCHES:
        scores = np.full((batch, num_a, num_b), 0.5, np.float32)
        order, dst_slot = step.run(None, {"scores": scores})
        assert_plan_equal(order, dst_slot, match_scores(torch.from_numpy(scores), num_tokens, num_prefix, r))
        np.testing.assert_array_equal(dst_slot, np.full((batch, r), num_prefix + num_a - r))


@pytest.mark.parametrize("where", ["cells", "row", "column", "everything"])
def test_nan_scores_never_win_and_a_row_of_nans_ranks_last(library, where):
    num_tokens, num_prefix, r = 17, 1, 5
    scores = cosine_scores(metric("random", 5, num_tokens, seed=3), num_prefix)
    nan = {
        "cells": (slice(None), [0, 3, 5], [1, 2, 7]),
        "row": (slice(None), 2, slice(None)),
        "column": (slice(None), slice(None), 3),
        "everything": (slice(None), slice(None), slice(None)),
    }[where]
    scores[nan] = float("nan")
    order, dst_slot = session(library, match_model(match_node(num_tokens, num_prefix, r))).run(
        None, {"scores": scores.numpy()}
    )
    # The plugins' rule: NaN loses to everything; a row of NaNs keeps column 0 and scores -inf.
    assert_plan_equal(order, dst_slot, match_scores(scores.nan_to_num(nan=-float("inf")), num_tokens, num_prefix, r))
    assert (np.sort(order, axis=1) == np.arange(num_tokens)).all()


@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), CASES, ids=CASE_IDS)
def test_fp16_match_equals_match_scores_of_the_same_values(library, num_tokens, num_prefix, r):
    # fp16 rounding makes many exact ties; the op compares the fp16 values themselves.
    step = session(library, match_model(match_node(num_tokens, num_prefix, r), np.float16))
    for batch in BATCHES:
        scores16 = cosine_scores(metric("repeated", batch, num_tokens, seed=r) + 0.3, num_prefix).half()
        order, dst_slot = step.run(None, {"scores": scores16.numpy()})
        assert_plan_equal(order, dst_slot, match_scores(scores16.float(), num_tokens, num_prefix, r))


# TofuMerge


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), CASES, ids=CASE_IDS)
def test_merge_equals_fuse_tokens(library, num_tokens, num_prefix, r, mode):
    step = session(library, merge_model(merge_node(num_tokens, r, MODE_CODES[mode])))
    for batch in BATCHES:
        x, size = tokens(batch, num_tokens, seed=r + batch)
        # Repeated features: several sources share a destination.
        match = match_tokens(metric("repeated", batch, num_tokens, seed=num_tokens + r), num_prefix, r)
        order, dst_slot = match.order.int().numpy(), match.dst_slot.int().numpy()
        x_out, size_out = step.run(None, {"x": x.numpy(), "size": size.numpy(), "order": order, "dst_slot": dst_slot})
        assert_tokens_close(x_out, size_out, fuse_tokens(x, size, match, mode), TOL)


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), CASES, ids=CASE_IDS)
def test_match_then_merge_equals_match_scores_then_fuse_tokens(library, num_tokens, num_prefix, r, mode):
    step = session(library, chain_model(num_tokens, num_prefix, r, MODE_CODES[mode]))
    for batch in BATCHES:
        scores = cosine_scores(metric("random", batch, num_tokens, seed=11 + batch), num_prefix)
        x, size = tokens(batch, num_tokens, seed=12 + batch)
        order, dst_slot, x_out, size_out = step.run(
            None, {"scores": scores.numpy(), "x": x.numpy(), "size": size.numpy()}
        )
        expected = match_scores(scores, num_tokens, num_prefix, r)
        assert_plan_equal(order, dst_slot, expected)
        assert_tokens_close(x_out, size_out, fuse_tokens(x, size, expected, mode), TOL)


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), [(17, 1, 8), (22, 5, 3), (12, 0, 6), (18, 2, 1)])
def test_fp16_step_matches_fp32_math_within_fp16_rounding(library, num_tokens, num_prefix, r, mode):
    step = session(library, chain_model(num_tokens, num_prefix, r, MODE_CODES[mode], np.float16))
    for batch in BATCHES:
        scores16 = cosine_scores(metric("repeated", batch, num_tokens, seed=r), num_prefix).half()
        x, size = tokens(batch, num_tokens, seed=num_tokens + batch)
        x16, size16 = x.half(), size.half()
        outputs = step.run(None, {"scores": scores16.numpy(), "x": x16.numpy(), "size": size16.numpy()})
        order, dst_slot, x_out, size_out = outputs
        assert x_out.dtype == size_out.dtype == np.float16
        expected = match_scores(scores16.float(), num_tokens, num_prefix, r)
        assert_plan_equal(order, dst_slot, expected)
        # fp32 math on the fp16 inputs, then one rounding to fp16.
        assert_tokens_close(x_out, size_out, fuse_tokens(x16.float(), size16.float(), expected, mode), FP16_TOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_deit_small_first_step(library, mode, dtype):
    # DeiT-S: N = 197 with the class token, C = 384, r = 13.
    num_tokens, num_prefix, r, batch = 197, 1, 13, 2
    scores = cosine_scores(metric("random", batch, num_tokens, seed=1), num_prefix)
    x, size = tokens(batch, num_tokens, seed=2, channels=384)
    if dtype == np.float16:
        scores, x, size = scores.half(), x.half(), size.half()
    step = session(library, chain_model(num_tokens, num_prefix, r, MODE_CODES[mode], dtype))
    order, dst_slot, x_out, size_out = step.run(None, {"scores": scores.numpy(), "x": x.numpy(), "size": size.numpy()})
    expected = match_scores(scores.float(), num_tokens, num_prefix, r)
    assert_plan_equal(order, dst_slot, expected)
    tolerance = TOL if dtype == np.float32 else FP16_TOL
    assert_tokens_close(x_out, size_out, fuse_tokens(x.float(), size.float(), expected, mode), tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_merge_copies_every_group_of_one_bit_for_bit(library, mode, dtype):
    num_tokens, num_prefix, r, batch = 22, 2, 6, 2
    x, size = tokens(batch, num_tokens, seed=5)
    x, size = x.numpy().astype(dtype), size.numpy().astype(dtype)
    match = match_tokens(metric("random", batch, num_tokens, seed=5), num_prefix, r)
    order, dst_slot = match.order.int().numpy(), match.dst_slot.int().numpy()
    step = session(library, merge_model(merge_node(num_tokens, r, MODE_CODES[mode]), dtype))
    x_out, size_out = step.run(None, {"x": x, "size": size, "order": order, "dst_slot": dst_slot})
    copied = 0
    for b in range(batch):
        for slot in range(num_tokens - r):
            if mode is StepOp.PRUNE or slot not in dst_slot[b]:
                assert x_out[b, slot].tobytes() == x[b, order[b, slot]].tobytes()
                assert size_out[b, slot, 0].tobytes() == size[b, order[b, slot], 0].tobytes()
                copied += 1
    assert copied > (num_tokens - r) * batch // 2


def test_mlerp_of_opposite_tokens_clamps_the_zero_average(library):
    # Two tokens that cancel: the average is 0, its norm is clamped to eps, the result stays finite (0).
    x = np.array([[[1.0, 2.0], [-1.0, -2.0]]], np.float32)
    size = np.ones((1, 2, 1), np.float32)
    order, dst_slot = np.array([[1, 0]], np.int32), np.array([[0]], np.int32)
    step = session(library, merge_model(merge_node(2, 1, MODE_CODES[StepOp.MLERP])))
    x_out, size_out = step.run(None, {"x": x, "size": size, "order": order, "dst_slot": dst_slot})
    match = TokenMatch.from_order(torch.from_numpy(order).long(), torch.from_numpy(dst_slot).long(), 1, num_dst=1)
    expected_x, _ = fuse_tokens(torch.from_numpy(x), torch.from_numpy(size), match, StepOp.MLERP)
    np.testing.assert_array_equal(x_out, expected_x.numpy())
    np.testing.assert_array_equal(size_out, [[[2.0]]])


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_two_intra_op_threads_give_the_bits_of_one(library, dtype):
    num_tokens, num_prefix, r, batch = 197, 1, 13, 8
    model = chain_model(num_tokens, num_prefix, r, MODE_CODES[StepOp.MLERP], dtype)
    scores = cosine_scores(metric("repeated", batch, num_tokens, seed=4), num_prefix).numpy().astype(dtype)
    x, size = tokens(batch, num_tokens, seed=4, channels=64)
    feed = {"scores": scores, "x": x.numpy().astype(dtype), "size": size.numpy().astype(dtype)}
    one = session(library, model, threads=1).run(None, feed)
    two = session(library, model, threads=2).run(None, feed)
    for a, b in zip(one, two, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_an_empty_batch_gives_empty_outputs(library):
    num_tokens, num_prefix, r = 17, 1, 5
    num_a, num_b = split_sizes(num_tokens, num_prefix)
    step = session(library, chain_model(num_tokens, num_prefix, r, MODE_CODES[StepOp.MEAN]))
    feed = {"scores": np.zeros((0, num_a, num_b), np.float32), "x": np.zeros((0, num_tokens, 4), np.float32)}
    outputs = step.run(None, {**feed, "size": np.zeros((0, num_tokens, 1), np.float32)})
    assert [o.shape for o in outputs] == [(0, num_tokens), (0, r), (0, num_tokens - r, 4), (0, num_tokens - r, 1)]


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_tokens_without_channels_still_merge_their_sizes(library, mode):
    num_tokens, num_prefix, r, batch = 17, 1, 5, 2
    x, size = torch.zeros(batch, num_tokens, 0), tokens(batch, num_tokens, seed=8)[1]
    match = match_tokens(metric("repeated", batch, num_tokens, seed=8), num_prefix, r)
    feed = {"x": x.numpy(), "size": size.numpy(), "order": match.order.int().numpy()}
    step = session(library, merge_model(merge_node(num_tokens, r, MODE_CODES[mode])))
    x_out, size_out = step.run(None, {**feed, "dst_slot": match.dst_slot.int().numpy()})
    assert x_out.shape == (batch, num_tokens - r, 0)
    np.testing.assert_array_equal(size_out, fuse_tokens(x, size, match, mode)[1].numpy())


# Errors: onnxruntime exceptions that say what is wrong, never a crash.


@pytest.mark.parametrize(
    ("node", "problem"),
    [
        pytest.param(
            match_node(17, 1, 9),
            r"\(num_prefix = 1, num_tokens = 17, r = 9\): r must be in \[1, \|A\|\]",
            id="match-r-above-A",
        ),
        pytest.param(match_node(17, 1, 0), r"r = 0\): r must be in \[1, \|A\|\]", id="match-r-0"),
        pytest.param(
            match_node(17, 16, 1), r"num_prefix = 16, .*: num_prefix must be in \[0, num_tokens - 2\]", id="prefix"
        ),
        pytest.param(match_node(8193, 1, 1), r"num_tokens = 8193, .*: num_tokens must be in \[2, 8192\]", id="match-n"),
        pytest.param(match_node(17, 1, None), r"r = \?\): attribute 'r' is missing or not an INT", id="r-missing"),
        pytest.param(match_node(17, 1, 2.0), r"attribute 'r' is missing or not an INT", id="r-float"),
        pytest.param(match_node(17, 1, 1 << 40), r"r = 1099511627776\): r does not fit in int32", id="r-int64"),
        pytest.param(
            match_node(17, 1, 4, plugin_version="2"),
            r"plugin_version is '2', but this library implements '1'",
            id="version",
        ),
        pytest.param(
            match_node(17, 1, 4, plugin_namespace="x"),
            r"plugin_namespace is 'x', but this library implements 'tofu_edge'",
            id="namespace",
        ),
        pytest.param(
            match_node(17, 1, 4, plugin_version=None),
            r"attribute 'plugin_version' is missing or not a STRING",
            id="version-missing",
        ),
        pytest.param(
            merge_node(17, 5, 3), r"\(mode = 3, num_tokens = 17, r = 5\): mode must be one of the modes", id="mode"
        ),
        pytest.param(merge_node(17, 17, 1), r"r = 17\): r must be in \[1, num_tokens - 1\]", id="merge-r"),
        pytest.param(merge_node(1, 1, 1), r"num_tokens = 1, .*: num_tokens must be at least 2", id="merge-n"),
        pytest.param(
            merge_node(17, 5, None), r"mode = \?, .*: attribute 'mode' is missing or not an INT", id="mode-missing"
        ),
        pytest.param(
            merge_node(17, 5, 1, plugin_namespace=None),
            r"attribute 'plugin_namespace' is missing or not a STRING",
            id="namespace-missing",
        ),
    ],
)
def test_invalid_attributes_fail_the_session_with_the_reason(library, node, problem):
    model = match_model(node) if node.op_type == "TofuMatch" else merge_model(node)
    with pytest.raises(ORT_ERRORS, match=f"{node.op_type} node '{node.name}' .*{problem}"):
        session(library, model)


def test_mixed_float_types_find_no_kernel(library):
    with pytest.raises(ORT_ERRORS, match="TofuMerge"):
        session(library, merge_model(merge_node(17, 5, 1), np.float32, size_dtype=np.float16))


def merge_feed(batch: int = 2, num_tokens: int = 17, r: int = 5, channels: int = 4) -> dict[str, np.ndarray]:
    order = np.tile(np.arange(num_tokens, dtype=np.int32), (batch, 1))
    return {
        "x": np.ones((batch, num_tokens, channels), np.float32),
        "size": np.ones((batch, num_tokens, 1), np.float32),
        "order": order,
        "dst_slot": np.full((batch, r), num_tokens - r - 1, np.int32),
    }


@pytest.mark.parametrize(
    ("name", "shape", "problem"),
    [
        ("x", (2, 18, 4), r"input x has shape \[2, 18, 4\], expected \[B, num_tokens, C\] = \[\*, 17, \*\]"),
        ("size", (2, 17, 2), r"input size has shape \[2, 17, 2\], expected \[B, num_tokens, 1\] = \[2, 17, 1\]"),
        ("size", (3, 17, 1), r"input size has shape \[3, 17, 1\]"),
        ("order", (2, 16), r"input order has shape \[2, 16\], expected \[B, num_tokens\] = \[2, 17\]"),
        ("dst_slot", (2, 4), r"input dst_slot has shape \[2, 4\], expected \[B, r\] = \[2, 5\]"),
        ("dst_slot", (1, 5), r"input dst_slot has shape \[1, 5\]"),
        ("x", (2, 17), r"input x has shape \[2, 17\], expected \[B, num_tokens, C\]"),
        ("order", (2, 17, 1), r"input order has shape \[2, 17, 1\], expected \[B, num_tokens\]"),
    ],
)
def test_merge_inputs_contradicting_the_attributes_fail_the_run(library, name, shape, problem):
    feed = merge_feed()
    feed[name] = np.zeros(shape, feed[name].dtype)
    step = session(library, merge_model(merge_node(17, 5, 2), ranked=False))  # the op checks the ranks too
    with pytest.raises(ORT_ERRORS, match=r"TofuMerge node 'merge_0' \(mode = 2, num_tokens = 17, r = 5\): " + problem):
        step.run(None, feed)


@pytest.mark.parametrize(
    ("name", "at", "value", "problem"),
    [
        ("order", (1, 3), 17, r"order\[1, 3\] = 17 is outside \[0, 17\)"),
        ("order", (0, 0), -1, r"order\[0, 0\] = -1 is outside \[0, 17\)"),
        ("dst_slot", (1, 4), 12, r"dst_slot\[1, 4\] = 12 is outside \[0, 12\)"),
        ("dst_slot", (0, 2), -3, r"dst_slot\[0, 2\] = -3 is outside \[0, 12\)"),
    ],
)
def test_merge_indices_out_of_range_fail_the_run(library, name, at, value, problem):
    feed = merge_feed()
    feed[name][at] = value
    step = session(library, merge_model(merge_node(17, 5, 1)))
    with pytest.raises(ORT_ERRORS, match=r"TofuMerge node 'merge_0' \(mode = 1, num_tokens = 17, r = 5\): " + problem):
        step.run(None, feed)
    feed[name][at] = 0
    step.run(None, feed)  # the session is still usable


@pytest.mark.parametrize("shape", [(2, 9, 8), (2, 8, 7), (2, 8, 8, 1), (8, 8)])
def test_match_scores_contradicting_the_attributes_fail_the_run(library, shape):
    step = session(library, match_model(match_node(17, 1, 5), ranked=False))  # the op checks the rank too
    expected = rf"input scores has shape {re.escape(str(list(shape)))}, expected \[B, \|A\|, \|B\|\] = \[\*, 8, 8\]"
    with pytest.raises(
        ORT_ERRORS, match=r"TofuMatch node 'match_0' \(num_prefix = 1, num_tokens = 17, r = 5\): " + expected
    ):
        step.run(None, {"scores": np.zeros(shape, np.float32)})


# The library itself.


def test_exports_exactly_the_five_c_functions(ort_build):
    assert shutil.which("nm"), "binutils' nm is needed"
    assert exported_functions(ort_build.library) == EXPORTED_FUNCTIONS


def test_needs_no_onnxruntime_cuda_or_tensorrt_library(ort_build):
    libraries = needed(ort_build.library)
    assert libraries, "no NEEDED entries read"
    unwanted = ("libonnxruntime", "libcuda.", "libcudart", "libnvinfer")
    assert not [name for name in libraries if name.startswith(unwanted)], libraries


@pytest.fixture(scope="module")
def exports(library: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library))
    for name in ("tofu_ort_contract_sha256", "tofu_ort_sources", "tofu_ort_sources_sha256"):
        getattr(lib, name).restype = ctypes.c_char_p
    lib.tofu_ort_api_version.restype = ctypes.c_int
    return lib


def test_contract_hash_is_that_of_plugin_specs_json(exports):
    assert exports.tofu_ort_contract_sha256().decode() == hashlib.sha256(SPEC_PATH.read_bytes()).hexdigest()


def test_sources_hash_is_that_of_the_checkout(exports):
    paths = exports.tofu_ort_sources().decode().split(";")
    assert exports.tofu_ort_sources_sha256().decode() == sources_sha256(paths)


def test_sources_cover_every_file_the_library_is_built_from(exports):
    paths = exports.tofu_ort_sources().decode().split(";")
    assert len(paths) == len(set(paths))
    own = {f"kernels/onnxruntime/{p.name}" for p in ORT_DIR.iterdir() if p.suffix in (".cpp", ".h", ".map")}
    assert own | {"kernels/onnxruntime/CMakeLists.txt"} <= set(paths)
    # Every header a listed file includes with quotes is listed too, but the two generated at configure time.
    generated = {"tofuPluginSpecs.h", "tofuOrtBuildInfo.h"}
    listed_names = {Path(p).name for p in paths}
    for path in paths:
        for header in re.findall(r'^#include "([^"]+)"', (REPO / path).read_text(), flags=re.MULTILINE):
            assert header in listed_names | generated, f"{path} includes {header}, not in tofu_ort_sources()"


def test_api_version_is_that_of_the_headers(exports):
    header = (onnxruntime_include_dir() / "onnxruntime_c_api.h").read_text()
    assert exports.tofu_ort_api_version() == int(re.search(r"#define ORT_API_VERSION (\d+)", header).group(1))


_GET_API = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)
_GET_VERSION = ctypes.CFUNCTYPE(ctypes.c_void_p)
_CREATE_STATUS = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)


class _ApiBase(ctypes.Structure):
    _fields_ = [("GetApi", _GET_API), ("GetVersionString", _GET_VERSION)]


class _OldApi(ctypes.Structure):
    _fields_ = [("CreateStatus", _CREATE_STATUS)]  # the first member of every OrtApi


def test_an_onnxruntime_older_than_the_headers_is_refused_with_a_status(exports):
    # A fake onnxruntime 1.16: its OrtApiBase answers API versions up to 16 only.
    asked, created = [], []
    version = ctypes.create_string_buffer(b"1.16.3")
    status = ctypes.c_void_p(0x5A5A)

    def get_api(requested: int) -> int | None:
        asked.append(requested)
        return ctypes.addressof(old_api) if requested <= 16 else None

    def create_status(code: int, message: bytes) -> int:
        created.append((code, message.decode()))
        return status.value

    callbacks = (_GET_API(get_api), _GET_VERSION(lambda: ctypes.addressof(version)), _CREATE_STATUS(create_status))
    base, old_api = _ApiBase(callbacks[0], callbacks[1]), _OldApi(callbacks[2])
    exports.RegisterCustomOps.restype = ctypes.c_void_p
    exports.RegisterCustomOps.argtypes = [ctypes.c_void_p, ctypes.POINTER(_ApiBase)]
    options = ctypes.c_void_p(0x10)  # never dereferenced on this path
    assert exports.RegisterCustomOps(options, ctypes.byref(base)) == status.value
    api_version = exports.tofu_ort_api_version()
    assert asked[0] == api_version and 16 in asked
    [(code, message)] = created
    assert code != 0  # not ORT_OK
    assert f"onnxruntime 1.16.3 is older than 1.{api_version}" in message


def copy_of_the_sources(root: Path) -> Path:
    """What kernels/onnxruntime is built from, copied under ``root`` as in the repository; returns ``root``."""
    for folder in ("kernels/onnxruntime", "kernels/common", "kernels/cmake"):
        shutil.copytree(REPO / folder, root / folder)
    for file in ("kernels/tofuMatchPlugin/tofuMatchMath.h", "kernels/tofuMergePlugin/tofuMergeMath.h"):
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / file, root / file)
    (root / "tofu_edge/export").mkdir(parents=True)
    shutil.copy2(SPEC_PATH, root / "tofu_edge/export/plugin_specs.json")
    return root


@pytest.fixture()
def cmake_and_compiler() -> None:
    if shutil.which("cmake") is None or cxx_compiler() is None:
        pytest.skip("needs cmake and a C++ compiler")


def test_configure_without_headers_names_the_fetch_script(tmp_path, cmake_and_compiler):
    copy = copy_of_the_sources(tmp_path / "repo")  # no build/onnxruntime-headers there
    command = ["cmake", "-S", str(copy / "kernels/onnxruntime"), "-B", str(tmp_path / "build")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())  # CMake wraps its messages
    assert "run `kernels/onnxruntime/fetch_onnxruntime_headers.sh build/onnxruntime-headers`" in message
    assert str(copy / "build/onnxruntime-headers/include") in message


def test_build_needs_no_cuda(ort_build):
    cache = (ort_build.build_dir / "CMakeCache.txt").read_text()
    assert "CMAKE_CUDA_COMPILER" not in cache and "CUDAToolkit" not in cache
    commands = (ort_build.build_dir / "compile_commands.json").read_text()
    assert "-DTOFU_NO_CUDA" in commands and "cuda" not in commands.replace("TOFU_NO_CUDA", "").lower()


def test_configure_rehashes_a_changed_source(tmp_path, cmake_and_compiler):
    """The hashes are computed at configure time; a build after an edit must re-run configure (the sources are
    CMAKE_CONFIGURE_DEPENDS) or the library would report the old ones. Checked on a copy of the tree."""
    if onnxruntime_include_dir() is None:
        pytest.skip("needs the onnxruntime headers")
    copy = copy_of_the_sources(tmp_path / "repo")
    build = tmp_path / "build"
    headers = f"-DONNXRUNTIME_INCLUDE_DIR={onnxruntime_include_dir()}"
    subprocess.run(
        ["cmake", "-S", str(copy / "kernels/onnxruntime"), "-B", str(build), headers], check=True, capture_output=True
    )
    info = build / "generated" / "tofuOrtBuildInfo.h"

    def recorded(name: str) -> str:
        return re.search(rf'\bk{name} = "([^"]+)"', info.read_text()).group(1)

    paths = recorded("SOURCES").split(";")
    before = recorded("SOURCES_SHA256")
    assert before == sources_sha256(paths, root=copy)
    with (copy / "kernels/common/tofuHalf.h").open("a") as header:
        header.write("// edited\n")
    with (copy / "tofu_edge/export/plugin_specs.json").open("a") as spec:
        spec.write("\n")
    # The build system's own check (what any `cmake --build` runs first) re-runs configure; nothing compiles.
    subprocess.run(
        ["cmake", "--build", str(build), "--target", "cmake_check_build_system"], check=True, capture_output=True
    )
    assert recorded("SOURCES_SHA256") == sources_sha256(paths, root=copy) != before
    specs = copy / "tofu_edge/export/plugin_specs.json"
    assert recorded("CONTRACT_SHA256") == hashlib.sha256(specs.read_bytes()).hexdigest()


# Sanitizers: the library built with ASan + UBSan, run by a Python that is not (the runtimes preloaded).


def sanitizer_runtimes(compiler: str) -> list[str] | None:
    """libasan and libubsan of ``compiler``, or None when it does not name them (clang's are elsewhere)."""
    paths = []
    for name in ("libasan.so", "libubsan.so"):
        found = subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        if not Path(found).is_absolute() or not Path(found).exists():
            return None
        paths.append(found)
    return paths


def test_every_op_runs_clean_under_address_and_undefined_behaviour_sanitizers(ort_build, tmp_path_factory):
    compiler = cxx_compiler()
    runtimes = sanitizer_runtimes(compiler) if compiler else None
    if runtimes is None:
        pytest.skip(f"{compiler} does not name its libasan/libubsan (-print-file-name)")
    build = build_ort_library(tmp_path_factory.mktemp("ort-asan"), sanitize=True)
    env = {"LD_PRELOAD": ":".join(runtimes), "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    command = [sys.executable, "-m", "tests.kernels.ort_exercise", str(build.library)]
    inherited = {k: v for k, v in os.environ.items() if k not in env}
    result = subprocess.run(command, cwd=REPO, env={**inherited, **env}, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "ort_exercise: " in result.stdout and "all as expected" in result.stdout
    assert "Sanitizer" not in output and "runtime error:" not in output, output[-6000:]
