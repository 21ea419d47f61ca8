/*
 * TofuMerge: applies a TofuMatch (tofu_edge/ops/merge.py fuse_tokens): prune, size-weighted mean or MLERP.
 *
 * Input 0  x        [B, num_tokens, C]     fp32 | fp16, linear
 * Input 1  size     [B, num_tokens, 1]     same type as x
 * Input 2  order    [B, num_tokens]        int32, from TofuMatch
 * Input 3  dst_slot [B, r]                 int32, from TofuMatch
 * Output 0 x_out    [B, num_tokens - r, C] type of x
 * Output 1 size_out [B, num_tokens - r, 1] type of x
 * Attributes (INT): num_tokens, r, mode (0 prune, 1 mean, 2 mlerp). Names, version, mode values:
 * tofu_edge/export/plugin_specs.json. Identity, attributes, serialization, clone and the creator:
 * common/tofuPluginBase.h.
 */
#pragma once

#include "tofuPluginBase.h"

namespace tofu_edge
{
namespace plugin
{

class TofuMergePlugin : public PluginBase<TofuMergePlugin, spec::TofuMerge>
{
public:
    //! Takes attributes that passed checkAttributes, in the order of spec::TofuMerge::kATTRIBUTE_NAMES.
    explicit TofuMergePlugin(int32_t const* attributes)
        : PluginBase(attributes)
    {
    }

    //! Why the attributes are not a valid step (checkMergeAttributes), or nullptr.
    static char const* checkAttributes(int32_t const* attributes) noexcept;
    //! The attributes, for messages.
    static void describeAttributes(int32_t const* attributes, char* buffer, size_t capacity) noexcept;

    // IPluginV3OneBuild
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

private:
    int32_t numTokens() const noexcept
    {
        return attribute(Spec::kATTR_INDEX_NUM_TOKENS);
    }
    int32_t r() const noexcept
    {
        return attribute(Spec::kATTR_INDEX_R);
    }
    int32_t mode() const noexcept
    {
        return attribute(Spec::kATTR_INDEX_MODE);
    }
    //! 0 if the input dims (-1 = not known yet) fit the attributes and each other, else logs why and returns -1.
    int32_t checkInputDims(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept;
};

using TofuMergePluginCreator = PluginCreatorBase<TofuMergePlugin>;

} // namespace plugin
} // namespace tofu_edge
