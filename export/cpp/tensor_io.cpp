#include "tensor_io.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <iterator>
#include <numeric>
#include <sstream>
#include <stdexcept>

namespace tofu_edge
{
namespace
{

//! Next whitespace-separated header token of a PPM, skipping '#' comments.
std::string ppmToken(std::istream& in)
{
    std::string token;
    char c = 0;
    while (in.get(c))
    {
        if (c == '#')
        {
            std::string comment;
            std::getline(in, comment);
        }
        else if (std::isspace(static_cast<unsigned char>(c)) == 0)
        {
            token.push_back(c);
            while (in.get(c) && std::isspace(static_cast<unsigned char>(c)) == 0)
            {
                token.push_back(c);
            }
            return token; // the one whitespace after the token has been consumed
        }
    }
    return token;
}

int32_t ppmNumber(std::istream& in, std::string const& path, char const* what)
{
    std::string const token = ppmToken(in);
    if (token.empty() || !std::all_of(token.begin(), token.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }))
    {
        throw std::runtime_error(path + ": bad PPM header (" + what + " '" + token + "')");
    }
    return static_cast<int32_t>(std::stol(token));
}

} // namespace

Image readPpm(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw std::runtime_error("cannot open " + path);
    }
    if (ppmToken(in) != "P6")
    {
        throw std::runtime_error(path + ": not a binary PPM (P6); convert it, e.g. `convert in.jpg out.ppm`");
    }
    Image image;
    image.width = ppmNumber(in, path, "width");
    image.height = ppmNumber(in, path, "height");
    int32_t const maxval = ppmNumber(in, path, "maxval");
    if (image.width <= 0 || image.height <= 0 || maxval <= 0 || maxval > 255)
    {
        throw std::runtime_error(path + ": only 8-bit PPM images with a positive size are supported");
    }
    image.rgb.resize(static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height) * 3);
    in.read(reinterpret_cast<char*>(image.rgb.data()), static_cast<std::streamsize>(image.rgb.size()));
    if (in.gcount() != static_cast<std::streamsize>(image.rgb.size()))
    {
        throw std::runtime_error(path + ": truncated PPM pixel data");
    }
    if (maxval != 255)
    {
        for (auto& value : image.rgb)
        {
            value = static_cast<uint8_t>(std::lround(value * 255.0 / maxval));
        }
    }
    return image;
}

std::vector<float> normalize(Image const& image, Normalization const& norm)
{
    std::size_t const plane = static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height);
    std::vector<float> chw(plane * 3);
    for (std::size_t pixel = 0; pixel < plane; ++pixel)
    {
        for (std::size_t channel = 0; channel < 3; ++channel)
        {
            float const value = static_cast<float>(image.rgb[pixel * 3 + channel]) / 255.0F;
            chw[channel * plane + pixel] = (value - norm.mean[channel]) / norm.std[channel];
        }
    }
    return chw;
}

std::vector<float> readRawTensor(std::string const& path, std::size_t count)
{
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in)
    {
        throw std::runtime_error("cannot open " + path);
    }
    auto const bytes = static_cast<std::size_t>(in.tellg());
    if (bytes != count * sizeof(float))
    {
        throw std::runtime_error(path + ": " + std::to_string(bytes) + " bytes, the engine input needs "
            + std::to_string(count * sizeof(float)) + " (" + std::to_string(count) + " float32 values)");
    }
    std::vector<float> values(count);
    in.seekg(0);
    in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(bytes));
    return values;
}

void writeRawTensor(std::string const& path, std::vector<float> const& values)
{
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<char const*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(float)));
    if (!out)
    {
        throw std::runtime_error("cannot write " + path);
    }
}

std::vector<std::pair<int32_t, double>> topK(float const* logits, std::size_t count, std::size_t k)
{
    if (count == 0)
    {
        return {};
    }
    double const peak = *std::max_element(logits, logits + count);
    std::vector<double> probabilities(count);
    double sum = 0.0;
    for (std::size_t i = 0; i < count; ++i)
    {
        probabilities[i] = std::exp(static_cast<double>(logits[i]) - peak);
        sum += probabilities[i];
    }
    std::vector<int32_t> order(count);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return probabilities[a] > probabilities[b]; });
    std::vector<std::pair<int32_t, double>> top;
    for (std::size_t i = 0; i < std::min(k, count); ++i)
    {
        top.emplace_back(order[i], probabilities[order[i]] / sum);
    }
    return top;
}

std::array<float, 3> parseTriple(std::string const& text)
{
    std::array<float, 3> values{};
    std::istringstream in(text);
    std::string item;
    std::size_t n = 0;
    while (std::getline(in, item, ','))
    {
        if (n == 3)
        {
            throw std::invalid_argument("expected three comma-separated numbers, got '" + text + "'");
        }
        std::size_t used = 0;
        values[n++] = std::stof(item, &used);
        if (used != item.size())
        {
            throw std::invalid_argument("not a number: '" + item + "'");
        }
    }
    if (n != 3)
    {
        throw std::invalid_argument("expected three comma-separated numbers, got '" + text + "'");
    }
    return values;
}

bool endsWith(std::string const& path, std::string const& suffix)
{
    if (path.size() < suffix.size())
    {
        return false;
    }
    return std::equal(suffix.rbegin(), suffix.rend(), path.rbegin(),
        [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b)); });
}

} // namespace tofu_edge
