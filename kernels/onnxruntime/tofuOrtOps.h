/*
 * The custom ops of libtofu_edge_ort, one per plugin and float type, as RegisterCustomOps adds them to the
 * domain of plugin_specs.json. onnxruntime groups ops of one name into one schema and picks the kernel by the
 * input types, so a node of fp32 tensors runs the fp32 op, one of fp16 tensors the fp16 op.
 */
#pragma once

#include "tofuCommon.h"

#include <onnxruntime_c_api.h>

namespace tofu_edge
{
namespace ort
{

//! TofuMatch for scores of `type` (tofuOrtMatch.cpp). Created on first use, never destroyed: sessions keep
//! pointers to it for as long as they live.
OrtCustomOp const* matchOp(FloatType type);

//! TofuMerge for x and size of `type` (tofuOrtMerge.cpp); same lifetime.
OrtCustomOp const* mergeOp(FloatType type);

} // namespace ort
} // namespace tofu_edge
