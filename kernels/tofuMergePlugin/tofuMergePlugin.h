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
 * tofu_edge/export/plugin_specs.json.
 */
#pragma once

#include "tofuPluginUtils.h"

#include <NvInferRuntime.h>

namespace tofu_edge
{
namespace plugin
{

class TofuMergePlugin : public nvinfer1::IPluginV3,
                        public nvinfer1::IPluginV3OneCore,
                        public nvinfer1::IPluginV3OneBuild,
                        public nvinfer1::IPluginV3OneRuntime
{
public:
    //! Takes attributes that passed checkMergeAttributes, in the order of spec::TofuMerge::kATTRIBUTE_NAMES.
    explicit TofuMergePlugin(int32_t const* attributes);
    TofuMergePlugin(TofuMergePlugin const& other) = default;
    TofuMergePlugin& operator=(TofuMergePlugin const&) = delete;
    ~TofuMergePlugin() override = default;

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
    int32_t r() const noexcept;
    int32_t mode() const noexcept;
    //! 0 if the input dims (-1 = not known yet) fit the attributes and each other, else logs why and returns -1.
    int32_t checkInputDims(nvinfer1::Dims const* dims, int32_t nbInputs) const noexcept;

    int32_t mAttributes[spec::TofuMerge::kNB_ATTRIBUTES];
    IntFields mFields;
};

class TofuMergePluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    TofuMergePluginCreator();

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
