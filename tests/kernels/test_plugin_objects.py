"""The plugin objects of libtofu_edge_plugins.so, driven without a GPU or TensorRT (creators, attributes, shapes,
formats, types, serialization), against tofu_edge/export/plugin_specs.json."""

from __future__ import annotations

import itertools

import pytest

from tests.kernels.conftest import (
    DT_BOOL,
    DT_FLOAT,
    DT_HALF,
    DT_INT8,
    DT_INT32,
    FIELD_CHAR,
    FIELD_FLOAT32,
    FIELD_INT16,
    FIELD_INT32,
    FIELD_INT64,
    FORMAT_CHW2,
    FORMAT_HWC8,
    FORMAT_LINEAR,
    PHASE_RUNTIME,
    SEVERITY_ERROR,
)
from tofu_edge.arch import max_reduction, split_sizes

MATCH, MERGE = "TofuMatch", "TofuMerge"
N, P, R, C, BATCH = 17, 1, 4, 48, 2
NUM_A, NUM_B = split_sizes(N, P)
MATCH_ATTRS = {"num_tokens": N, "num_prefix": P, "r": R}
MERGE_ATTRS = {"num_tokens": N, "r": R, "mode": 2}
ATTRS = {MATCH: MATCH_ATTRS, MERGE: MERGE_ATTRS}
NB_INPUTS = {MATCH: 1, MERGE: 4}
CREATOR_INTERFACE = {"kind": "PLUGIN CREATOR_V3ONE", "major": 1, "minor": 0}
TYPES = [DT_FLOAT, DT_HALF, DT_INT32]


def errors(host) -> list[str]:
    return [entry["message"] for entry in host.take_log() if entry["severity"] <= SEVERITY_ERROR]


def merge_dims(batch=BATCH, tokens=N, channels=C, r=R) -> list[list[int]]:
    return [[batch, tokens, channels], [batch, tokens, 1], [batch, tokens], [batch, r]]


@pytest.fixture(autouse=True)
def clear_log(host):
    host.take_log()


# Creators and the contract.


def test_creators_are_the_plugins_of_the_specs(host, specs):
    assert [creator["name"] for creator in host.creators()] == list(specs["plugins"])


@pytest.mark.parametrize("plugin", [MATCH, MERGE])
def test_creator_declares_name_version_namespace_and_fields_of_the_specs(host, specs, plugin):
    creator = next(c for c in host.creators() if c["name"] == plugin)
    assert creator["interface"] == CREATOR_INTERFACE
    assert creator["version"] == specs["plugins"][plugin]["version"]
    assert creator["namespace"] == specs["namespace"]
    # CMake's JSON reader sorts object keys, so the fields come in name order; TensorRT matches them by name.
    assert [field["name"] for field in creator["fields"]] == sorted(specs["plugins"][plugin]["attributes"])
    assert {(field["type"], field["length"]) for field in creator["fields"]} == {(FIELD_INT32, 1)}


@pytest.mark.parametrize("plugin", [MATCH, MERGE])
def test_plugin_reports_the_v3_interfaces_and_the_creator_strings(host, specs, plugin):
    made = host.create(plugin, ATTRS[plugin])
    assert made["created"]
    assert made["interface"] == {"kind": "PLUGIN", "major": 1, "minor": 0}
    assert {name: info["kind"] for name, info in made["capabilities"].items()} == {
        "core": "PLUGIN_V3ONE_CORE",
        "build": "PLUGIN_V3ONE_BUILD",
        "runtime": "PLUGIN_V3ONE_RUNTIME",
    }
    assert made["core"] == {
        "name": plugin,
        "version": specs["plugins"][plugin]["version"],
        "namespace": specs["namespace"],
    }
    assert made["nb_outputs"] == len(specs["plugins"][plugin]["outputs"])
    assert made["workspace"] == 0


def test_merge_modes_of_the_specs_are_accepted_and_no_others(host, specs):
    modes = specs["plugins"][MERGE]["modes"]
    for mode in range(-2, 6):
        made = host.create(MERGE, {**MERGE_ATTRS, "mode": mode})
        assert made["created"] == (mode in modes.values()), mode


# Serialization.


@pytest.mark.parametrize("plugin", [MATCH, MERGE])
@pytest.mark.parametrize("phase", ["build", "runtime"])
def test_serialized_fields_round_trip(host, plugin, phase):
    attributes = ATTRS[plugin]
    made = host.create(plugin, attributes, phase=PHASE_RUNTIME if phase == "runtime" else 0)
    assert {field["name"]: field["value"] for field in made["fields"]} == attributes
    assert {(field["type"], field["length"]) for field in made["fields"]} == {(FIELD_INT32, 1)}
    assert made["roundtrip"] == made["fields"]  # createPlugin(getFieldsToSerialize()) serializes the same
    assert made["clone"] == made["fields"]
    assert made["attached"] == made["fields"]
    assert made["clone_core"] == made["core"]


# Attribute parsing.


@pytest.mark.parametrize("plugin", [MATCH, MERGE])
def test_unknown_fields_are_ignored(host, plugin):
    extra = {"plugin_version": (1, FIELD_CHAR), "plugin_namespace": (0, FIELD_CHAR), "alpha": (3, FIELD_FLOAT32)}
    made = host.create(plugin, {**extra, **ATTRS[plugin]})
    assert made["created"]
    assert {field["name"]: field["value"] for field in made["fields"]} == ATTRS[plugin]
    assert errors(host) == []


@pytest.mark.parametrize("plugin", [MATCH, MERGE])
@pytest.mark.parametrize("field_type", [FIELD_INT64, FIELD_INT16])
def test_other_integer_field_types_are_read(host, plugin, field_type):
    made = host.create(plugin, {name: (value, field_type) for name, value in ATTRS[plugin].items()})
    assert made["created"]
    assert {field["name"]: field["value"] for field in made["fields"]} == ATTRS[plugin]


@pytest.mark.parametrize(("plugin", "missing"), [(p, a) for p in (MATCH, MERGE) for a in ATTRS[p]])
def test_a_missing_attribute_gives_no_plugin_and_an_error(host, plugin, missing):
    made = host.create(plugin, {name: v for name, v in ATTRS[plugin].items() if name != missing})
    assert not made["created"]
    assert any(f"'{missing}' is missing" in message for message in errors(host))


@pytest.mark.parametrize(
    ("plugin", "name", "value", "reason"),
    [
        (MATCH, "r", -1, "r must be"),
        (MATCH, "r", 0, "r must be"),
        (MATCH, "r", NUM_A + 1, "r must be"),
        (MATCH, "num_prefix", -1, "num_prefix must be"),
        (MATCH, "num_prefix", N - 1, "num_prefix must be"),
        (MATCH, "num_tokens", 8193, "num_tokens must be"),
        (MERGE, "r", -1, "r must be"),
        (MERGE, "r", 0, "r must be"),
        (MERGE, "r", N, "r must be"),
        (MERGE, "mode", 7, "mode must be"),
        (MERGE, "num_tokens", 1, "num_tokens must be"),
    ],
)
def test_an_invalid_attribute_gives_no_plugin_and_an_error(host, plugin, name, value, reason):
    made = host.create(plugin, {**ATTRS[plugin], name: value})
    assert not made["created"]
    assert any(reason in message and f"{name} = {value}" in message for message in errors(host)), errors(host)


@pytest.mark.parametrize("plugin", [MATCH, MERGE])
@pytest.mark.parametrize(("value", "field_type"), [(4, FIELD_FLOAT32), (1 << 40, FIELD_INT64), (4, FIELD_CHAR)])
def test_a_non_int32_attribute_gives_no_plugin_and_an_error(host, plugin, value, field_type):
    made = host.create(plugin, {**ATTRS[plugin], "r": (value, field_type)})
    assert not made["created"]
    assert any("'r' must be one int32" in message for message in errors(host))


def test_match_accepts_exactly_the_reductions_a_block_allows(host):
    for num_tokens in range(2, 12):
        for num_prefix in range(0, num_tokens):
            limit = max_reduction(num_tokens, num_prefix)
            for r in range(-1, limit + 2):
                made = host.create(MATCH, {"num_tokens": num_tokens, "num_prefix": num_prefix, "r": r})
                assert made["created"] == (1 <= r <= limit), (num_tokens, num_prefix, r)


# Output shapes, through the fake expression builder.


def test_match_output_shapes_come_from_the_attributes(host):
    shapes = host.output_shapes(MATCH, MATCH_ATTRS, [[BATCH, NUM_A, NUM_B]])
    assert shapes == {"status": 0, "misuse": False, "outputs": [[BATCH, N], [BATCH, R]]}


def test_match_passes_a_dynamic_batch_through(host):
    shapes = host.output_shapes(MATCH, MATCH_ATTRS, [[-1, NUM_A, NUM_B]])
    assert shapes == {"status": 0, "misuse": False, "outputs": [["s0", N], ["s0", R]]}


def test_merge_output_shapes_come_from_the_attributes(host):
    shapes = host.output_shapes(MERGE, MERGE_ATTRS, merge_dims())
    assert shapes == {"status": 0, "misuse": False, "outputs": [[BATCH, N - R, C], [BATCH, N - R, 1]]}


def test_merge_passes_a_dynamic_batch_and_channels_through(host):
    shapes = host.output_shapes(MERGE, MERGE_ATTRS, [[-1, N, -1], [-1, N, 1], [-1, N], [-1, R]])
    assert shapes == {"status": 0, "misuse": False, "outputs": [["s0", N - R, "s1"], ["s0", N - R, 1]]}


@pytest.mark.parametrize(
    ("plugin", "inputs"),
    [
        (MATCH, [[BATCH, NUM_A + 1, NUM_B]]),
        (MATCH, [[BATCH, NUM_A, NUM_B - 1]]),
        (MATCH, [[NUM_A, NUM_B]]),
        (MERGE, merge_dims(tokens=N + 1)),
        (MERGE, merge_dims(r=R + 1)),
        (MERGE, [[BATCH, N, C], [BATCH, N, 2], [BATCH, N], [BATCH, R]]),
        (MERGE, [[BATCH, N, C], [BATCH + 1, N, 1], [BATCH, N], [BATCH, R]]),
        (MERGE, [[BATCH, N, C], [BATCH, N, 1], [BATCH, N]]),
    ],
    ids=["A", "B", "rank", "tokens", "r", "size-channels", "batch", "three-inputs"],
)
def test_inputs_that_do_not_fit_the_attributes_are_an_error(host, plugin, inputs):
    shapes = host.output_shapes(plugin, ATTRS[plugin], inputs)
    assert shapes["status"] != 0
    assert errors(host)


# Formats and types.


def accepted(host, plugin, types, formats=None) -> bool:
    """TensorRT's question, position by position: is this combination supported?"""
    formats = formats or [FORMAT_LINEAR] * len(types)
    return all(
        host.supports_format(plugin, ATTRS[plugin], pos, list(types), formats, NB_INPUTS[plugin])
        for pos in range(len(types))
    )


def test_match_supports_linear_fp32_or_fp16_scores_and_int32_outputs(host):
    combinations = {types for types in itertools.product(TYPES, repeat=3) if accepted(host, MATCH, types)}
    assert combinations == {(DT_FLOAT, DT_INT32, DT_INT32), (DT_HALF, DT_INT32, DT_INT32)}


def test_merge_supports_one_float_type_for_tokens_and_sizes_and_int32_indices(host):
    combinations = {types for types in itertools.product(TYPES, repeat=6) if accepted(host, MERGE, types)}
    assert combinations == {
        (DT_FLOAT, DT_FLOAT, DT_INT32, DT_INT32, DT_FLOAT, DT_FLOAT),
        (DT_HALF, DT_HALF, DT_INT32, DT_INT32, DT_HALF, DT_HALF),
    }


@pytest.mark.parametrize("plugin", [MATCH, MERGE])
@pytest.mark.parametrize("position", [0, 1])
@pytest.mark.parametrize("layout", [FORMAT_CHW2, FORMAT_HWC8])
def test_only_linear_formats_are_supported(host, plugin, position, layout):
    types = (
        [DT_HALF, DT_INT32, DT_INT32] if plugin == MATCH else [DT_HALF, DT_HALF, DT_INT32, DT_INT32, DT_HALF, DT_HALF]
    )
    formats = [FORMAT_LINEAR] * len(types)
    formats[position] = layout
    assert not host.supports_format(plugin, ATTRS[plugin], position, types, formats, NB_INPUTS[plugin])


@pytest.mark.parametrize("plugin", [MATCH, MERGE])
def test_other_types_are_not_supported(host, plugin):
    for odd in (DT_INT8, DT_BOOL):
        types = [odd] + ([DT_INT32] * 2 if plugin == MATCH else [odd, DT_INT32, DT_INT32, odd, odd])
        assert not host.supports_format(
            plugin, ATTRS[plugin], 0, types, [FORMAT_LINEAR] * len(types), NB_INPUTS[plugin]
        )


@pytest.mark.parametrize(
    ("plugin", "inputs", "status", "outputs"),
    [
        (MATCH, [DT_FLOAT], 0, [DT_INT32, DT_INT32]),
        (MATCH, [DT_HALF], 0, [DT_INT32, DT_INT32]),
        (MATCH, [DT_INT32], -1, None),
        (MERGE, [DT_FLOAT, DT_FLOAT, DT_INT32, DT_INT32], 0, [DT_FLOAT, DT_FLOAT]),
        (MERGE, [DT_HALF, DT_HALF, DT_INT32, DT_INT32], 0, [DT_HALF, DT_HALF]),
        (MERGE, [DT_HALF, DT_FLOAT, DT_INT32, DT_INT32], -1, None),
    ],
)
def test_output_types(host, plugin, inputs, status, outputs):
    got_status, got_outputs = host.output_types(plugin, ATTRS[plugin], inputs, 2)
    assert got_status == status
    if outputs is not None:
        assert got_outputs == outputs


# configurePlugin and onShapeChange check the tensors TensorRT settled on.


@pytest.mark.parametrize("stage", [0, 1], ids=["configurePlugin", "onShapeChange"])
@pytest.mark.parametrize(
    ("plugin", "dims", "types", "status"),
    [
        (MATCH, [[BATCH, NUM_A, NUM_B], [BATCH, N], [BATCH, R]], [DT_HALF, DT_INT32, DT_INT32], 0),
        (MATCH, [[BATCH, NUM_A, NUM_B + 1], [BATCH, N], [BATCH, R]], [DT_HALF, DT_INT32, DT_INT32], -1),
        (
            MERGE,
            merge_dims() + [[BATCH, N - R, C], [BATCH, N - R, 1]],
            [DT_FLOAT] * 2 + [DT_INT32] * 2 + [DT_FLOAT] * 2,
            0,
        ),
        (
            MERGE,
            merge_dims(r=R + 1) + [[BATCH, N - R, C], [BATCH, N - R, 1]],
            [DT_FLOAT] * 2 + [DT_INT32] * 2 + [DT_FLOAT] * 2,
            -1,
        ),
    ],
    ids=["match", "match-bad-B", "merge", "merge-bad-r"],
)
def test_configure_and_shape_change_check_the_tensors(host, stage, plugin, dims, types, status):
    assert host.configure(plugin, ATTRS[plugin], stage, dims, types, NB_INPUTS[plugin]) == status
    assert bool(errors(host)) == (status != 0)


def test_configure_accepts_dynamic_extents_at_build_time(host):
    dims = [[-1, N, -1], [-1, N, 1], [-1, N], [-1, R], [-1, N - R, -1], [-1, N - R, 1]]
    types = [DT_HALF] * 2 + [DT_INT32] * 2 + [DT_HALF] * 2
    assert host.configure(MERGE, MERGE_ATTRS, 0, dims, types, 4) == 0


def test_configure_rejects_mixed_float_types(host):
    dims = merge_dims() + [[BATCH, N - R, C], [BATCH, N - R, 1]]
    types = [DT_HALF, DT_FLOAT, DT_INT32, DT_INT32, DT_HALF, DT_HALF]
    assert host.configure(MERGE, MERGE_ATTRS, 0, dims, types, 4) == -1
