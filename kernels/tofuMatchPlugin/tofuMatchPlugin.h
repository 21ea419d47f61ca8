/*
 * TofuMatch: the matching of one fusion step (tofu_edge/ops/match.py from the scores on).
 *
 * Input 0  scores   [B, |A|, |B|]  fp32 | fp16, linear
 * Output 0 order    [B, num_tokens] int32: [prefix, unm, B positions, source positions]
 * Output 1 dst_slot [B, r]          int32: output slot of each source's destination
 * Attributes (INT): num_tokens, num_prefix, r. Names and version: tofu_edge/export/plugin_specs.json.
 */
#pragma once

#include "tofuPluginUtils.h"

#include <NvInferRuntime.h>

namespace tofu_edge
{
namespace plugin
{

class TofuMatchPlugin : public nvinfer1::IPluginV3,
                        public nvinfer1::IPluginV3OneCore,
                        public nvinfer1::IPluginV3OneBuild,
                        public nvinfer1::IPluginV3OneRuntime
{
public:
    //! Takes attributes that passed checkMatchAttributes, in the order of spec::TofuMatch::kATTRIBUTE_NAMES.
    explicit TofuMatchPlugin(int32_t const* attributes);
    TofuMatchPlugin(TofuMatchPlugin const& other) = default;
    TofuMatchPlugin& operator=(TofuMatchPlugin const&) = delete;
    ~TofuMatchPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    int32_t numTokens() const noexcept;
    int32_t numPrefix() const noexcept;
    int32_t r() const noexcept;
    //! 0 if scores dims (-1 = not known yet) fit the attributes, else logs why and returns -1.
    int32_t checkScoreDims(nvinfer1::Dims const& dims) const noexcept;

    int32_t mAttributes[spec::TofuMatch::kNB_ATTRIBUTES];
    IntFields mFields;
};

class TofuMatchPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    TofuMatchPluginCreator();

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    IntFields mFieldNames;
};

} // namespace plugin
} // namespace tofu_edge
