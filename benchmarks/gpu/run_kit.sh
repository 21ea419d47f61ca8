#!/usr/bin/env bash
# The GPU proof kit in one command, from any folder: builds, tests and times (see benchmarks/gpu/README.md).
#   bash benchmarks/gpu/run_kit.sh [run_kit.py options]     e.g. --budget-s 400, --smoke
# Results go to $OUT (set by the device tool) or ./out/gpu-kit: gpu_kit.json, gpu_kit.log, summary.md,
# pytest_gpu.xml, plus console.log (everything printed, native stderr included).
set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out="${OUT:-./out/gpu-kit}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The cli phase runs tofu-edge's commands, which need typer and rich: a GPU machine without a package index takes
# them from wheels carried in .whl/ (prepare with: pip download typer rich -d .whl).
if [ -d .whl ] && ! "${PYTHON:-python3}" -c "import typer, rich" 2>/dev/null; then
    "${PYTHON:-python3}" -m pip install --quiet --no-index --find-links .whl typer rich || true
fi
"${PYTHON:-python3}" -m benchmarks.gpu.run_kit --output "$out" "$@" 2>&1 | tee "$out/console.log"
