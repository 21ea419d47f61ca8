"""The timing library: statistics, interleaving, speed-ups, environment, tegrastats, file benchmarks, plots."""

from __future__ import annotations

import json
import stat
import time

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from tests.conftest import images_for, tiny_model
from tofu_edge import FusionConfig
from tofu_edge.errors import ConfigError
from tofu_edge.measure import (
    LatencyStats,
    Runner,
    TegrastatsSampler,
    Timing,
    bench_files,
    describe_environment,
    jetson_info,
    measure_interleaved,
    paired_speedup,
    parse_sweep,
    parse_tegrastats,
    plot_sweep,
    torch_runner,
)
from tofu_edge.measure import environment as environment_module

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY_TIMING = Timing(warmup=1, iterations=3)
ORIN_LINE = (
    "RAM 2448/30536MB (lfb 6715x4MB) SWAP 0/15268MB CPU [1%@729,0%@729] EMC_FREQ 0% GR3D_FREQ 0% "
    "cpu@43.5C VDD_GPU_SOC 1597mW/1597mW VDD_CPU_CV 399mW/399mW VIN_SYS_5V0 2212mW/2212mW"
)
XAVIER_LINE = "RAM 1905/7764MB CPU [2%@1190] GR3D_FREQ 0%@114 POM_5V_IN 3145/3145 POM_5V_GPU 0/0 POM_5V_CPU 471/471"


def test_stats_are_percentiles_of_the_samples_and_throughput_at_the_median():
    stats = LatencyStats.from_samples([float(v) for v in range(1, 11)], batch=4)
    assert stats.samples == 10 and stats.min_ms == 1.0 and stats.mean_ms == 5.5
    assert stats.median_ms == pytest.approx(5.5)
    assert stats.p90_ms == pytest.approx(9.1) and stats.p99_ms == pytest.approx(9.91)
    assert stats.images_per_s == pytest.approx(4 * 1000 / 5.5)
    with pytest.raises(ValueError):
        LatencyStats.from_samples([])


def test_runners_are_called_round_robin_after_an_interleaved_warmup_each_round_starting_one_later():
    calls = []
    runners = [Runner(name, lambda name=name: calls.append(name)) for name in ("a", "b", "c")]
    samples = measure_interleaved(runners, warmup=1, iterations=2)
    assert calls == ["a", "b", "c"] + ["a", "b", "c"] + ["b", "c", "a"]
    assert {name: len(times) for name, times in samples.items()} == {"a": 2, "b": 2, "c": 2}


def test_a_device_timed_call_reports_its_own_latency_and_a_time_budget_ends_the_rounds():
    fractions = []
    samples = measure_interleaved([Runner("gpu", lambda: 7.0)], warmup=0, seconds=0.02, progress=fractions.append)
    assert set(samples["gpu"]) == {7.0} and len(samples["gpu"]) == len(fractions) >= 1
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(runners=[]),
        dict(runners=[Runner("a", lambda: None)] * 2),
        dict(runners=[Runner("a", lambda: None)], iterations=0),
        dict(runners=[Runner("a", lambda: None)], warmup=-1),
    ],
)
def test_bad_measurement_options_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        measure_interleaved(**kwargs)


def test_speedup_is_the_median_of_per_round_ratios():
    # ratios 2, 2, 3 -> 2; the ratio of medians would be 20 / 10 = 2 too, but ratio of means is 20 / 8.33
    assert paired_speedup([10.0, 20.0, 30.0], [5.0, 10.0, 10.0]) == 2.0
    with pytest.raises(ValueError):
        paired_speedup([1.0], [1.0, 2.0])


def test_torch_runner_runs_the_model_on_the_cpu_and_leaves_timing_to_the_wall_clock():
    model = tiny_model("vit")
    runner = torch_runner("tiny", model, images_for(model, batch=2))
    assert runner.batch == 2 and runner.call() is None


def test_sweep_builds_the_unfused_baseline_first_and_one_variant_per_value():
    base = FusionConfig(mode="mean", clamp=True)
    variants = parse_sweep("r=8,0,13", base)
    assert [v.name for v in variants] == ["unfused", "mean r=8", "mean r=13"]
    assert variants[0].config is None and variants[2].config == FusionConfig(r=13, mode="mean", clamp=True)
    assert [v.config.keep for v in parse_sweep("keep=1,0.6", FusionConfig())[1:]] == [0.6]


@pytest.mark.parametrize("text", ["r=", "r=a,b", "x=1,2", "13", "keep=0.5,x"])
def test_bad_sweep_syntax_is_a_config_error(text):
    with pytest.raises(ConfigError, match="--sweep takes"):
        parse_sweep(text, FusionConfig())


def test_tegrastats_power_rails_are_parsed_in_mw():
    assert parse_tegrastats(ORIN_LINE) == {"VDD_GPU_SOC": 1597.0, "VDD_CPU_CV": 399.0, "VIN_SYS_5V0": 2212.0}
    assert parse_tegrastats(XAVIER_LINE) == {"POM_5V_IN": 3145.0, "POM_5V_GPU": 0.0, "POM_5V_CPU": 471.0}
    assert parse_tegrastats("RAM 1905/7764MB CPU [2%@1190]") == {}


def test_tegrastats_sampler_is_a_no_op_without_the_binary(monkeypatch):
    monkeypatch.setattr(environment_module.shutil, "which", lambda name: None)
    with TegrastatsSampler() as power:
        pass
    assert power.binary is None and power.summary() is None


def test_tegrastats_sampler_averages_a_running_tegrastats(tmp_path):
    fake = tmp_path / "tegrastats"
    fake.write_text('#!/bin/sh\nwhile true; do echo "VDD_IN 5000mW/5000mW VDD_GPU 1000mW/900mW"; sleep 0.01; done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with TegrastatsSampler(binary=str(fake)) as power:
        deadline = time.monotonic() + 5
        while len(power.samples) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    summary = power.summary()
    assert summary["VDD_IN"]["mean_mw"] == 5000.0 and summary["VDD_GPU"]["max_mw"] == 1000.0


def test_jetson_info_reads_the_board_and_release(tmp_path, monkeypatch):
    release, model = tmp_path / "nv_tegra_release", tmp_path / "model"
    release.write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64\n")
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    monkeypatch.setattr(environment_module, "TEGRA_RELEASE", release)
    monkeypatch.setattr(environment_module, "DEVICE_TREE_MODEL", model)
    info = jetson_info()
    assert info["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert info["l4t"].startswith("R36 (release), REVISION: 4.0") and "jetson_clocks" in info["clocks"]
    monkeypatch.setattr(environment_module, "TEGRA_RELEASE", tmp_path / "absent")
    monkeypatch.setattr(environment_module, "DEVICE_TREE_MODEL", tmp_path / "absent")
    assert jetson_info() == {}


def test_environment_records_cpu_threads_and_versions():
    record = describe_environment(threads=2)
    assert record["cores"] >= 1 and record["threads"] == 2 and record["cpu"]
    assert {"torch", "timm", "onnxruntime"} <= set(record["versions"])
    json.dumps(record)


def _linear_onnx(path, features: int, gmacs: float) -> None:
    """A [2, 3, 4, 4] -> [2, features] graph with a tofu_edge.plan entry, as export_onnx writes it."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [48, features], np.ones(48 * features, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [2, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, features])],
        [weight],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plan = {"gmacs": gmacs, "unfused_gmacs": 2.0, "blocks": [{"r": 1}, {"r": 0}], "config": {"r": 1}}
    helper.set_model_props(proto, {"tofu_edge.plan": json.dumps(plan)})
    onnx.save(proto, path)


def test_an_onnx_file_is_timed_beside_its_baseline_with_gmacs_from_its_metadata(tmp_path):
    _linear_onnx(tmp_path / "fused.onnx", 8, gmacs=1.0)
    _linear_onnx(tmp_path / "base.onnx", 64, gmacs=2.0)
    result = bench_files(tmp_path / "fused.onnx", baseline=tmp_path / "base.onnx", timing=TINY_TIMING)
    lines = [json.loads(line) for line in result.to_jsonl().splitlines()]
    assert [line["type"] for line in lines] == ["environment", "result", "result"]
    assert lines[0]["backend"] == "onnxruntime" and lines[0]["ort_provider"] == "cpu" and lines[0]["batch"] == 2
    base, fused = lines[1:]
    assert (base["variant"], fused["variant"]) == ("base", "fused") and base["speedup"] == 1.0
    assert fused["gmacs"] == 1.0 and fused["ideal_speedup"] == 2.0 and fused["r_schedule"] == [1, 0]
    assert fused["stats"]["samples"] == 3 and fused["speedup"] > 0


def test_sweep_plot_is_a_png(tmp_path):
    rows = [
        {"variant": name, "gmacs": g, "unfused_gmacs": 4.6, "speedup": s, "stats": {"median_ms": m, "p90_ms": m + 1}}
        for name, g, s, m in [("unfused", 4.6, 1.0, 70.0), ("tofu r=8", 3.4, 1.2, 58.0), ("tofu r=13", 2.7, 1.5, 46)]
    ]
    path = plot_sweep(rows, tmp_path / "plots" / "sweep.png", title="deit_small, onnxruntime, batch 1")
    assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 10_000
    assert [p.name for p in path.parent.iterdir()] == ["sweep.png"]  # no temporary left behind


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.gpu
def test_cuda_runner_reports_cuda_event_time():
    model = tiny_model("vit").cuda()
    runner = torch_runner("tiny", model, images_for(model).cuda())
    assert runner.call() > 0
