/*
 * libtofu_edge_kernels: the two launchers the TensorRT plugins call (launchTofuMatch, launchTofuMerge) behind a
 * small C ABI, for any caller that holds device memory: Python through ctypes over torch CUDA tensors
 * (benchmarks/gpu/cuda_kernels.py), C or C++ programs. No TensorRT is needed to build or load it.
 *
 * Every launch function is asynchronous on `stream` and returns a cudaError_t as int (0 = cudaSuccess);
 * tofu_kernels_error_string turns it into text. Invalid sizes, attributes or type codes give
 * cudaErrorInvalidValue (1) before anything is launched; tofu_kernels_match_problem / _merge_problem say why.
 * Tensors are dense row-major, on the device of the stream's context; indices are int32.
 */
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this ABI; changes when a signature or a code changes. */
#define TOFU_KERNELS_ABI_VERSION 1

/* Element type codes of the float tensors (tofu_edge::FloatType). */
#define TOFU_KERNELS_FLOAT32 0
#define TOFU_KERNELS_FLOAT16 1

int32_t tofu_kernels_abi_version(void);

/* TofuMatch: order [batch, num_tokens] and dst_slot [batch, r] (int32) from scores [batch, |A|, |B|]. */
int tofu_kernels_match(void const* scores, int32_t dtype, int32_t batch, int32_t num_tokens, int32_t num_prefix,
    int32_t r, int32_t* order, int32_t* dst_slot, cudaStream_t stream);

/* TofuMerge: x_out [batch, num_tokens - r, channels] and size_out [batch, num_tokens - r, 1] from x
 * [batch, num_tokens, channels], size [batch, num_tokens, 1] (all of type dtype), order and dst_slot.
 * mode: the "modes" codes of tofu_edge/export/plugin_specs.json (0 prune, 1 mean, 2 mlerp). */
int tofu_kernels_merge(void const* x, void const* size, int32_t const* order, int32_t const* dst_slot, int32_t dtype,
    int32_t batch, int32_t num_tokens, int32_t channels, int32_t r, int32_t mode, void* x_out, void* size_out,
    cudaStream_t stream);

/* Why the attributes are not a valid step (static text), or NULL when they are: the plugins' own checks. */
char const* tofu_kernels_match_problem(int32_t num_tokens, int32_t num_prefix, int32_t r);
char const* tofu_kernels_merge_problem(int32_t num_tokens, int32_t r, int32_t mode);

/* Text of a status returned above (cudaGetErrorString of the library's own CUDA runtime). */
char const* tofu_kernels_error_string(int status);

/* The CUDA runtime linked into the library and the installed driver (0 when there is none), as
 * cudaRuntimeGetVersion / cudaDriverGetVersion: 1000 * major + 10 * minor. Return a status. */
int tofu_kernels_runtime_version(int32_t* version);
int tofu_kernels_driver_version(int32_t* version);

#ifdef __cplusplus
}
#endif
