// Host-only input/output helpers of tofu_edge_run: PPM images, raw float32 tensors, normalization, top-k.
// No TensorRT and no CUDA here, so this part builds and is tested on any machine.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tofu_edge
{

//! Per-channel (RGB) normalization applied after scaling pixels to [0, 1]: (x - mean) / std.
struct Normalization
{
    std::array<float, 3> mean{0.485F, 0.456F, 0.406F}; // ImageNet
    std::array<float, 3> std{0.229F, 0.224F, 0.225F};
};

//! An 8-bit RGB image, row-major, interleaved (HWC).
struct Image
{
    int32_t width{0};
    int32_t height{0};
    std::vector<uint8_t> rgb;
};

//! Reads a binary PPM (P6, maxval <= 255, '#' comments allowed). Throws std::runtime_error on a bad file.
Image readPpm(std::string const& path);

//! The image as a CHW float32 tensor, (pixel / 255 - mean) / std. Shapes: image [H, W, 3] -> returns [3, H, W].
std::vector<float> normalize(Image const& image, Normalization const& norm);

//! Reads exactly `count` little-endian float32 values (a C-order tensor). Throws when the size differs.
std::vector<float> readRawTensor(std::string const& path, std::size_t count);

//! Writes float32 values as a raw file (the format readRawTensor reads). Throws on an I/O error.
void writeRawTensor(std::string const& path, std::vector<float> const& values);

//! The k most probable classes of one logit vector as (index, softmax probability), best first; ties go to the
//! lower index, as in tofu_edge.engine.top_k.
std::vector<std::pair<int32_t, double>> topK(float const* logits, std::size_t count, std::size_t k);

//! Parses "a,b,c" into three floats. Throws std::invalid_argument on anything else.
std::array<float, 3> parseTriple(std::string const& text);

//! Whether `path` ends with `suffix`, ignoring ASCII case.
bool endsWith(std::string const& path, std::string const& suffix);

} // namespace tofu_edge
