"""README.md's commands, read as a new user runs them: every `tofu-edge` command parses (its command exists and its
options are that command's), every file one reads was written by a command above it or is one of the user's own
files the README names, and (slow) the shell and Python blocks run top to bottom on a tiny model.

A block preceded by ``<!-- readme-test: skip REASON -->`` is not run (its commands are still checked); commands that
need a GPU, TensorRT or a network (pip) are not run where those are missing."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer.main

from tofu_edge.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
USER_FILES = ("photos/", "imagenet_val/", "cat.jpg", "weights.safetensors")  # what the README says the user brings
READ_OPTIONS = ("--baseline", "--onnx", "--engine", "--config", "--checkpoint", "--calibration-images", "--plugins")
READ_OPTIONS += ("--parity-images",)
WRITE_OPTIONS = ("-o", "--output", "--report", "--plot")
FILE_SUFFIXES = (".onnx", ".engine", ".jpg", ".png", ".json", ".jsonl", ".safetensors", ".so")
SKIP = re.compile(r"<!-- readme-test: skip (.+?) -->")
FENCE = re.compile(r"^```(\w*)$")
# a line of a block without a language is a command when it starts with one of these (else it is a listing)
PROGRAM = re.compile(r"^(?:[A-Z_]+=\S+ )*(?:\.venv/bin/)?(?:tofu-edge|python3?|pip|bash|cmake|docker) ")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language (``bash``, ``python`` or none), text, first line and skip reason."""

    language: str
    text: str
    line: int
    skip: str | None


@dataclass(frozen=True)
class Command:
    """One shell command of a block (``&&`` chains split): its words without ``.venv/bin/``, environment and line."""

    words: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    line: int

    @property
    def is_tofu_edge(self) -> bool:
        return self.words[:1] == ("tofu-edge",)

    def option(self, names: tuple[str, ...]) -> list[str]:
        """The values given to any of the options ``names``."""
        return [self.words[i + 1] for i, word in enumerate(self.words[:-1]) if word in names]


def readme_blocks(text: str | None = None) -> list[Block]:
    """The fenced code blocks of the README, in order, with the skip marker on the line before a block's fence."""
    lines = (README.read_text() if text is None else text).splitlines()
    blocks, start, language = [], None, ""
    for number, line in enumerate(lines, 1):
        fence = FENCE.match(line)
        if fence and start is None:
            start, language = number, fence.group(1)
        elif line == "```" and start is not None:
            marker = SKIP.search(lines[start - 2]) if start > 1 else None
            body = "\n".join(lines[start : number - 1])
            blocks.append(Block(language, body, start, marker.group(1) if marker else None))
            start = None
    return blocks


def shell_commands(block: Block) -> list[Command]:
    """The commands of a shell block (a block without a language holds commands too), comments dropped."""
    if block.language not in ("", "bash"):
        return []
    commands = []
    for offset, line in enumerate(block.text.replace("\\\n", " ").splitlines()):
        if block.language == "" and not PROGRAM.match(line):
            continue
        words = shlex.split(line, comments=True)
        while words:
            part = words[: words.index("&&")] if "&&" in words else words
            words = words[len(part) + 1 :]
            env = tuple(tuple(w.split("=", 1)) for w in part if re.match(r"^[A-Z_]+=", w))
            rest = [w.removeprefix(".venv/bin/") for w in part[len(env) :]]
            if rest:
                commands.append(Command(tuple(rest), env, block.line + 1 + offset))
    return commands


def all_commands() -> list[Command]:
    return [command for block in readme_blocks() for command in shell_commands(block)]


def click_command(words: tuple[str, ...]) -> tuple[click.Command, list[str]]:
    """The click command a ``tofu-edge`` command line runs (through sub-apps) and its arguments."""
    command, args = typer.main.get_command(app), list(words[1:])
    while isinstance(command, click.Group):
        name = args.pop(0)
        assert name in command.commands, f"tofu-edge has no command {name!r}"
        command = command.commands[name]
    return command, args


def looks_like_path(word: str) -> bool:
    return "/" in word or word.endswith(FILE_SUFFIXES)


def reads(command: Command) -> list[str]:
    """The files and folders a ``tofu-edge`` command reads: path-like arguments and the reading options' values."""
    _, args = click_command(command.words)
    values = {i + 1 for i, word in enumerate(args[:-1]) if word.startswith("-")}
    positional = [word for i, word in enumerate(args) if not word.startswith("-") and i not in values]
    found = [word for word in positional if looks_like_path(word)] + command.option(READ_OPTIONS)
    return found + [value for name, value in command.env if looks_like_path(value)]


def writes(command: Command) -> list[str]:
    """What a command writes: a ``tofu-edge`` command its output options' values; a build step (cmake, a script)
    every path it names."""
    if command.is_tofu_edge:
        return command.option(WRITE_OPTIONS)
    return [word for word in command.words[1:] if looks_like_path(word) and not word.startswith("-")]


def test_the_readme_names_the_users_own_files():
    text = README.read_text()
    assert all(f"`{name}`" in text for name in USER_FILES), "the README no longer names the files a user brings"


@pytest.mark.parametrize("command", [c for c in all_commands() if c.is_tofu_edge], ids=lambda c: f"line{c.line}")
def test_every_command_parses(command):
    """Its command exists and every option it gives is one of that command's (names, values, counts)."""
    click_cmd, args = click_command(command.words)
    try:
        click_cmd.make_context("tofu-edge", list(args), resilient_parsing=False)
    except click.exceptions.UsageError as error:
        pytest.fail(f"README.md line {command.line}: {' '.join(command.words)}: {error.format_message()}")


def test_every_file_a_command_reads_was_written_above_it():
    written: set[str] = set()
    unmet = []
    for command in all_commands():
        if command.is_tofu_edge:
            for path in reads(command):
                folders = [w.rstrip("/") + "/" for w in written]
                known = path in USER_FILES or path in written or any(path.startswith(f) for f in folders)
                if not (known or path.startswith("/")):  # an absolute path is the user's machine's
                    unmet.append(f"line {command.line}: {path}")
        written.update(writes(command))
    assert not unmet, f"README.md commands read files no earlier command writes: {unmet}"


# --- the slow part: run the blocks top to bottom --------------------------------------------------------------------

TINY_MODEL = "vit_tiny_patch16_224"  # DeiT-S's 197 tokens and 12 blocks (every README schedule fits) at 1/4 the width
README_MODEL = "deit_small_patch16_224"
QUICK = {  # options that make a command quick on a tiny model, by subcommand (the README's values are replaced)
    "bench": {"--iterations": "2", "--warmup": "1"},
    "eval": {"--limit": "4"},
    "calibrate": {"--limit": "4", "--passes": "1"},
    "tune": {"--budget-min": "1", "--limit": "4"},
}
REPLACE = {
    # tune's speed target may not be met by a tiny model at batch 1 on a loaded CPU; a fidelity target always is
    ("--speedup", "1.5"): ("--min-cosine", "0.5"),
    ("--seconds", "20"): ("--seconds", "1"),
    ("--batch", "8"): ("--batch", "2"),  # a static batch other than 1, at a quarter of the parity check's work
    ("--calibration-count", "128"): ("--calibration-count", "12"),  # the stand-in photos/ holds 12
}
PHOTOS = 12


def needs(command: Command) -> str | None:
    """Why ``command`` cannot run here (a GPU, TensorRT, TensorRT-RTX, a file of the user's machine), or None."""
    import importlib.util

    import torch

    words = " ".join(command.words)
    if "--device cuda" in words and not torch.cuda.is_available():
        return "needs a CUDA GPU"
    trt = command.words[1:2] == ("build",) or ".engine" in words or "--plugins" in words
    if trt and (importlib.util.find_spec("tensorrt") is None or not torch.cuda.is_available()):
        return "needs TensorRT and a GPU"
    if "--tensorrt-rtx" in words and importlib.util.find_spec("tensorrt_rtx") is None:
        return "needs TensorRT-RTX"
    if any(value.startswith("/") for _, value in command.env):
        return "names a file of the user's machine"
    return None


def quick_args(words: tuple[str, ...]) -> list[str]:
    """The arguments of a ``tofu-edge`` command for the tiny run: the tiny model, and `QUICK` and `REPLACE`."""
    args = [TINY_MODEL if word == README_MODEL else word for word in words[1:]]
    for (name, value), (new_name, new_value) in REPLACE.items():
        for i in range(len(args) - 1):
            if args[i : i + 2] == [name, value]:
                args[i : i + 2] = [new_name, new_value]
    timed_by_seconds = "--seconds" in args
    for name, value in QUICK.get(args[0], {}).items():
        if name in args:
            args[args.index(name) + 1] = value
        elif not (timed_by_seconds and name == "--iterations"):
            args += [name, value]
    return args


def make_user_files(folder: Path) -> None:
    """Stand-ins for the files the README says the user brings (`USER_FILES`): foolbox's ImageNet photos where it
    is installed (calibrating INT8 ranges on noise would fail the export's parity check, as it should), random
    images elsewhere, and the tiny model's seeded weights."""
    import shutil

    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    import tofu_edge
    from tofu_edge.images import bundled_photo_folder

    bundled = bundled_photo_folder()
    photos = sorted(bundled.glob("imagenet_*.jpg"))[:PHOTOS] if bundled is not None else []
    rng = np.random.default_rng(0)

    def image(path: Path, index: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if index < len(photos):
            shutil.copyfile(photos[index], path)
        else:
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)

    for index in range(PHOTOS):
        image(folder / "photos" / f"photo_{index}.jpg", index)
        image(folder / "imagenet_val" / ("n01" if index % 2 else "n02") / f"val_{index}.jpg", index)
    image(folder / "cat.jpg", 0)
    torch.manual_seed(0)
    save_file(tofu_edge.create_model(TINY_MODEL).state_dict(), str(folder / "weights.safetensors"))


@pytest.mark.slow
def test_the_readme_runs_top_to_bottom(tmp_path, monkeypatch):
    """Every block in order on a tiny model, in a fresh folder holding stand-ins for the user's files: `tofu-edge`
    commands through the CLI (installs, builds and the test run itself are what this test runs in), Python blocks
    in one namespace, as a reader pastes them."""
    pytest.importorskip("safetensors")
    from typer.testing import CliRunner

    make_user_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    ran = 0
    for block in readme_blocks():
        if block.skip is not None:
            continue
        if block.language == "python":
            code = block.text.replace(README_MODEL, TINY_MODEL)
            exec(compile(code, f"README.md:{block.line}", "exec"), namespace)
            ran += 1
        for command in shell_commands(block):
            if not command.is_tofu_edge or needs(command) is not None:
                continue
            result = CliRunner().invoke(app, quick_args(command.words), env=dict(command.env))
            assert result.exit_code == 0, f"README.md line {command.line}: {' '.join(command.words)}\n{result.output}"
            ran += 1
    assert ran > 20
