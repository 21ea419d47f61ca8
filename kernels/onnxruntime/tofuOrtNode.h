/*
 * What both onnxruntime ops share: reading and checking a node's attributes when its kernel is created, error
 * messages that name the node, shape checks, the batch loop over onnxruntime's intra-op threads, and the
 * exception-to-status boundary. No exception crosses into onnxruntime: every entry point it calls
 * (CreateKernelV2, ComputeV2, RegisterCustomOps) turns one into an OrtStatus with toStatus.
 *
 * The C++ API is used with ORT_API_MANUAL_INIT (set by CMakeLists.txt): the library links no onnxruntime,
 * RegisterCustomOps hands the OrtApi to Ort::InitApi.
 */
#pragma once

#ifndef ORT_API_MANUAL_INIT
#error "build with ORT_API_MANUAL_INIT: the library takes the API from RegisterCustomOps, it links no onnxruntime"
#endif

#include "tofuCommon.h"

#include <onnxruntime_cxx_api.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace tofu_edge
{
namespace ort
{

//! The ONNX element type of tensors of T (float or tofu_edge::Half).
template <typename T>
struct ElementType;

template <>
struct ElementType<float>
{
    static constexpr ONNXTensorElementDataType kVALUE = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
};

template <>
struct ElementType<Half>
{
    static constexpr ONNXTensorElementDataType kVALUE = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
};

//! Throws the Ort::Exception that toStatus turns into an error of onnxruntime.
[[noreturn]] void fail(std::string message, OrtErrorCode code = ORT_INVALID_ARGUMENT);

//! The status of the exception being handled (call inside a catch block only).
OrtStatusPtr toStatus() noexcept;

//! "[2, 17, 8]", for messages.
std::string formatShape(std::vector<int64_t> const& shape);

//! A node's attributes, read once when onnxruntime creates its kernel: the spec's INT attributes (as int32,
//! in the order of Spec::kATTRIBUTE_NAMES) and the STRING attributes plugin_version and plugin_namespace,
//! which must be the spec's. Every error names the node as where() does.
class NodeAttributes
{
public:
    //! Reads and checks everything but the attribute values' meaning (each op checks that with the plugins'
    //! own check). Throws through fail() when an attribute is missing, not an integer in int32, or a string
    //! attribute differs from the spec.
    NodeAttributes(OrtKernelInfo const* info, char const* opName, char const* version, char const* const* names,
        int32_t count);

    int32_t operator[](int32_t index) const
    {
        return mValues[index];
    }

    //! "TofuMerge node 'merge_0' (mode = 2, num_tokens = 197, r = 13)": the start of every message.
    std::string const& where() const
    {
        return mWhere;
    }

    //! Throws "<where>: <problem>" when problem is not null (the checks' convention).
    void check(char const* problem) const;

private:
    std::vector<int32_t> mValues;
    std::string mWhere;
};

//! Throws "<where>: input <name> has shape [...], expected <pattern> = [...]" unless shape has the rank of
//! expected and its extents where expected is not negative (negative: any extent).
void checkShape(std::vector<int64_t> const& shape, std::vector<int64_t> const& expected, char const* name,
    char const* pattern, std::string const& where);

//! Runs body(item) for every item in [0, batch) on onnxruntime's intra-op threads (KernelContext_ParallelFor,
//! which runs them inline with a single thread). body runs on onnxruntime's threads, so nothing may escape
//! it: a failed item (only allocation can fail) is caught there and reported here, after all items ran.
template <typename Body>
void forEachItem(Ort::KernelContext const& context, int64_t batch, std::string const& where, Body const& body)
{
    struct Job
    {
        Body const* body;
        std::atomic<bool> failed;
    };
    Job job{&body, {false}};
    auto run = [](void* data, size_t item) noexcept {
        auto* job = static_cast<Job*>(data);
        try
        {
            (*job->body)(static_cast<int64_t>(item));
        }
        catch (...)
        {
            job->failed.store(true);
        }
    };
    context.ParallelFor(run, static_cast<size_t>(batch), 0, &job);
    if (job.failed.load())
    {
        fail(where + ": a batch item could not allocate its scratch memory", ORT_FAIL);
    }
}

} // namespace ort
} // namespace tofu_edge
