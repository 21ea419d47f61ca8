# Finds the TensorRT public headers (NvInferRuntime.h): only headers, the plugin library never links libnvinfer.
#
# Order: -DTensorRT_INCLUDE_DIR=..., then -DTensorRT_ROOT=... (or the TensorRT_ROOT environment variable),
# then the system paths (Debian/JetPack packages put them in /usr/include/<triplet>), then, for machines
# without TensorRT, the copy of the TensorRT 10.14 headers that the PyPI package `kernel-lens` ships, looked
# up with TOFU_PYTHON (default: the repository's .venv, else the Python found by CMake).
#
# Sets TensorRT_INCLUDE_DIR and TensorRT_VERSION; stops with a clear message on TensorRT < 10 (no IPluginV3).

set(TensorRT_ROOT "$ENV{TensorRT_ROOT}" CACHE PATH "TensorRT install prefix (holds include/NvInferRuntime.h)")

find_path(TensorRT_INCLUDE_DIR NAMES NvInferRuntime.h
  HINTS "${TensorRT_ROOT}"
  PATH_SUFFIXES include include/tensorrt
  DOC "Directory of the TensorRT headers (NvInfer.h, NvInferRuntimePlugin.h)")

if(NOT TensorRT_INCLUDE_DIR)
  set(_tofu_python "${TOFU_PYTHON}")
  if(NOT _tofu_python AND EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/../.venv/bin/python")
    set(_tofu_python "${CMAKE_CURRENT_SOURCE_DIR}/../.venv/bin/python")
  endif()
  if(NOT _tofu_python)
    find_package(Python3 COMPONENTS Interpreter QUIET)
    set(_tofu_python "${Python3_EXECUTABLE}")
  endif()
  if(_tofu_python)
    # find_spec locates the package without importing it (kernel_lens imports torch and triton).
    execute_process(
      COMMAND "${_tofu_python}" -c
        "import importlib.util, os; s = importlib.util.find_spec('kernel_lens'); print(os.path.join(os.path.dirname(s.origin), 'include', 'tensorrt') if s else '')"
      OUTPUT_VARIABLE _tofu_kernel_lens_dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(_tofu_kernel_lens_dir AND EXISTS "${_tofu_kernel_lens_dir}/NvInferRuntime.h")
      set(TensorRT_INCLUDE_DIR "${_tofu_kernel_lens_dir}" CACHE PATH
          "Directory of the TensorRT headers (from kernel-lens)" FORCE)
      message(STATUS "tofu-edge: TensorRT headers from the kernel-lens package (${_tofu_python})")
    endif()
  endif()
endif()

if(NOT TensorRT_INCLUDE_DIR OR NOT EXISTS "${TensorRT_INCLUDE_DIR}/NvInferRuntime.h")
  message(FATAL_ERROR
    "TensorRT headers not found. Pass -DTensorRT_ROOT=<TensorRT prefix> or -DTensorRT_INCLUDE_DIR=<dir with "
    "NvInferRuntime.h>; on a machine without TensorRT, `pip install kernel-lens==2.0.1` ships the TensorRT 10.14 "
    "headers (found through -DTOFU_PYTHON=<python of that environment>).")
endif()

file(READ "${TensorRT_INCLUDE_DIR}/NvInferVersion.h" _tofu_trt_version_h)
foreach(_part MAJOR MINOR PATCH)
  # TensorRT 10 defines TRT_<PART>_ENTERPRISE and aliases NV_TENSORRT_<PART> to it; TensorRT 8 defines the latter.
  if(_tofu_trt_version_h MATCHES "#define TRT_${_part}_ENTERPRISE ([0-9]+)")
    set(_tofu_trt_${_part} "${CMAKE_MATCH_1}")
  elseif(_tofu_trt_version_h MATCHES "#define NV_TENSORRT_${_part} ([0-9]+)")
    set(_tofu_trt_${_part} "${CMAKE_MATCH_1}")
  else()
    set(_tofu_trt_${_part} 0)
  endif()
endforeach()
set(TensorRT_VERSION "${_tofu_trt_MAJOR}.${_tofu_trt_MINOR}.${_tofu_trt_PATCH}")
if(_tofu_trt_MAJOR LESS 10)
  message(FATAL_ERROR
    "TensorRT ${TensorRT_VERSION} at ${TensorRT_INCLUDE_DIR} has no IPluginV3, which these plugins need "
    "(TensorRT >= 10; JetPack >= 6.1). On JetPack 5 / 6.0 (TensorRT 8.5/8.6) export the portable ONNX flavour "
    "instead: it needs no plugin.")
endif()
