"""`tofu_edge.export.ort_ops`: finding, checking and registering libtofu_edge_ort.so, and plugin-flavour files run
through it (or through the PyTorch reference where it is not built) by `ort_session`."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import images_for, tiny_model
from tofu_edge.export import ort_ops, ort_session
from tofu_edge.export.ort_ops import ENV_VAR, OrtOpsError, find_ort_ops, load_ort_ops

PARITY_ATOL = 1e-5  # native ops against the reference ops, whole tiny model


@pytest.fixture(autouse=True)
def fresh_checks(monkeypatch):
    """No library from the environment, and every check re-run (the loader caches per path and process)."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    load_ort_ops.cache_clear()
    ort_ops._note.cache_clear()
    yield
    load_ort_ops.cache_clear()


def _elf(path, machine: int) -> None:
    """A file with a 64-bit little-endian ELF header for ``machine`` and nothing else."""
    header = bytearray(64)
    header[:4], header[4], header[5] = b"\x7fELF", 2, 1
    header[18:20] = machine.to_bytes(2, "little")
    path.write_bytes(bytes(header))


def test_nothing_built_means_the_reference(monkeypatch, tmp_path):
    monkeypatch.setattr(ort_ops, "default_library_path", lambda: tmp_path / "none.so")
    assert find_ort_ops() is None


def test_a_given_library_that_does_not_exist_is_one_error(tmp_path):
    with pytest.raises(OrtOpsError, match=r"nope.so does not exist; build it: .*fetch_onnxruntime_headers.sh"):
        find_ort_ops(tmp_path / "nope.so")


def test_the_environment_names_the_library(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from_env.so"))
    with pytest.raises(OrtOpsError, match="from_env.so does not exist"):
        find_ort_ops()


def test_reference_in_the_environment_forces_the_reference(monkeypatch, ort_library):
    monkeypatch.setattr(ort_ops, "default_library_path", lambda: ort_library)
    assert find_ort_ops() is not None
    monkeypatch.setenv(ENV_VAR, "reference")
    assert find_ort_ops() is None


def test_a_library_for_another_cpu_is_named_as_such(tmp_path):
    _elf(tmp_path / "arm.so", 183 if ort_ops.platform.machine() != "aarch64" else 62)
    with pytest.raises(OrtOpsError, match=r"arm.so is built for (aarch64|x86_64), this machine is"):
        load_ort_ops(tmp_path / "arm.so")


def test_a_file_that_is_no_library_is_named_as_such(tmp_path):
    (tmp_path / "text.so").write_text("not a library")
    with pytest.raises(OrtOpsError, match="text.so is not a shared library"):
        load_ort_ops(tmp_path / "text.so")


def test_a_default_library_with_a_problem_is_a_note_and_the_reference(monkeypatch, tmp_path, capsys):
    (tmp_path / "bad.so").write_text("not a library")
    monkeypatch.setattr(ort_ops, "default_library_path", lambda: tmp_path / "bad.so")
    assert find_ort_ops() is None and find_ort_ops() is None
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"note: not using {tmp_path / 'bad.so'}: ")


def test_the_built_library_passes_its_checks(ort_library):
    library = load_ort_ops(ort_library)
    assert library.path == ort_library.resolve() and library.api_version <= int(ort.__version__.split(".")[1])


def test_a_library_of_another_plugin_contract_is_stale(monkeypatch, ort_library, tmp_path):
    other = tmp_path / "plugin_specs.json"
    other.write_text(ort_ops.SPEC_PATH.read_text().replace('"version": "1"', '"version": "2"', 1))
    monkeypatch.setattr(ort_ops, "SPEC_PATH", other)
    with pytest.raises(OrtOpsError, match="built from another plugin contract than plugin_specs.json; rebuild"):
        load_ort_ops(ort_library)


def test_a_library_older_than_its_sources_is_stale(monkeypatch, ort_library, tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(ort_ops.CHECKOUT / "kernels", checkout / "kernels")
    monkeypatch.setattr(ort_ops, "CHECKOUT", checkout)
    load_ort_ops(ort_library)  # the same sources: fine
    load_ort_ops.cache_clear()
    merge = checkout / "kernels" / "tofuMergePlugin" / "tofuMergeMath.h"
    merge.write_text(merge.read_text() + "\n// changed\n")
    with pytest.raises(OrtOpsError, match="is stale: kernels/ changed since it was built; rebuild"):
        load_ort_ops(ort_library)


def test_an_onnxruntime_older_than_the_library_api_is_named(monkeypatch, ort_library):
    monkeypatch.setattr(ort, "__version__", "1.18.0")
    with pytest.raises(OrtOpsError, match=r"needs onnxruntime >= 1\.2\d, this is 1.18.0"):
        load_ort_ops(ort_library)


def test_plugin_file_runs_natively_as_the_reference_does(monkeypatch, ort_library, tiny_onnx_plugin):
    """The whole tiny model: native ops and the PyTorch reference ops agree, and both match the portable file."""
    images = images_for(tiny_model("vit"), batch=1).numpy()
    native = ort_session(tiny_onnx_plugin, ort_ops=ort_library)
    monkeypatch.setenv(ENV_VAR, "reference")
    reference = ort_session(tiny_onnx_plugin)
    name = native.get_inputs()[0].name
    np.testing.assert_allclose(
        native.run(None, {name: images})[0], reference.run(None, {name: images})[0], atol=PARITY_ATOL
    )


def test_reference_fallback_says_so_once(monkeypatch, tmp_path, tiny_onnx_plugin, capsys):
    monkeypatch.setattr(ort_ops, "default_library_path", lambda: tmp_path / "none.so")
    ort_session(tiny_onnx_plugin)
    ort_session(tiny_onnx_plugin)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: no native onnxruntime ops library; plugin nodes run through")
