"""Runs every op, mode and float type of libtofu_edge_ort.so on a few shapes, edge cases and errors included,
and exits 0. The sanitizer test runs it in a process with libasan and libubsan preloaded against a
``-DTOFU_SANITIZE=ON`` build: any memory error or undefined behaviour in the library aborts the process with a
report. It checks no results (test_ort_custom_ops.py does), only that everything runs or fails as it should.

    python -m tests.kernels.ort_exercise build/onnxruntime-asan/libtofu_edge_ort.so
"""

from __future__ import annotations

import sys

import numpy as np
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from tests.kernels.ort_graphs import MODE_CODES, chain_model, match_model, match_node, merge_model, merge_node, session
from tofu_edge.arch import split_sizes

ORT_ERRORS = (Fail, InvalidArgument, RuntimeException)
# (num_tokens, num_prefix, r, channels, batch): r at 1 and at its limit, odd/even N, prefixes, C = 1 and 0, batch 0.
SHAPES = [
    (2, 0, 1, 3, 1),
    (17, 1, 8, 8, 2),
    (18, 2, 1, 1, 3),
    (22, 5, 3, 5, 0),
    (197, 1, 13, 64, 2),
    (12, 0, 6, 7, 4),
    (9, 1, 2, 0, 2),
]


def inputs(num_tokens: int, num_prefix: int, channels: int, batch: int, dtype, rng) -> dict[str, np.ndarray]:
    num_a, num_b = split_sizes(num_tokens, num_prefix)
    scores = rng.standard_normal((batch, num_a, num_b)).astype(dtype)
    if batch and num_b > 1:
        scores[0, 0, :] = np.nan  # a row of NaNs ranks last
        scores[0, -1, :] = scores[0, -1, 0]  # an all-tied row
    return {
        "scores": scores,
        "x": rng.standard_normal((batch, num_tokens, channels)).astype(dtype),
        "size": rng.integers(1, 4, (batch, num_tokens, 1)).astype(dtype),
    }


def expect_error(call, *args) -> None:
    """call(*args) must raise onnxruntime's error (and not crash the process)."""
    try:
        call(*args)
    except ORT_ERRORS:
        return
    raise AssertionError(f"{call} accepted invalid input")


def main(library: str) -> int:
    rng = np.random.default_rng(0)
    runs = 0
    for dtype in (np.float32, np.float16):
        for num_tokens, num_prefix, r, channels, batch in SHAPES:
            feed = inputs(num_tokens, num_prefix, channels, batch, dtype, rng)
            for mode in MODE_CODES.values():
                for threads in (1, 2):
                    step = session(library, chain_model(num_tokens, num_prefix, r, mode, dtype), threads, arena=False)
                    step.run(None, feed)
                    runs += 1
            # Out-of-range indices and contradicting shapes: refused before anything is read.
            merge = session(library, merge_model(merge_node(num_tokens, r, MODE_CODES["mlerp"]), dtype), arena=False)
            order = np.tile(np.arange(num_tokens, dtype=np.int32), (max(batch, 1), 1))
            dst_slot = np.zeros((max(batch, 1), r), np.int32)
            x, size = feed["x"][:1], feed["size"][:1]
            if batch:
                for bad_order, bad_dst in ((num_tokens, 0), (-1, 0), (0, num_tokens - r), (0, -7)):
                    order_bad, dst_bad = order[:1].copy(), dst_slot[:1].copy()
                    order_bad[0, -1], dst_bad[0, -1] = bad_order, bad_dst
                    feed_bad = {"x": x, "size": size, "order": order_bad, "dst_slot": dst_bad}
                    expect_error(merge.run, None, feed_bad)
                    runs += 1
            expect_error(merge.run, None, {"x": x, "size": size, "order": order[:, 1:], "dst_slot": dst_slot})
            match = session(library, match_model(match_node(num_tokens, num_prefix, r), dtype), arena=False)
            expect_error(match.run, None, {"scores": feed["scores"][:, :, :-1]})
            runs += 2
    bad_nodes = [match_node(17, 1, 0), match_node(17, 99, 4), match_node(17, 1, 4, plugin_version="0")]
    bad_nodes += [match_node(None, 1, 4), merge_node(17, 4, 7), merge_node(17, 17, 1)]
    for node in bad_nodes:
        model = match_model(node) if node.op_type == "TofuMatch" else merge_model(node)
        expect_error(session, library, model)
        runs += 1
    print(f"ort_exercise: {runs} runs and refusals, all as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
