"""Fixtures of tests/engine: tiny exported ONNX files and a stand-in for the TensorRT module."""

from __future__ import annotations

import sys

import pytest

import tofu_edge
from tests.conftest import tiny_model
from tests.engine.stub_tensorrt import make_stub_tensorrt

FUSION = tofu_edge.FusionConfig(r=2)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """A tiny fused ViT exported with a static batch of 1: ``images`` [1, 3, 32, 32] -> ``logits``."""
    path = tmp_path_factory.mktemp("onnx") / "vit_static.onnx"
    return tofu_edge.export_onnx(tiny_model("vit"), path, FUSION).onnx_path


@pytest.fixture(scope="session")
def tiny_onnx_dynamic(tmp_path_factory):
    """The same model with a dynamic batch axis."""
    path = tmp_path_factory.mktemp("onnx") / "vit_dynamic.onnx"
    return tofu_edge.export_onnx(tiny_model("vit"), path, FUSION, dynamic_batch=True, batch=2).onnx_path


@pytest.fixture(scope="session")
def tiny_onnx_plugin(tmp_path_factory):
    """The same model, plugin flavour: every fusion step a ``TofuMatch`` and a ``TofuMerge`` node."""
    path = tmp_path_factory.mktemp("onnx") / "vit_plugin.onnx"
    return tofu_edge.export_onnx(tiny_model("vit"), path, FUSION, flavor="plugin").onnx_path


@pytest.fixture
def stub_trt(monkeypatch):
    """Install the stand-in as ``tensorrt`` for one test; returns it (``.calls`` records each build)."""
    module = make_stub_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make ``import tensorrt`` fail even where TensorRT is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
