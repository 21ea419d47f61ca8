// Host-only checks of tensor_io, driven by tests/apps (which compares with the Python preprocessing) and ctest.
//
//   tofu_tensor_io_test normalize IN.ppm OUT.bin [MEAN STD]   write the normalized CHW float32 tensor
//   tofu_tensor_io_test topk IN.bin COUNT K                   print "index probability" lines, best first
//   tofu_tensor_io_test selftest                              built-in checks (exit 0 when they pass)

#include "tensor_io.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace
{

int fail(std::string const& message)
{
    std::cerr << "selftest: " << message << '\n';
    return 1;
}

int selftest()
{
    std::string const path = "tofu_tensor_io_selftest.ppm";
    {
        std::ofstream out(path, std::ios::binary);
        out << "P6\n# a comment\n2 1\n255\n";
        unsigned char const pixels[] = {0, 128, 255, 10, 20, 30};
        out.write(reinterpret_cast<char const*>(pixels), sizeof(pixels));
    }
    tofu_edge::Image const image = tofu_edge::readPpm(path);
    std::remove(path.c_str());
    if (image.width != 2 || image.height != 1 || image.rgb[2] != 255 || image.rgb[5] != 30)
    {
        return fail("readPpm read the wrong pixels");
    }
    std::vector<float> const chw = tofu_edge::normalize(image, tofu_edge::Normalization{{0.F, 0.F, 0.F}, {1.F, 1.F, 1.F}});
    // CHW: R plane (0, 10), G plane (128, 20), B plane (255, 30), divided by 255
    if (std::fabs(chw[1] - 10.F / 255.F) > 1e-7F || std::fabs(chw[2] - 128.F / 255.F) > 1e-7F || chw[4] != 1.F)
    {
        return fail("normalize is not CHW / 255");
    }
    float const logits[] = {1.F, 3.F, 3.F, -2.F};
    auto const top = tofu_edge::topK(logits, 4, 3);
    if (top.size() != 3 || top[0].first != 1 || top[1].first != 2 || top[2].first != 0)
    {
        return fail("topK order is wrong (ties must go to the lower index)");
    }
    double sum = 0.0;
    for (float logit : logits)
    {
        sum += std::exp(static_cast<double>(logit) - 3.0);
    }
    if (std::fabs(top[0].second - 1.0 / sum) > 1e-12)
    {
        return fail("topK probability is not the softmax");
    }
    auto const triple = tofu_edge::parseTriple("0.5,0.25,1e-1");
    if (triple[0] != 0.5F || triple[1] != 0.25F || std::fabs(triple[2] - 0.1F) > 1e-7F)
    {
        return fail("parseTriple");
    }
    try
    {
        tofu_edge::parseTriple("1,2");
        return fail("parseTriple accepted two numbers");
    }
    catch (std::invalid_argument const&)
    {
    }
    std::cout << "selftest passed\n";
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    try
    {
        std::string const mode = argc > 1 ? argv[1] : "";
        if (mode == "selftest")
        {
            return selftest();
        }
        if (mode == "normalize" && (argc == 4 || argc == 6))
        {
            tofu_edge::Normalization norm;
            if (argc == 6)
            {
                norm.mean = tofu_edge::parseTriple(argv[4]);
                norm.std = tofu_edge::parseTriple(argv[5]);
            }
            tofu_edge::writeRawTensor(argv[3], tofu_edge::normalize(tofu_edge::readPpm(argv[2]), norm));
            return 0;
        }
        if (mode == "topk" && argc == 5)
        {
            auto const count = static_cast<std::size_t>(std::stoul(argv[3]));
            std::vector<float> const logits = tofu_edge::readRawTensor(argv[2], count);
            for (auto const& [index, probability] : tofu_edge::topK(logits.data(), count, std::stoul(argv[4])))
            {
                std::printf("%d %.17g\n", index, probability);
            }
            return 0;
        }
        std::cerr << "usage: tofu_tensor_io_test selftest | normalize IN.ppm OUT.bin [MEAN STD] | topk IN.bin COUNT K\n";
        return 2;
    }
    catch (std::exception const& error)
    {
        std::cerr << "error: " << error.what() << '\n';
        return 1;
    }
}
