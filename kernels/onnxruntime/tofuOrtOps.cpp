/*
 * libtofu_edge_ort: the entry point onnxruntime calls (RegisterCustomOps, what
 * SessionOptions.register_custom_ops_library looks up) and four C functions that say what the library was
 * built from, so that a loader can tell a stale build from a current one (tofu_edge/export/ort_ops.py).
 * These five are the only exports (tofuOrtOps.map).
 */
#include "tofuOrtBuildInfo.h"
#include "tofuOrtNode.h"
#include "tofuOrtOps.h"
#include "tofuPluginSpecs.h"

#include <string>

#define TOFU_ORT_EXPORT extern "C" __attribute__((visibility("default")))

namespace tofu_edge
{
namespace ort
{
namespace
{

//! The status that refuses an onnxruntime without API version ORT_API_VERSION. It has to be made by the
//! runtime's own CreateStatus: every OrtApi starts with it (the struct only grows), so any older version's will
//! do. Null (registration "succeeds", and the session then fails on the unknown ops) only if none answers.
OrtStatus* olderRuntimeStatus(OrtApiBase const* base) noexcept
{
    std::string message;
    try
    {
        char const* version = base->GetVersionString != nullptr ? base->GetVersionString() : nullptr;
        message = std::string("tofu_edge_ort: onnxruntime ") + (version != nullptr ? version : "?")
            + " is older than 1." + std::to_string(ORT_API_VERSION)
            + ", the version this library was built for (ORT API " + std::to_string(ORT_API_VERSION)
            + "): update onnxruntime, or build the library on its own headers";
    }
    catch (...)
    {
        message.clear(); // out of memory: the short text below
    }
    for (uint32_t v = ORT_API_VERSION - 1; v >= 1; --v)
    {
        if (OrtApi const* older = base->GetApi(v))
        {
            return older->CreateStatus(
                ORT_FAIL, message.empty() ? "tofu_edge_ort: this onnxruntime is too old" : message.c_str());
        }
    }
    return nullptr;
}

//! The domain of plugin_specs.json with the four ops, made once and shared by every session's options; like
//! the ops, never released (sessions refer to it).
OrtCustomOpDomain* tofuDomain()
{
    static OrtCustomOpDomain* const domain = [] {
        Ort::CustomOpDomain created(spec::kONNX_DOMAIN);
        for (FloatType type : {FloatType::kFLOAT, FloatType::kHALF})
        {
            created.Add(matchOp(type));
            created.Add(mergeOp(type));
        }
        return created.release();
    }();
    return domain;
}

} // namespace
} // namespace ort
} // namespace tofu_edge

TOFU_ORT_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, OrtApiBase const* base)
{
    if (base == nullptr || options == nullptr)
    {
        return nullptr; // nothing to report through: onnxruntime never passes null
    }
    OrtApi const* api = base->GetApi(ORT_API_VERSION);
    if (api == nullptr)
    {
        return tofu_edge::ort::olderRuntimeStatus(base);
    }
    static bool const initialized = (Ort::InitApi(api), true); // once: the same pointer every time
    static_cast<void>(initialized);
    try
    {
        Ort::UnownedSessionOptions(options).Add(tofu_edge::ort::tofuDomain());
        return nullptr;
    }
    catch (...)
    {
        return tofu_edge::ort::toStatus();
    }
}

//! Hex SHA-256 of the plugin_specs.json the library was built from.
TOFU_ORT_EXPORT char const* tofu_ort_contract_sha256()
{
    return tofu_edge::ort::build::kCONTRACT_SHA256;
}

//! The repository-relative paths of the files that define the library's behaviour, ';'-separated, in a fixed
//! order (kernels/onnxruntime/CMakeLists.txt lists them).
TOFU_ORT_EXPORT char const* tofu_ort_sources()
{
    return tofu_edge::ort::build::kSOURCES;
}

//! Hex SHA-256 over "<path>\n<hex SHA-256 of the file>\n" for each of tofu_ort_sources(), in order.
TOFU_ORT_EXPORT char const* tofu_ort_sources_sha256()
{
    return tofu_edge::ort::build::kSOURCES_SHA256;
}

//! The ORT_API_VERSION of the headers it was built on: the oldest onnxruntime it runs on is 1.<that>.
TOFU_ORT_EXPORT int tofu_ort_api_version()
{
    return ORT_API_VERSION;
}
