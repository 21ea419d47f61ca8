"""The plugin contract, read from ``plugin_specs.json``: one file for the Python exporter, the engine builder and
the C++ plugins (``kernels/`` generates its header from it). Needs nothing but the standard library."""

from __future__ import annotations

import json
from pathlib import Path

from tofu_edge.config import StepOp

__all__ = ["SPEC_PATH", "PLUGIN_SPECS", "MODE_CODES", "plugin_attributes", "plugin_op_types"]

SPEC_PATH = Path(__file__).with_name("plugin_specs.json")
PLUGIN_SPECS: dict = json.loads(SPEC_PATH.read_text())
MODE_CODES: dict[StepOp, int] = {
    StepOp(name): code for name, code in PLUGIN_SPECS["plugins"]["TofuMerge"]["modes"].items()
}


def plugin_attributes(name: str) -> dict[str, str]:
    """The string attributes every node of plugin ``name`` carries: its version and namespace."""
    return {"plugin_version": PLUGIN_SPECS["plugins"][name]["version"], "plugin_namespace": PLUGIN_SPECS["namespace"]}


def plugin_op_types() -> set[str]:
    """The ``op_type`` of every tofu-edge plugin node (``TofuMatch``, ``TofuMerge``)."""
    return set(PLUGIN_SPECS["plugins"])
