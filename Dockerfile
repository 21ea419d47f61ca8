# syntax=docker/dockerfile:1
# tofu-edge with TensorRT: the plugin library, the C++ app (tofu_edge_run) and the Python package in one image.
#
#   docker build -t tofu-edge .                                     # desktop/server GPU (x86_64 or SBSA)
#   docker build -t tofu-edge:jetson --build-arg TARGET=jetson .    # Jetson Orin, JetPack 6.1+, built on the device
#   docker run --rm --gpus all -v "$PWD/out:/work" tofu-edge \
#       tofu-edge build /work/deit_s_r13.onnx --output /work/deit_s_r13.engine --fp16
#
# On a Jetson, run with `--runtime nvidia`. BuildKit (the default builder) builds only the stages TARGET needs.
# See export/README.md for versions, drivers and what each base image ships.

# desktop: nvcr.io/nvidia/tensorrt (TensorRT 10.x, CUDA, cuDNN, Python 3); jetson: nvcr.io/nvidia/l4t-jetpack.
ARG TARGET=desktop
# NGC release 25.01: TensorRT 10.8, CUDA 12.8, Ubuntu 24.04, Python 3.12 (needs an R570+ driver, or a data-centre
# driver with CUDA forward compatibility).
ARG TRT_TAG=25.01
# L4T r36.4.0 = JetPack 6.1: TensorRT 10.3, CUDA 12.6, Ubuntu 22.04, Python 3.10.
ARG L4T_TAG=r36.4.0

FROM nvcr.io/nvidia/tensorrt:${TRT_TAG}-py3 AS base-desktop
# Turing to Hopper; add 100/120 (Blackwell) with a CUDA 12.8+ base through --build-arg CUDA_ARCHITECTURES.
# Ubuntu 24.04 marks the system Python as externally managed; this image is the environment, so pip may install.
ENV TOFU_CUDA_ARCHITECTURES="75;80;86;89;90" \
    TOFU_CUDA_PYTHON_VERSION=12.8.0 \
    PIP_BREAK_SYSTEM_PACKAGES=1

FROM base-desktop AS torch-desktop
# torch is only needed to export ONNX (TensorRT runs the engines): the CPU wheel keeps the image small.
RUN python3 -m pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        torch==2.6.0 torchvision==0.21.0

FROM nvcr.io/nvidia/l4t-jetpack:${L4T_TAG} AS base-jetson
ENV TOFU_CUDA_ARCHITECTURES=87 \
    TOFU_CUDA_PYTHON_VERSION=12.6.2.post1
# The JetPack apt repository is versioned by the L4T release, so its packages are pinned by the base image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-pip python3-dev python3-libnvinfer libnvinfer-dev \
    && rm -rf /var/lib/apt/lists/*

FROM base-jetson AS torch-jetson
# PyPI's aarch64 torch has no Jetson (iGPU) CUDA support: take NVIDIA's Jetson build of torch and torchvision from
# the Jetson AI Lab index for this JetPack (JetPack 6.1/6.2: jp6/cu126), or point JETSON_TORCH_INDEX elsewhere.
ARG JETSON_TORCH_INDEX=https://pypi.jetson-ai-lab.io/jp6/cu126
RUN python3 -m pip install --no-cache-dir --index-url "${JETSON_TORCH_INDEX}" torch==2.5.0 torchvision==0.20.0

# torch-${TARGET} is one of the stages above; hadolint cannot resolve the ARG and takes it for an untagged image.
# hadolint ignore=DL3006
FROM torch-${TARGET} AS app
# Empty: the target's default (TOFU_CUDA_ARCHITECTURES); e.g. --build-arg CUDA_ARCHITECTURES="89" for one GPU.
ARG CUDA_ARCHITECTURES=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/tofu-edge/src
RUN python3 -m pip install --no-cache-dir cmake==3.31.6 "cuda-python==${TOFU_CUDA_PYTHON_VERSION}"

# The plugin library: headers and CUDA from the base image; the plugin contract lives in tofu_edge/export.
COPY kernels kernels
COPY tofu_edge/export/plugin_specs.json tofu_edge/export/plugin_specs.json
RUN cmake -S kernels -B build/kernels \
        -DTensorRT_INCLUDE_DIR="/usr/include/$(uname -m)-linux-gnu" \
        -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES:-${TOFU_CUDA_ARCHITECTURES}}" \
        -DTOFU_BUILD_HOST_TESTS=OFF \
    && cmake --build build/kernels -j "$(nproc)" \
    && cmake --install build/kernels --prefix /opt/tofu-edge

# The C++ app, linked against the base image's libnvinfer and cudart.
COPY export export
RUN cmake -S export/cpp -B build/app -DTOFU_EDGE_BUILD_TESTS=OFF \
    && cmake --build build/app -j "$(nproc)" \
    && cmake --install build/app --prefix /opt/tofu-edge

# The Python package (TensorRT's Python bindings come with the base image, not from pip).
COPY pyproject.toml README.md ./
COPY tofu_edge tofu_edge
RUN python3 -m pip install --no-cache-dir .

ENV PATH=/opt/tofu-edge/bin:${PATH} \
    TOFU_EDGE_PLUGINS=/opt/tofu-edge/lib/libtofu_edge_plugins.so
WORKDIR /work
CMD ["tofu-edge", "--help"]
