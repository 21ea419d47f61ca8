"""The steady-allocator re-execution the benchmarks start with, and its record and hint."""

import os
import sys

import pytest

from tofu_edge.measure import allocator, describe_environment
from tofu_edge.measure.allocator import STEADY_GLIBC_TUNABLES


@pytest.fixture
def execs(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append((path, argv)))
    monkeypatch.setattr(allocator, "_glibc_linux", lambda: True)
    return calls


def test_a_benchmark_reexecutes_itself_once_with_the_steady_settings(monkeypatch, execs):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-m", "benchmarks.onnx_latency", "--rs", "13"])
    allocator.run_with_steady_allocator()
    assert execs == [(sys.executable, [sys.executable, "-m", "benchmarks.onnx_latency", "--rs", "13"])]
    assert os.environ["GLIBC_TUNABLES"] == STEADY_GLIBC_TUNABLES
    allocator.run_with_steady_allocator()  # the re-executed process finds them set and goes on
    assert len(execs) == 1


def test_a_users_own_tunables_are_kept_and_silence_the_hint(monkeypatch, execs):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    allocator.run_with_steady_allocator()
    assert not execs and os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
    assert allocator.allocator_hint() is None
    assert describe_environment()["allocator"]["glibc_tunables"] == "glibc.malloc.arena_max=2"


def test_without_glibc_nothing_is_reexecuted_or_hinted(monkeypatch, execs):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(allocator, "_glibc_linux", lambda: False)
    allocator.run_with_steady_allocator()
    assert not execs and "GLIBC_TUNABLES" not in os.environ
    assert allocator.allocator_hint() is None


def test_the_hint_names_the_settings(monkeypatch, execs):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert STEADY_GLIBC_TUNABLES in allocator.allocator_hint()
