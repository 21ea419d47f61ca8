"""The package's layers (docs/design.md, "Layers"): no lower layer imports a higher one, and what must run without
torch imports no torch. Every import statement counts, at module level or inside a function. `benchmarks/` sits on
top: its scripts may import the package (every module and name they import must exist), never the reverse."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tofu_edge"
BENCHMARKS = PACKAGE.parent / "benchmarks"
OUTSIDE_THE_PACKAGE = ("benchmarks", "tests")  # folders of the checkout that the package must never import

# module (dotted, relative to tofu_edge) -> its layer; a module's layer is its name's longest listed prefix
LAYERS = {
    "errors": "core",
    "arch": "core",
    "config": "core",
    "plan": "core",
    "files": "core",
    "choices": "core",
    "stats": "core",
    "batches": "core",  # a static-batch model over a set of any size (numpy): exporters, measures and tools
    "versions": "core",
    "image_file": "core",  # one image file as RGB (Pillow, numpy): every reader of photos, a device's included
    "ops": "ops",
    "weights": "ops",  # seeded creation and fingerprints of torch weights: no fusion in it, usable from every layer
    "patch": "patch",
    "models": "patch",
    "checkpoint": "patch",
    "images": "patch",
    "export": "export",
    "engine": "engine",
    "measure": "measure",
    "calibrate": "tools",
    "tune": "tools",
    "visualize": "tools",
    "diffusion": "diffusion",
    "cli": "cli",
}
# layer -> layers it may import (itself included). "export-public" is the package `tofu_edge.export` itself, whose
# names (export_onnx, ort_session, ...) are the exporter's public API: measure and the tools use only that.
ALLOWED = {
    "core": {"core"},
    "ops": {"core", "ops"},
    "patch": {"core", "ops", "patch"},
    "export": {"core", "ops", "patch", "export", "export-public"},
    "engine": {"core", "engine", "export"},
    "measure": {"core", "ops", "patch", "export-public", "engine", "measure"},
    "tools": {"core", "ops", "patch", "export-public", "engine", "measure", "tools"},
    # diffusion is an exporter of its own (UNets, DiTs): it reuses the exporter's graph checks and parity
    "diffusion": {"core", "ops", "export", "export-public", "engine", "measure", "diffusion"},
    "cli": {"core", "ops", "patch", "export", "export-public", "engine", "measure", "tools", "diffusion", "cli"},
}
# what a device install (no torch, no timm) runs: these modules, and everything they import at module level
TORCH_FREE = ("core", "engine", "export.session", "export.plugin_spec", "measure.bench", "cli")
TORCH_MODULES = ("torch", "timm", "torchvision")


def layer_of(module: str) -> str:
    """Layer of ``tofu_edge.<module>``; ``tofu_edge.export`` itself (the lazy package) is its public API."""
    if module == "export":
        return "export-public"
    best = max((name for name in LAYERS if module == name or module.startswith(name + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"tofu_edge.{module} has no layer in tests/test_layers.py: add it to LAYERS")
    return LAYERS[best]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:
            found[name] = path
    return found


def imports(path: Path, module: str, top_level: bool = False) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved against ``module``); with
    ``top_level``, only what runs on import (statements outside functions and ``if TYPE_CHECKING:`` blocks)."""
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = _module_level(tree.body) if top_level else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = "tofu_edge" + ("." + package if package else "")
                anchor = ".".join(anchor.split(".")[: len(anchor.split(".")) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if base.startswith("tofu_edge"))
    return names


def _module_level(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        yield node
        for field in ("body", "orelse", "handlers", "finalbody"):
            children = getattr(node, field, None)
            if isinstance(node, ast.ClassDef) and field == "body":
                children = [c for c in node.body if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef))]
            if children:
                yield from _module_level(children)


def own_imports(path: Path, module: str, top_level: bool = False) -> set[str]:
    """The tofu_edge modules ``path`` imports, relative to tofu_edge (names that are not modules are dropped)."""
    known = modules()
    found = set()
    for name in imports(path, module, top_level):
        if name.startswith("tofu_edge."):
            relative = name.removeprefix("tofu_edge.")
            while relative and relative not in known:
                relative = relative.rpartition(".")[0]
            if relative:
                found.add(relative)
    return found


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_module_imports_a_higher_layer(module):
    path = modules()[module]
    own = layer_of(module) if module != "export" else "export"
    wrong = {
        imported: layer_of(imported)
        for imported in own_imports(path, module)
        if imported != module and layer_of(imported) not in ALLOWED[own]
    }
    assert not wrong, f"tofu_edge.{module} ({own}) imports a higher layer: {wrong}"


def torch_free_modules() -> list[str]:
    return [
        m for m in sorted(modules()) if any(m == p or m.startswith(p + ".") or LAYERS.get(m) == p for p in TORCH_FREE)
    ]


@pytest.mark.parametrize("module", torch_free_modules())
def test_what_a_device_runs_imports_no_torch_on_import(module):
    """Follows module-level imports through the package: lazy imports inside functions (the plugin flavour's torch
    reference, timm's pretrained preprocessing when installed) are allowed; tests/cli proves it end to end."""
    known, seen, todo = modules(), set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        torch_like = {n for n in imports(known[current], current, top_level=True) if n.split(".")[0] in TORCH_MODULES}
        assert not torch_like, f"importing tofu_edge.{module} imports {torch_like} (through tofu_edge.{current})"
        todo += list(own_imports(known[current], current, top_level=True))
        todo += [".".join(current.split(".")[:i]) for i in range(1, current.count(".") + 1)]  # parent packages


def test_ops_know_neither_plans_nor_exporters():
    for module in (m for m in modules() if m.startswith("ops")):
        assert not {m for m in own_imports(modules()[module], module) if m.split(".")[0] in ("plan", "export")}


def test_fusing_a_model_imports_no_exporter_or_runtime():
    code = (
        "import sys, timm, tofu_edge\n"
        "model = timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8, depth=2)\n"
        "tofu_edge.fuse(model, tofu_edge.FusionConfig(r=2))\n"
        "heavy = ('onnx', 'onnxscript', 'onnxruntime', 'onnxruntime_extensions', 'tensorrt', 'tofu_edge.export')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith('tofu_edge.export')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_the_package_imports_neither_benchmarks_nor_tests():
    for module, path in modules().items():
        wrong = {name for name in imports(path, module) if name.split(".")[0] in OUTSIDE_THE_PACKAGE}
        assert not wrong, f"tofu_edge.{module} imports {wrong}: benchmarks and tests sit above the package"


def benchmark_modules() -> dict[str, Path]:
    """``benchmarks.<name>`` -> file, for every script and helper under benchmarks/."""
    found = {}
    for path in sorted(BENCHMARKS.rglob("*.py")):
        parts = path.relative_to(BENCHMARKS.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(path: Path) -> set[tuple[str, str | None]]:
    """``(module, name)`` for every ``from module import name`` in ``path`` (``(module, None)`` for ``import
    module``), at module level or inside a function; relative imports are not used in benchmarks/."""
    found: set[tuple[str, str | None]] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: relative import of {node.module}"
            found.update((node.module or "", alias.name) for alias in node.names)
    return found


def top_level_names(path: Path) -> set[str]:
    """The names a module defines on import: functions, classes, assignments and imports outside functions."""
    names, todo = set(), list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            todo += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            todo += [child for handler in getattr(node, "handlers", []) for child in handler.body]
    return names


@pytest.mark.parametrize("module", sorted(benchmark_modules()))
def test_benchmarks_import_what_exists(module):
    """A change to the package that leaves a benchmark behind fails here, not when the study next runs (hours)."""
    known = benchmark_modules()
    missing = [
        f"{imported}.{name}" if name else imported
        for imported, name in sorted(imported_names(known[module]), key=str)
        if not _exists(imported, name, known)
    ]
    assert not missing, f"{module} imports what the package or benchmarks/ do not have: {missing}"


def _exists(module: str, name: str | None, known: dict[str, Path]) -> bool:
    """Whether ``from module import name`` (or ``import module``) can work: benchmarks/ modules are read, the
    package's are imported (its lazy packages resolve names on attribute access); other packages are not checked,
    nor a module of the package that needs an optional dependency this machine lacks."""
    root = module.split(".")[0]
    if root == "benchmarks":
        if module not in known:
            return False
        return name is None or f"{module}.{name}" in known or name in top_level_names(known[module])
    if root != "tofu_edge":
        return True
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as error:
        return not (error.name or "").startswith("tofu_edge")
    if name is None or hasattr(found, name):
        return True
    return importlib.util.find_spec(f"{module}.{name}") is not None
