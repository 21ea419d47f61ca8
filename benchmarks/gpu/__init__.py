"""The GPU proof kit: the plugin kernels without TensorRT, their tests and timings, and fused-model timings.

``bash benchmarks/gpu/run_kit.sh`` (or ``python3 -m benchmarks.gpu.run_kit``) runs all of it; see README.md here.
"""
