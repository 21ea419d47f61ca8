#include "tofuOrtNode.h"

#include "tofuPluginSpecs.h"

#include <limits>
#include <optional>
#include <utility>

namespace tofu_edge
{
namespace ort
{
namespace
{

// The string attributes every plugin node carries next to its INT attributes (plugin_spec.plugin_attributes).
constexpr char const* kVERSION_ATTRIBUTE = "plugin_version";
constexpr char const* kNAMESPACE_ATTRIBUTE = "plugin_namespace";

std::string nodeName(Ort::ConstKernelInfo const& info)
{
    try
    {
        return info.GetNodeName();
    }
    catch (Ort::Exception const&)
    {
        return ""; // only for messages: an unnamed node reads the same
    }
}

std::optional<int64_t> intAttribute(Ort::ConstKernelInfo const& info, char const* name)
{
    try
    {
        return info.GetAttribute<int64_t>(name);
    }
    catch (Ort::Exception const&)
    {
        return std::nullopt; // missing, or not an INT
    }
}

std::optional<std::string> stringAttribute(Ort::ConstKernelInfo const& info, char const* name)
{
    try
    {
        return info.GetAttribute<std::string>(name);
    }
    catch (Ort::Exception const&)
    {
        return std::nullopt;
    }
}

//! A plugin_version / plugin_namespace must be the spec's: TensorRT finds the plugin by both, so a node that
//! names another version or namespace would run here and fail there.
void checkStringAttribute(Ort::ConstKernelInfo const& info, char const* name, char const* expected,
    std::string const& where)
{
    std::optional<std::string> const value = stringAttribute(info, name);
    if (!value)
    {
        fail(where + ": attribute '" + name + "' is missing or not a STRING (plugin_specs.json says '" + expected
            + "')");
    }
    if (*value != expected)
    {
        fail(where + ": " + name + " is '" + *value + "', but this library implements '" + expected
            + "' (plugin_specs.json)");
    }
}

} // namespace

void fail(std::string message, OrtErrorCode code)
{
    throw Ort::Exception(std::move(message), code);
}

OrtStatusPtr toStatus() noexcept
{
    try
    {
        throw;
    }
    catch (Ort::Exception const& e)
    {
        return Ort::Status(e).release();
    }
    catch (std::exception const& e)
    {
        return Ort::Status(e).release();
    }
    catch (...)
    {
        return Ort::Status("tofu_edge_ort: unknown exception", ORT_FAIL).release();
    }
}

std::string formatShape(std::vector<int64_t> const& shape)
{
    std::string text = "[";
    for (size_t i = 0; i < shape.size(); ++i)
    {
        text += (i == 0 ? "" : ", ") + std::to_string(shape[i]);
    }
    return text + "]";
}

NodeAttributes::NodeAttributes(OrtKernelInfo const* info, char const* opName, char const* version,
    char const* const* names, int32_t count)
{
    Ort::ConstKernelInfo const kernelInfo(info);
    std::vector<std::optional<int64_t>> raw;
    std::string described;
    for (int32_t i = 0; i < count; ++i)
    {
        raw.push_back(intAttribute(kernelInfo, names[i]));
        described += (i == 0 ? "" : ", ") + std::string(names[i]) + " = "
            + (raw.back() ? std::to_string(*raw.back()) : std::string("?"));
    }
    std::string const node = nodeName(kernelInfo);
    mWhere = std::string(opName) + (node.empty() ? "" : " node '" + node + "'") + " (" + described + ")";

    for (int32_t i = 0; i < count; ++i)
    {
        if (!raw[i])
        {
            fail(mWhere + ": attribute '" + names[i] + "' is missing or not an INT");
        }
        if (*raw[i] < std::numeric_limits<int32_t>::min() || *raw[i] > std::numeric_limits<int32_t>::max())
        {
            fail(mWhere + ": " + names[i] + " does not fit in int32");
        }
        mValues.push_back(static_cast<int32_t>(*raw[i]));
    }
    checkStringAttribute(kernelInfo, kVERSION_ATTRIBUTE, version, mWhere);
    checkStringAttribute(kernelInfo, kNAMESPACE_ATTRIBUTE, spec::kNAMESPACE, mWhere);
}

void NodeAttributes::check(char const* problem) const
{
    if (problem != nullptr)
    {
        fail(mWhere + ": " + problem);
    }
}

void checkShape(std::vector<int64_t> const& shape, std::vector<int64_t> const& expected, char const* name,
    char const* pattern, std::string const& where)
{
    bool matches = shape.size() == expected.size();
    for (size_t i = 0; matches && i < shape.size(); ++i)
    {
        matches = expected[i] < 0 || shape[i] == expected[i];
    }
    if (!matches)
    {
        std::string wanted = "[";
        for (size_t i = 0; i < expected.size(); ++i)
        {
            wanted += (i == 0 ? "" : ", ") + (expected[i] < 0 ? std::string("*") : std::to_string(expected[i]));
        }
        fail(where + ": input " + name + " has shape " + formatShape(shape) + ", expected " + pattern + " = " + wanted
            + "]");
    }
}

} // namespace ort
} // namespace tofu_edge
