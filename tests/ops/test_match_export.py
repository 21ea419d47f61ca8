"""The exported match picks the same sources as eager PyTorch and the loop reference, ties included.

Eager PyTorch ranks with a stable sort; the exported graph counts each token's rank by comparisons and orders the
tokens with one TopK over distinct keys (ONNX has no stable sort). These tests hold onnxruntime to the same result on
scores that tie everywhere, in part, and nowhere.
"""

import onnxruntime as ort
import pytest
import torch

from tofu_edge.ops import match_tokens
from tofu_edge.ops.reference import reference_match, reference_scores


class MatchPlan(torch.nn.Module):
    """The index plan of one step as two tensors (the plugin contract's form)."""

    def __init__(self, num_prefix: int, r: int):
        super().__init__()
        self.num_prefix, self.r = num_prefix, r

    def forward(self, metric: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        match = match_tokens(metric, self.num_prefix, self.r)
        return match.order, match.dst_slot


def onnxruntime_plan(metric: torch.Tensor, num_prefix: int, r: int):
    program = torch.onnx.export(MatchPlan(num_prefix, r), (metric,), dynamo=True, opset_version=18, verbose=False)
    assert "TopK" in {node.op_type for node in program.model_proto.graph.node}
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    order, dst_slot = session.run(None, {session.get_inputs()[0].name: metric.numpy()})
    return order.tolist(), dst_slot.tolist()


def tied_metrics(num_tokens: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    partly = torch.randn(2, num_tokens, 8, generator=generator)
    partly[:, 4::3] = partly[:, 2:3]  # a third of the tokens are copies of one token: their best scores tie
    return {
        "all tied": torch.ones(2, num_tokens, 8),
        "partly tied": partly,
        "no ties": torch.randn(2, num_tokens, 8, generator=generator),
    }


@pytest.mark.parametrize("case", ["all tied", "partly tied", "no ties"])
@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), [(25, 1, 6), (26, 2, 11)])
def test_exported_match_equals_eager_and_reference(case, num_tokens, num_prefix, r):
    metric = tied_metrics(num_tokens)[case]
    eager = match_tokens(metric, num_prefix, r)
    got_order, got_slot = onnxruntime_plan(metric, num_prefix, r)
    assert got_order == eager.order.tolist() and got_slot == eager.dst_slot.tolist()
    for image in range(metric.shape[0]):
        want = reference_match(reference_scores(metric[image], num_prefix), num_tokens, num_prefix, r)
        assert (got_order[image], got_slot[image]) == want
