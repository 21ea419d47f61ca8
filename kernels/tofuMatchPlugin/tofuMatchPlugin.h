/*
 * TofuMatch: the matching of one fusion step (tofu_edge/ops/match.py from the scores on).
 *
 * Input 0  scores   [B, |A|, |B|]  fp32 | fp16, linear
 * Output 0 order    [B, num_tokens] int32: [prefix, unm, B positions, source positions]
 * Output 1 dst_slot [B, r]          int32: output slot of each source's destination
 * Attributes (INT): num_tokens, num_prefix, r. Names and version: tofu_edge/export/plugin_specs.json.
 * Identity, attributes, serialization, clone and the creator: common/tofuPluginBase.h.
 */
#pragma once

#include "tofuPluginBase.h"

namespace tofu_edge
{
namespace plugin
{

class TofuMatchPlugin : public PluginBase<TofuMatchPlugin, spec::TofuMatch>
{
public:
    //! Takes attributes that passed checkAttributes, in the order of spec::TofuMatch::kATTRIBUTE_NAMES.
    explicit TofuMatchPlugin(int32_t const* attributes)
        : PluginBase(attributes)
    {
    }

    //! Why the attributes are not a valid step (checkMatchAttributes), or nullptr.
    static char const* checkAttributes(int32_t const* attributes) noexcept;
    //! The attributes and the set sizes they give, for messages.
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
    int32_t numPrefix() const noexcept
    {
        return attribute(Spec::kATTR_INDEX_NUM_PREFIX);
    }
    int32_t r() const noexcept
    {
        return attribute(Spec::kATTR_INDEX_R);
    }
    //! 0 if scores dims (-1 = not known yet) fit the attributes, else logs why and returns -1.
    int32_t checkScoreDims(nvinfer1::Dims const& dims) const noexcept;
};

using TofuMatchPluginCreator = PluginCreatorBase<TofuMatchPlugin>;

} // namespace plugin
} // namespace tofu_edge
