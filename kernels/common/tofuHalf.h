/*
 * tofu_edge::Half, an IEEE 754 binary16 value for builds without CUDA (TOFU_NO_CUDA: the onnxruntime custom
 * ops), where <cuda_fp16.h> and its __half are not available. Only the two conversions the math needs, in
 * portable C++ (no F16C / NEON intrinsics, so it builds with any C++17 compiler on any board):
 *
 *   halfToFloat  exact (every half is a float): normals, subnormals, +-0, +-inf; NaN stays NaN (quieted,
 *                payload kept);
 *   floatToHalf  round to nearest, ties to even, as __float2half_rn: subnormal results, overflow to +-inf
 *                (from 65520 on), NaN stays NaN (quieted, top payload bits kept, as x86's vcvtps2ph does).
 *
 * Bit manipulation and integer rounding (one float product, exact), so the results do not depend on the
 * floating-point environment (rounding mode, flush-to-zero).
 */
#pragma once

#include <cstdint>
#include <cstring>

namespace tofu_edge
{

//! The bits of an IEEE half, laid out as numpy's float16 and onnxruntime's FLOAT16 tensors.
struct Half
{
    uint16_t bits;
};

static_assert(sizeof(Half) == 2, "Half must have the layout of a binary16 tensor element");

namespace half_detail
{

inline uint32_t floatBits(float v)
{
    uint32_t bits = 0;
    std::memcpy(&bits, &v, sizeof(bits));
    return bits;
}

inline float bitsFloat(uint32_t bits)
{
    float v = 0.F;
    std::memcpy(&v, &bits, sizeof(v));
    return v;
}

constexpr uint32_t kHalfExponentMask = 0x7C00U;
constexpr uint32_t kHalfMantissaMask = 0x03FFU;
constexpr uint32_t kHalfQuietBit = 0x0200U;
constexpr uint32_t kFloatInfBits = 0x7F800000U;
constexpr uint32_t kFloatQuietBit = 0x00400000U;
constexpr uint32_t kFloatMantissaMask = 0x007FFFFFU;
constexpr uint32_t kMantissaShift = 23 - 10; // float mantissa bits - half mantissa bits
constexpr uint32_t kRebias = (127 - 15) << 23; // float exponent bias - half exponent bias, in place
constexpr uint32_t kSmallestNormalBits = 0x38800000U; // 2^-14 as a float
constexpr uint32_t kOverflowBits = 0x477FF000U; // 65520: halfway between 65504 (largest half) and 65536
constexpr uint32_t kSubnormalFloorExponent = 102; // biased exponent of 2^-25, half of the smallest subnormal

} // namespace half_detail

inline float halfToFloat(Half h)
{
    using namespace half_detail;
    uint32_t const sign = static_cast<uint32_t>(h.bits & 0x8000U) << 16;
    uint32_t const exponent = (h.bits & kHalfExponentMask) >> 10;
    uint32_t const mantissa = h.bits & kHalfMantissaMask;
    if (exponent == 0x1FU) // inf, or NaN: quiet, with its payload (a signaling NaN is quieted, as by hardware)
    {
        uint32_t const quiet = mantissa != 0 ? kFloatQuietBit : 0U;
        return bitsFloat(sign | kFloatInfBits | quiet | (mantissa << kMantissaShift));
    }
    if (exponent != 0)
    {
        return bitsFloat(sign | ((exponent << 23) + kRebias) | (mantissa << kMantissaShift));
    }
    // +-0 and the subnormals, mantissa * 2^-24: exact in float (at most 10 significant bits).
    float const magnitude = static_cast<float>(mantissa) * bitsFloat(0x33800000U); // 2^-24
    return sign != 0 ? -magnitude : magnitude;
}

inline Half floatToHalf(float v)
{
    using namespace half_detail;
    uint32_t const bits = floatBits(v);
    uint32_t const sign = (bits >> 16) & 0x8000U;
    uint32_t const magnitude = bits & 0x7FFFFFFFU;
    if (magnitude > kFloatInfBits) // NaN: keep it a NaN whatever its payload
    {
        uint32_t const payload = (magnitude >> kMantissaShift) & kHalfMantissaMask;
        return Half{static_cast<uint16_t>(sign | kHalfExponentMask | kHalfQuietBit | payload)};
    }
    if (magnitude >= kOverflowBits) // inf, or rounds past the largest half
    {
        return Half{static_cast<uint16_t>(sign | kHalfExponentMask)};
    }
    if (magnitude >= kSmallestNormalBits)
    {
        // Round the 13 dropped mantissa bits to nearest even; a carry moves into the exponent, as it should.
        uint32_t const odd = (magnitude >> kMantissaShift) & 1U;
        uint32_t const rounded = magnitude + 0x0FFFU + odd;
        return Half{static_cast<uint16_t>(sign | ((rounded - kRebias) >> kMantissaShift))};
    }
    uint32_t const exponent = magnitude >> 23;
    if (exponent < kSubnormalFloorExponent) // below 2^-25 (float subnormals included): rounds to 0
    {
        return Half{static_cast<uint16_t>(sign)};
    }
    // A half subnormal: the value in units of 2^-24, (1.mantissa * 2^23) >> (126 - exponent), rounded to even.
    // The shift is 14..24; a result of 0x400 is the smallest normal, which is the right encoding too.
    uint32_t const significand = (magnitude & kFloatMantissaMask) | 0x00800000U;
    uint32_t const shift = 126U - exponent;
    uint32_t const quotient = significand >> shift;
    uint32_t const remainder = significand & ((1U << shift) - 1U);
    uint32_t const halfway = 1U << (shift - 1U);
    uint32_t const roundUp = (remainder > halfway || (remainder == halfway && (quotient & 1U) != 0)) ? 1U : 0U;
    return Half{static_cast<uint16_t>(sign | (quotient + roundUp))};
}

} // namespace tofu_edge
