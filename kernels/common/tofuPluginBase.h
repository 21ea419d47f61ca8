/*
 * The IPluginV3 boilerplate both plugins share, written once (CRTP):
 *
 *   PluginBase<Plugin, Spec>   the four interfaces; name, version and namespace from the spec; the INT
 *                              attributes, stored, serialized (getFieldsToSerialize), copied by clone() and
 *                              attachToContext(); no workspace;
 *   PluginCreatorBase<Plugin>  the IPluginCreatorV3One: field names from the spec; createPlugin reads the INT
 *                              attributes, checks them, logs why they are invalid or makes the plugin.
 *
 * A plugin derives from PluginBase<Plugin, spec::Name> and supplies only what is its own: output types and
 * shapes, formats, the checks of configurePlugin / onShapeChange, enqueue, and two statics the creator calls:
 *
 *   static char const* checkAttributes(int32_t const* attributes) noexcept;   // nullptr when valid
 *   static void describeAttributes(int32_t const* attributes, char* buffer, size_t capacity) noexcept;
 *
 * Attributes are int32 in the order of Spec::kATTRIBUTE_NAMES. Every method TensorRT calls is noexcept; the
 * ones that allocate (clone, createPlugin) run inside guarded(), so no exception crosses them.
 */
#pragma once

#include "tofuPluginUtils.h"

#include <NvInferRuntime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace tofu_edge
{
namespace plugin
{

//! Logs "<what> (<attributes as Plugin describes them>): <detail>" as an error of Plugin.
template <typename Plugin>
void logInvalidAttributes(char const* what, int32_t const* attributes, char const* detail) noexcept
{
    char described[256];
    Plugin::describeAttributes(attributes, described, sizeof(described));
    char message[512];
    formatMessage(message, sizeof(message), "%s (%s): %s", what, described, detail);
    logError(Plugin::Spec::kNAME, message);
}

template <typename Derived, typename SpecType>
class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime
{
public:
    //! The plugin's constants, generated from plugin_specs.json (tofuPluginSpecs.h).
    using Spec = SpecType;

    PluginBase& operator=(PluginBase const&) = delete;
    ~PluginBase() override = default;

    // IPluginV3

    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        return guarded<nvinfer1::IPluginV3*>(
            Spec::kNAME, nullptr, [this] { return new Derived(static_cast<Derived const&>(*this)); });
    }

    // IPluginV3OneCore

    char const* getPluginName() const noexcept override
    {
        return Spec::kNAME;
    }

    char const* getPluginVersion() const noexcept override
    {
        return Spec::kVERSION;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return spec::kNAMESPACE;
    }

    // IPluginV3OneBuild

    int32_t getNbOutputs() const noexcept override
    {
        return Spec::kNB_OUTPUTS;
    }

    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
        nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept override
    {
        return 0;
    }

    // IPluginV3OneRuntime

    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override
    {
        return clone();
    }

    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        return mFields.collection(mAttributes);
    }

protected:
    //! Takes attributes that passed Derived::checkAttributes.
    explicit PluginBase(int32_t const* attributes)
        : mFields(Spec::kATTRIBUTE_NAMES, Spec::kNB_ATTRIBUTES)
    {
        std::copy(attributes, attributes + Spec::kNB_ATTRIBUTES, mAttributes);
    }

    PluginBase(PluginBase const& other) = default;

    //! The attribute at Spec::kATTR_INDEX_<NAME>.
    int32_t attribute(int32_t index) const noexcept
    {
        return mAttributes[index];
    }

    //! Logs "<what> (<this plugin's attributes>): <detail>" as an error.
    void logInvalid(char const* what, char const* detail) const noexcept
    {
        logInvalidAttributes<Derived>(what, mAttributes, detail);
    }

    //! Logs message as an error of this plugin and returns -1, TensorRT's failure status.
    static int32_t fail(char const* message) noexcept
    {
        logError(Spec::kNAME, message);
        return -1;
    }

    //! enqueue's status: 0 if the kernel launched, else the CUDA error is logged and -1 returned.
    static int32_t launchStatus(cudaError_t status) noexcept
    {
        return status == cudaSuccess ? 0 : fail(cudaGetErrorString(status));
    }

private:
    int32_t mAttributes[Spec::kNB_ATTRIBUTES];
    IntFields mFields;
};

template <typename Plugin>
class PluginCreatorBase : public nvinfer1::IPluginCreatorV3One
{
public:
    using Spec = typename Plugin::Spec;

    PluginCreatorBase()
        : mFieldNames(Spec::kATTRIBUTE_NAMES, Spec::kNB_ATTRIBUTES)
    {
    }

    nvinfer1::IPluginV3* createPlugin(char const* /*name*/, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase /*phase*/) noexcept override
    {
        return guarded<nvinfer1::IPluginV3*>(Spec::kNAME, nullptr, [&]() -> nvinfer1::IPluginV3* {
            int32_t attributes[Spec::kNB_ATTRIBUTES] = {};
            if (!readIntAttributes(fc, Spec::kNAME, Spec::kATTRIBUTE_NAMES, Spec::kNB_ATTRIBUTES, attributes))
            {
                return nullptr;
            }
            if (char const* problem = Plugin::checkAttributes(attributes))
            {
                logInvalidAttributes<Plugin>("invalid attributes", attributes, problem);
                return nullptr;
            }
            return new Plugin(attributes);
        });
    }

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return mFieldNames.collection(nullptr);
    }

    char const* getPluginName() const noexcept override
    {
        return Spec::kNAME;
    }

    char const* getPluginVersion() const noexcept override
    {
        return Spec::kVERSION;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return spec::kNAMESPACE;
    }

private:
    IntFields mFieldNames;
};

} // namespace plugin
} // namespace tofu_edge
