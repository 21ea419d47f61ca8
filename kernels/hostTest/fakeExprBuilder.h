/*
 * A constant-folding stand-in for TensorRT's IExprBuilder / IDimensionExpr, so that getOutputShapes can run
 * without TensorRT. A dimension is a constant or a named symbol (an unknown extent such as a dynamic batch);
 * an operation on constants folds, anything else gives a new symbol.
 */
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <deque>
#include <string>

namespace tofu_edge
{
namespace testing
{

class FakeDimExpr : public nvinfer1::IDimensionExpr
{
public:
    FakeDimExpr(bool constant, int64_t value, int32_t symbol, bool* misuse)
    {
        mState.constant = constant;
        mState.value = value;
        mState.symbol = symbol;
        mState.misuse = misuse;
        mImpl = &mState;
    }
    ~FakeDimExpr() noexcept override = default;

    int32_t symbol() const noexcept
    {
        return mState.symbol;
    }

private:
    struct State : nvinfer1::apiv::VDimensionExpr
    {
        bool isConstant() const override
        {
            return constant;
        }
        int64_t getConstantValue() const override
        {
            if (!constant)
            {
                *misuse = true; // a plugin must not read the value of a symbolic extent
            }
            return constant ? value : -1;
        }
        bool isSizeTensor() const override
        {
            return false;
        }
        bool constant{};
        int64_t value{};
        int32_t symbol{-1};
        bool* misuse{};
    } mState;
};

class FakeExprBuilder : public nvinfer1::IExprBuilder
{
public:
    FakeExprBuilder()
    {
        mState.owner = this;
        mImpl = &mState;
    }
    ~FakeExprBuilder() noexcept override = default;

    FakeDimExpr const* make(bool constant, int64_t value)
    {
        mExprs.emplace_back(constant, value, constant ? -1 : mNextSymbol++, &mMisuse);
        return &mExprs.back();
    }

    //! True once a plugin read getConstantValue() of a symbolic extent.
    bool misused() const noexcept
    {
        return mMisuse;
    }

private:
    struct State : nvinfer1::apiv::VExprBuilder
    {
        nvinfer1::IDimensionExpr const* constant(int64_t value) override
        {
            return owner->make(true, value);
        }
        nvinfer1::IDimensionExpr const* operation(nvinfer1::DimensionOperation op, nvinfer1::IDimensionExpr const& first,
            nvinfer1::IDimensionExpr const& second) override
        {
            if (!first.isConstant() || !second.isConstant())
            {
                return owner->make(false, 0);
            }
            int64_t const a = first.getConstantValue();
            int64_t const b = second.getConstantValue();
            using Op = nvinfer1::DimensionOperation;
            switch (op)
            {
            case Op::kSUM: return owner->make(true, a + b);
            case Op::kPROD: return owner->make(true, a * b);
            case Op::kMAX: return owner->make(true, a > b ? a : b);
            case Op::kMIN: return owner->make(true, a < b ? a : b);
            case Op::kSUB: return owner->make(true, a - b);
            case Op::kEQUAL: return owner->make(true, a == b ? 1 : 0);
            case Op::kLESS: return owner->make(true, a < b ? 1 : 0);
            case Op::kFLOOR_DIV: return owner->make(true, b == 0 ? 0 : (a / b - ((a % b != 0) && ((a < 0) != (b < 0)))));
            case Op::kCEIL_DIV: return owner->make(true, b == 0 ? 0 : (a / b + ((a % b != 0) && ((a < 0) == (b < 0)))));
            }
            return owner->make(false, 0);
        }
        nvinfer1::IDimensionExpr const* declareSizeTensor(
            int32_t /*outputIndex*/, nvinfer1::IDimensionExpr const& /*opt*/, nvinfer1::IDimensionExpr const& /*upper*/) override
        {
            return owner->make(false, 0);
        }
        FakeExprBuilder* owner{};
    } mState;

    std::deque<FakeDimExpr> mExprs; // stable addresses: the plugin keeps pointers into it
    int32_t mNextSymbol{0};
    bool mMisuse{false};
};

} // namespace testing
} // namespace tofu_edge
