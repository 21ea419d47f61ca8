// tofu_edge_run: load the tofu-edge plugin library, deserialize a TensorRT engine, classify one input, print the
// top-k classes and the GPU latency measured with CUDA events.
//
//   tofu_edge_run ENGINE INPUT [--plugins LIB]... [--top K] [--warmup N] [--iterations N]
//                 [--mean r,g,b] [--std r,g,b] [--allow-host-code]
//
// INPUT is a binary PPM (P6) of exactly the engine's H x W (normalized here with --mean/--std, ImageNet by default)
// or a raw float32 tensor in the engine's input shape (.bin/.raw: used as it is). See export/README.md for how to
// make either from a JPEG.

#include "tensor_io.hpp"

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace
{

using tofu_edge::Normalization;

constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;
constexpr int kExitFailure = 1;

//! A usage error: bad arguments or input files (exit code 2), as opposed to a runtime failure (exit code 1).
struct UsageError : std::runtime_error
{
    using std::runtime_error::runtime_error;
};

void checkCuda(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
    {
        throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorName(status) + " ("
            + cudaGetErrorString(status) + ")");
    }
}

class Logger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            std::cerr << (severity <= Severity::kERROR ? "TensorRT error: " : "TensorRT warning: ") << msg << '\n';
        }
    }
};

struct Options
{
    std::string engine;
    std::string input;
    std::vector<std::string> plugins;
    std::size_t top{5};
    int32_t warmup{10};
    int32_t iterations{50};
    Normalization norm;
    bool allowHostCode{false};
};

constexpr char const* kUsage
    = "usage: tofu_edge_run ENGINE INPUT [--plugins LIB]... [--top K] [--warmup N] [--iterations N]\n"
      "                     [--mean r,g,b] [--std r,g,b] [--allow-host-code]\n"
      "INPUT: a binary PPM (P6) of the engine's H x W, or a raw float32 tensor (.bin/.raw) of its input shape\n"
      "example: tofu_edge_run deit_s_r13.engine cat.ppm --plugins libtofu_edge_plugins.so --top 5\n";

Options parseArgs(int argc, char** argv)
{
    Options options;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i)
    {
        std::string const arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc)
            {
                throw UsageError(arg + " needs a value");
            }
            return argv[++i];
        };
        try
        {
            if (arg == "--plugins")
                options.plugins.push_back(value());
            else if (arg == "--top")
                options.top = static_cast<std::size_t>(std::stoul(value()));
            else if (arg == "--warmup")
                options.warmup = std::stoi(value());
            else if (arg == "--iterations")
                options.iterations = std::stoi(value());
            else if (arg == "--mean")
                options.norm.mean = tofu_edge::parseTriple(value());
            else if (arg == "--std")
                options.norm.std = tofu_edge::parseTriple(value());
            else if (arg == "--allow-host-code")
                options.allowHostCode = true;
            else if (arg == "-h" || arg == "--help")
            {
                std::cout << kUsage;
                std::exit(kExitOk);
            }
            else if (!arg.empty() && arg[0] == '-')
                throw UsageError("unknown option " + arg);
            else
                positional.push_back(arg);
        }
        catch (std::logic_error const& error) // std::invalid_argument, std::out_of_range from the parsers
        {
            throw UsageError("bad value for " + arg + ": " + error.what());
        }
    }
    if (positional.size() != 2)
    {
        throw UsageError("expected ENGINE and INPUT\n" + std::string(kUsage));
    }
    if (options.iterations < 1 || options.warmup < 0 || options.top < 1)
    {
        throw UsageError("need --iterations >= 1, --warmup >= 0 and --top >= 1");
    }
    options.engine = positional[0];
    options.input = positional[1];
    return options;
}

std::vector<char> readFile(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw UsageError("engine file " + path + " cannot be read");
    }
    std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (data.empty())
    {
        throw UsageError("engine file " + path + " is empty");
    }
    return data;
}

int64_t volume(nvinfer1::Dims const& dims)
{
    return std::accumulate(dims.d, dims.d + dims.nbDims, int64_t{1}, std::multiplies<int64_t>());
}

std::string shapeText(nvinfer1::Dims const& dims)
{
    std::string text = "[";
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        text += (i ? ", " : "") + std::to_string(dims.d[i]);
    }
    return text + "]";
}

//! Device and pinned host memory of one I/O tensor.
struct Buffer
{
    std::string name;
    nvinfer1::Dims shape{};
    std::size_t bytes{0};
    void* device{nullptr};
    float* host{nullptr};

    Buffer() = default;
    Buffer(Buffer const&) = delete;
    Buffer& operator=(Buffer const&) = delete;
    Buffer(Buffer&& other) noexcept
        : name(std::move(other.name))
        , shape(other.shape)
        , bytes(other.bytes)
        , device(std::exchange(other.device, nullptr))
        , host(std::exchange(other.host, nullptr))
    {
    }
    Buffer& operator=(Buffer&&) = delete;
    ~Buffer()
    {
        cudaFree(device);
        cudaFreeHost(host);
    }
};

//! A CUDA stream and the two events that time work on it, released on every path out of run().
struct StreamTimer
{
    cudaStream_t stream{};
    cudaEvent_t start{};
    cudaEvent_t stop{};

    StreamTimer()
    {
        checkCuda(cudaStreamCreate(&stream), "cudaStreamCreate");
        checkCuda(cudaEventCreate(&start), "cudaEventCreate");
        checkCuda(cudaEventCreate(&stop), "cudaEventCreate");
    }
    StreamTimer(StreamTimer const&) = delete;
    StreamTimer& operator=(StreamTimer const&) = delete;
    ~StreamTimer()
    {
        cudaEventDestroy(stop);
        cudaEventDestroy(start);
        cudaStreamDestroy(stream);
    }

    //! Milliseconds between the last recorded start and stop events, once stop has completed.
    float elapsedMs() const
    {
        float ms = 0.0F;
        checkCuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
        checkCuda(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
        return ms;
    }
};

//! The engine's input as float32: a raw tensor as it is, a PPM normalized (its size must match the engine's).
std::vector<float> loadInput(Options const& options, nvinfer1::Dims const& shape)
{
    auto const count = static_cast<std::size_t>(volume(shape));
    try
    {
        if (!tofu_edge::endsWith(options.input, ".ppm"))
        {
            return tofu_edge::readRawTensor(options.input, count);
        }
        if (shape.nbDims != 4 || shape.d[0] != 1 || shape.d[1] != 3)
        {
            throw std::runtime_error("a PPM input needs an engine input of shape [1, 3, H, W], not " + shapeText(shape));
        }
        tofu_edge::Image const image = tofu_edge::readPpm(options.input);
        if (image.height != shape.d[2] || image.width != shape.d[3])
        {
            throw std::runtime_error(options.input + " is " + std::to_string(image.width) + "x"
                + std::to_string(image.height) + "; the engine takes " + std::to_string(shape.d[3]) + "x"
                + std::to_string(shape.d[2]) + " (resize and centre-crop it first, see export/README.md)");
        }
        return tofu_edge::normalize(image, options.norm);
    }
    catch (std::runtime_error const& error)
    {
        throw UsageError(error.what());
    }
}

int run(Options const& options)
{
    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime{nvinfer1::createInferRuntime(logger)};
    if (!runtime)
    {
        throw std::runtime_error("cannot create the TensorRT runtime");
    }
    for (auto const& plugin : options.plugins)
    {
        // IPluginV3 libraries export getCreators/setLoggerFinder, which loadLibrary registers.
        if (runtime->getPluginRegistry().loadLibrary(plugin.c_str()) == nullptr)
        {
            throw UsageError("TensorRT could not load plugin library " + plugin);
        }
    }
    runtime->setEngineHostCodeAllowed(options.allowHostCode);
    std::vector<char> const plan = readFile(options.engine);
    std::unique_ptr<nvinfer1::ICudaEngine> engine{runtime->deserializeCudaEngine(plan.data(), plan.size())};
    if (!engine)
    {
        throw UsageError("cannot deserialize " + options.engine + " (corrupt, built by another TensorRT version or "
            + "for another GPU, or its plugin library was not loaded: --plugins)");
    }
    std::unique_ptr<nvinfer1::IExecutionContext> context{engine->createExecutionContext()};
    if (!context)
    {
        throw std::runtime_error("cannot create an execution context");
    }

    std::vector<Buffer> inputs;
    std::vector<Buffer> outputs;
    for (int32_t i = 0; i < engine->getNbIOTensors(); ++i)
    {
        Buffer buffer;
        buffer.name = engine->getIOTensorName(i);
        char const* name = buffer.name.c_str();
        if (engine->getTensorDataType(name) != nvinfer1::DataType::kFLOAT)
        {
            throw UsageError("tensor " + buffer.name + " is not float32; this app handles float32 I/O only");
        }
        bool const isInput = engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
        if (isInput)
        {
            nvinfer1::Dims shape = engine->getTensorShape(name);
            if (shape.nbDims > 0 && shape.d[0] < 0)
            {
                shape.d[0] = 1; // a dynamic batch: run one image
            }
            if (!context->setInputShape(name, shape))
            {
                throw UsageError("the engine does not accept shape " + shapeText(shape) + " for " + buffer.name);
            }
        }
        (isInput ? inputs : outputs).push_back(std::move(buffer));
    }
    if (inputs.size() != 1 || outputs.empty())
    {
        throw UsageError("expected an engine with one input and at least one output");
    }
    for (auto* group : {&inputs, &outputs})
    {
        for (auto& buffer : *group)
        {
            buffer.shape = context->getTensorShape(buffer.name.c_str());
            buffer.bytes = static_cast<std::size_t>(volume(buffer.shape)) * sizeof(float);
            checkCuda(cudaMalloc(&buffer.device, buffer.bytes), "cudaMalloc");
            checkCuda(cudaMallocHost(reinterpret_cast<void**>(&buffer.host), buffer.bytes), "cudaMallocHost");
            if (!context->setTensorAddress(buffer.name.c_str(), buffer.device))
            {
                throw std::runtime_error("setTensorAddress failed for " + buffer.name);
            }
        }
    }
    std::vector<float> const input = loadInput(options, inputs[0].shape);
    std::copy(input.begin(), input.end(), inputs[0].host);

    StreamTimer timer;
    cudaStream_t const stream = timer.stream;
    auto const enqueue = [&]() {
        if (!context->enqueueV3(stream))
        {
            throw std::runtime_error("enqueueV3 failed");
        }
    };

    // First run, with the copies, timed on the stream.
    checkCuda(cudaEventRecord(timer.start, stream), "cudaEventRecord");
    checkCuda(cudaMemcpyAsync(inputs[0].device, inputs[0].host, inputs[0].bytes, cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync");
    enqueue();
    for (auto& buffer : outputs)
    {
        checkCuda(cudaMemcpyAsync(buffer.host, buffer.device, buffer.bytes, cudaMemcpyDeviceToHost, stream),
            "cudaMemcpyAsync");
    }
    checkCuda(cudaEventRecord(timer.stop, stream), "cudaEventRecord");
    float const firstMs = timer.elapsedMs();

    // Then the engine alone: each iteration between two events on the stream.
    for (int32_t i = 0; i < options.warmup; ++i)
    {
        enqueue();
    }
    std::vector<float> samples;
    for (int32_t i = 0; i < options.iterations; ++i)
    {
        checkCuda(cudaEventRecord(timer.start, stream), "cudaEventRecord");
        enqueue();
        checkCuda(cudaEventRecord(timer.stop, stream), "cudaEventRecord");
        samples.push_back(timer.elapsedMs());
    }
    std::sort(samples.begin(), samples.end());
    auto const percentile = [&](double q) {
        return samples[static_cast<std::size_t>(q * static_cast<double>(samples.size() - 1) + 0.5)];
    };

    Buffer const& logits = outputs[0];
    auto const classes = static_cast<std::size_t>(volume(logits.shape) / std::max<int64_t>(1, logits.shape.d[0]));
    std::printf("%s through %s %s:\n", options.input.c_str(), options.engine.c_str(), shapeText(inputs[0].shape).c_str());
    std::printf("rank  class  probability\n");
    int32_t rank = 1;
    for (auto const& [index, probability] : tofu_edge::topK(logits.host, classes, options.top))
    {
        std::printf("%4d  %5d  %.4f\n", rank++, index, probability);
    }
    std::printf("latency: median %.3f ms, p90 %.3f ms, p99 %.3f ms over %zu runs (enqueueV3, CUDA events); "
                "first run with copies %.3f ms\n",
        percentile(0.5), percentile(0.9), percentile(0.99), samples.size(), firstMs);
    return kExitOk;
}

} // namespace

int main(int argc, char** argv)
{
    try
    {
        return run(parseArgs(argc, argv));
    }
    catch (UsageError const& error)
    {
        std::cerr << "error: " << error.what() << '\n';
        return kExitUsage;
    }
    catch (std::exception const& error)
    {
        std::cerr << "error: " << error.what() << '\n';
        return kExitFailure;
    }
}
