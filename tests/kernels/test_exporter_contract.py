"""The plugin-flavour exporter emits exactly what the compiled C++ creators declare."""

from __future__ import annotations

import onnx

from tests.conftest import tiny_model
from tofu_edge import FusionConfig, export_onnx


def test_exported_plugin_nodes_match_the_compiled_creators(host, tmp_path):
    report = export_onnx(
        tiny_model("vit"), tmp_path / "m.onnx", FusionConfig(r=2, mode="tofu", switch=2), flavor="plugin"
    )
    creators = {c["name"]: c for c in host.creators()}
    nodes = [n for n in onnx.load(report.onnx_path).graph.node if n.domain == "ai.onnx.contrib"]
    assert {n.op_type for n in nodes} == set(creators)
    for node in nodes:
        creator = creators[node.op_type]
        attributes = {a.name: a for a in node.attribute}
        assert attributes.pop("plugin_version").s.decode() == creator["version"]
        assert attributes.pop("plugin_namespace").s.decode() == creator["namespace"]
        assert sorted(attributes) == sorted(f["name"] for f in creator["fields"])
        assert all(a.type == onnx.AttributeProto.INT for a in attributes.values())  # INT arrives as int32
