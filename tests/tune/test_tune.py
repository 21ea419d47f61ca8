"""`tune` end to end on a tiny model: the phases, the report, fidelity scoring, INT8 timing, and the command."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from typer.testing import CliRunner

from tests.measure.test_accuracy import make_folder
from tofu_edge.cli import app
from tofu_edge.cli.options import read_config_file
from tofu_edge.config import FusionConfig
from tofu_edge.models import create_model
from tofu_edge.patch import describe_vit
from tofu_edge.tune import Target, TuneSettings, tune
from tofu_edge.tune.candidates import token_schedules, unfused_candidate
from tofu_edge.tune.fidelity import FidelityScorer
from tofu_edge.tune.latency import LatencyLab
from tofu_edge.tune.search import Tuner

MODEL = "deit_tiny_patch16_224"
IMG = 64  # 17 tokens: the command's tests stay quick
SMALL = dict(img_size=64, patch_size=8, embed_dim=48, depth=4, num_heads=3)  # 65 tokens in 4 blocks: r up to 15
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

cli = CliRunner()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("photos"), classes=("flat",), per_class=6) / "flat"


def run(*args):
    return cli.invoke(app, ["tune", *map(str, args)], env={"COLUMNS": "200"})


def on_torch(photos, *target):
    """The tiny model tuned on ``photos`` in eager torch (quick) for ``target`` (``"--min-cosine", 0.9``)."""
    return (MODEL, photos, "--img-size", IMG, "--backend", "torch", *target)


def test_tune_finds_a_timed_choice_and_remeasures_it(photos, tmp_path):
    settings = TuneSettings(backend="torch", budget_s=60, measure_s=0.3, threads=1)  # ends before the budget
    torch.manual_seed(0)
    model = create_model(MODEL, **SMALL)
    report = tune(model, photos, Target("min-cosine", 0.9), settings, cache_path=tmp_path / "c.json")
    assert report.met and report.chosen.measured and report.remeasured is not None
    assert report.chosen.fidelity.cosine >= 0.9
    names = {p.candidate.name for p in report.points}
    assert "unfused" in names and any(n.startswith("mean ") for n in names) and any("switch=" in n for n in names)
    assert sum(p.measured for p in report.points) >= 3  # the unfused model and two seeds at least
    assert report.front and report.front[0].speedup >= report.front[-1].speedup
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["chosen"]["name"] == report.chosen.candidate.name and payload["phases"]["done"] <= 60
    assert "final round" in payload["phases"] or report.chosen.candidate.config is None
    assert report.plot(tmp_path / "front.png").read_bytes().startswith(PNG_SIGNATURE)


def test_fidelity_is_top1_against_labels_or_agreement_or_cosine_alone():
    torch.manual_seed(0)
    model = create_model(MODEL, **SMALL).eval()
    images, labels = torch.randn(6, 3, 64, 64), torch.tensor([0, 1, 2, 0, 1, 2])
    fused = token_schedules(describe_vit(model))[-1]  # the fewest MACs
    with_labels = FidelityScorer(model, images, labels)
    reference_top1 = 100 * float((with_labels.reference.argmax(-1) == labels).double().mean())
    score = with_labels(fused)
    top1 = 100 * float((with_labels._runner.outputs(fused.config).argmax(-1) == labels).double().mean())
    assert score.top1_drop == pytest.approx(reference_top1 - top1) and 0.0 <= score.agreement <= 1.0
    unlabelled = FidelityScorer(model, images, None)(fused)
    assert unlabelled.top1_drop == pytest.approx(100 * (1 - unlabelled.agreement))
    assert unlabelled.cosine == pytest.approx(score.cosine) and unlabelled.cosine < 1.0
    assert with_labels(unfused_candidate(describe_vit(model))).cosine == pytest.approx(1.0)
    headless = create_model("vit_small_patch14_dinov2", img_size=28).eval()
    small = FidelityScorer(headless, torch.randn(2, 3, 28, 28), None)(unfused_candidate(describe_vit(headless)))
    assert small.agreement is None and small.top1_drop is None


def test_int8_candidates_are_timed_and_scored_from_their_export():
    torch.manual_seed(0)
    model = create_model(MODEL, img_size=32).eval()
    unfused = unfused_candidate(describe_vit(model))
    with LatencyLab(model, backend="onnxruntime", device="cpu", batch=2, threads=1) as lab:
        timed = lab.measure(unfused, [unfused.quantized()], seconds=0.2)[unfused.quantized().key]
        outputs = lab.outputs(unfused.quantized(), torch.randn(3, 3, 32, 32))  # padded to the static batch 2
    assert timed.speedup > 0 and timed.rounds >= 1 and outputs.shape == (3, 1000)


def test_command_prints_the_front_and_writes_the_config(photos, tmp_path):
    config, report = tmp_path / "tuned.json", tmp_path / "tune.json"
    result = run(
        *on_torch(photos, "--min-cosine", 0.9), "--budget-min", 0.5, "-o", config, "--report", report, "--threads", 1
    )
    assert result.exit_code == 0, result.output
    assert (
        "Pareto front" in result.stdout and "re-measured" in result.stdout and "export with: tofu-edge" in result.stdout
    )
    assert isinstance(read_config_file(config), FusionConfig)  # what export --config takes
    assert report.with_suffix(".png").read_bytes().startswith(PNG_SIGNATURE)
    assert json.loads(report.read_text())["met"] is True and report.with_suffix(".cache.json").is_file()


def test_an_unreachable_target_exits_1_with_the_closest(photos, tmp_path):
    config = tmp_path / "tuned.json"
    result = run(*on_torch(photos, "--speedup", 50), "--budget-min", 0.1, "-o", config, "--report", tmp_path / "t.json")
    assert result.exit_code == 1
    assert "no schedule meets speed-up >= 50x here; the closest is" in result.stderr
    assert not config.exists()  # a config that misses the target is not one to export


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "give exactly one target"),
        (("--speedup", 1.5, "--min-cosine", 0.99), "give exactly one target"),
        (("--min-cosine", 2), "--min-cosine takes a cosine in (0, 1]"),
        (("--speedup", 1.5, "--backend", "torch", "--int8"), "--int8 is an axis of the onnxruntime backend"),
        (("--speedup", 1.5, "--report", "x.txt"), "--report writes JSON"),
        (("--speedup", 1.5, "--budget-min", 0), "--budget-min must be > 0"),
        (("--max-top1-drop", 1, "--backend", "torch", "MODEL=vit_small_patch14_dinov2"), "needs a classifier"),
    ],
)
def test_bad_requests_are_one_line(photos, tmp_path, args, message):
    model = next((a.split("=")[1] for a in map(str, args) if a.startswith("MODEL=")), MODEL)
    args = [a for a in args if not str(a).startswith("MODEL=")]
    size = 28 if "dinov2" in model else IMG
    result = run(model, photos, "--img-size", size, "--report", tmp_path / "r.json", "--budget-min", 0.05, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_empty_folder_and_a_missing_backend_are_one_line(photos, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run(MODEL, tmp_path / "empty", "--speedup", 1.5, "--report", tmp_path / "r.json")
    assert result.exit_code == 2 and "holds no .jpg" in result.stderr
    if importlib.util.find_spec("tensorrt") is not None:
        return  # installed: the message for a missing TensorRT cannot be seen here
    result = run(MODEL, photos, "--speedup", 1.5, "--backend", "tensorrt", "--report", tmp_path / "r.json")
    assert result.exit_code == 2 and "tensorrt" in result.stderr.lower() and len(result.stderr.splitlines()) == 1


def test_ctrl_c_keeps_the_measurements_and_resume_reuses_them(photos, tmp_path, monkeypatch):
    report = tmp_path / "t.json"
    args = (*on_torch(photos, "--min-cosine", 0.9), "--budget-min", 0.5, "--report", report)

    def interrupt(self):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Tuner, "_measure_best", interrupt)
        result = run(*args)
    assert result.exit_code == 130 and "--resume" in result.stderr
    cache = json.loads(report.with_suffix(".cache.json").read_text())
    assert len(cache["fidelity"]) > 3 and len(cache["latency"]) >= 2 and not report.exists()

    scored = []
    original = FidelityScorer.__call__
    monkeypatch.setattr(FidelityScorer, "__call__", lambda self, c: scored.append(c) or original(self, c))
    result = run(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert not {c.key for c in scored} & set(cache["fidelity"])  # nothing scored twice
    assert run(*args[:-2], "--batch", 2, "--report", report, "--resume").exit_code == 2  # other settings: refused


def test_a_candidate_whose_export_fails_parity_is_left_out(photos, tmp_path, monkeypatch):
    from tofu_edge.errors import ParityError

    original, refused = LatencyLab.prepare, []

    def prepare(self, candidate):
        if candidate.config is not None and not refused:
            refused.append(candidate.key)
            raise ParityError(f"{candidate.name}: photos: cosine 0.98990 < 0.999")
        return original(self, candidate)

    monkeypatch.setattr(LatencyLab, "prepare", prepare)
    settings = TuneSettings(backend="torch", budget_s=60, measure_s=0.2, threads=1)
    torch.manual_seed(0)
    report = tune(create_model(MODEL, **SMALL), photos, Target("min-cosine", 0.9), settings, cache_path=tmp_path / "c")
    failed = [p for p in report.points if p.failed]
    assert [p.candidate.key for p in failed] == refused and report.chosen not in failed
    assert any("left out" in note and "parity" in note for note in report.notes)
    assert sum(p.measured and p.candidate.config is not None for p in report.points) >= 2  # the next seed was timed


def test_when_fusion_does_not_pay_r0_is_recommended(photos, tmp_path, monkeypatch):
    from tofu_edge.tune.latency import Measurement

    def slower(self, unfused, candidates, seconds):  # every fused schedule 20 % slower, as eager DeiT-Tiny at b=1
        for candidate in candidates:
            self.prepare(candidate)
        return {c.key: Measurement(0.8, 12.5, 10.0, 10) for c in candidates}

    monkeypatch.setattr(LatencyLab, "measure", slower)
    settings = TuneSettings(backend="torch", budget_s=60, measure_s=0.2, threads=1)
    torch.manual_seed(0)
    model = create_model(MODEL, **SMALL)
    report = tune(model, photos, Target("min-cosine", 0.9), settings, cache_path=tmp_path / "c.json")
    assert report.met and report.config is None  # r = 0: the unfused model
    assert any(note.startswith("fusion does not pay here") and "r = 0" in note for note in report.notes)
    missed = tune(model, photos, Target("speedup", 1.2), settings, cache_path=tmp_path / "d.json")
    assert not missed.met and any(note.startswith("fusion does not pay here") for note in missed.notes)


def test_sigterm_keeps_the_measurements_too(photos, tmp_path, monkeypatch):
    from tofu_edge.cli.interrupts import Terminated

    def terminate(self):
        raise Terminated()

    monkeypatch.setattr(Tuner, "_measure_best", terminate)
    report = tmp_path / "t.json"
    result = run(*on_torch(photos, "--min-cosine", 0.9), "--report", report)
    assert result.exit_code == 143 and "--resume" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert json.loads(report.with_suffix(".cache.json").read_text())["fidelity"]
