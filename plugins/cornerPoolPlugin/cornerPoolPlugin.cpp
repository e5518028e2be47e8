#include "cornerPoolPlugin.h"

#include "cornerPoolKernel.h"
#include "common/pluginLogging.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <sstream>

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::ErrorCode;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;

namespace cornernet_deploy
{
namespace plugin
{
namespace
{

constexpr int32_t kNbInputs = 2;
constexpr int32_t kNbOutputs = 1;
constexpr int32_t kRank = 4;

char const* const kTopLeftName = "top_left";
char const* const kBottomRightName = "bottom_right";

std::string dataTypeName(DataType type)
{
    switch (type)
    {
    case DataType::kFLOAT: return "FLOAT32";
    case DataType::kHALF: return "FLOAT16";
    case DataType::kINT8: return "INT8";
    case DataType::kINT32: return "INT32";
    case DataType::kBOOL: return "BOOL";
    case DataType::kUINT8: return "UINT8";
    case DataType::kFP8: return "FP8";
    case DataType::kBF16: return "BF16";
    case DataType::kINT64: return "INT64";
    default: break;
    }
    return "DataType(" + std::to_string(static_cast<int32_t>(type)) + ")";
}

std::string fieldTypeName(PluginFieldType type)
{
    switch (type)
    {
    case PluginFieldType::kFLOAT16: return "kFLOAT16";
    case PluginFieldType::kFLOAT32: return "kFLOAT32";
    case PluginFieldType::kFLOAT64: return "kFLOAT64";
    case PluginFieldType::kINT8: return "kINT8";
    case PluginFieldType::kINT16: return "kINT16";
    case PluginFieldType::kINT32: return "kINT32";
    case PluginFieldType::kCHAR: return "kCHAR";
    case PluginFieldType::kDIMS: return "kDIMS";
    case PluginFieldType::kUNKNOWN: return "kUNKNOWN";
    case PluginFieldType::kBF16: return "kBF16";
    case PluginFieldType::kINT64: return "kINT64";
    default: break;
    }
    return "PluginFieldType(" + std::to_string(static_cast<int32_t>(type)) + ")";
}

std::string dimsToString(Dims const& dims)
{
    std::ostringstream text;
    text << "[";
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        text << (i > 0 ? ", " : "") << dims.d[i];
    }
    text << "]";
    return text.str();
}

bool isSupportedType(DataType type)
{
    return type == DataType::kFLOAT || type == DataType::kHALF;
}

char const* ioName(int32_t index)
{
    return index == 0 ? "input 0 (a)" : index == 1 ? "input 1 (b)" : "output 0";
}

//! createPlugin's last resort: reporting allocates too, so it may fail again; then only stderr, without
//! allocating.
void reportCreateFailure(char const* name, char const* what) noexcept
{
    try
    {
        reportError(nullptr, ErrorCode::kINTERNAL_ERROR,
            std::string(kCornerPoolName) + "[" + (name != nullptr ? name : "") + "]: createPlugin failed: " + what);
    }
    catch (...)
    {
        std::fputs("[cornernet_deploy plugin] ERROR: CornerPool createPlugin failed (out of memory)\n", stderr);
    }
}

//! Widths up to this need no shared-memory opt-in on any GPU (see cornerPoolMaxWidth for the rest).
constexpr int64_t kWidthWithoutOptIn = (48 * 1024 - 4096) / 4;

} // namespace

char const* modeName(CornerPoolMode mode) noexcept
{
    return mode == CornerPoolMode::kTopLeft ? kTopLeftName : kBottomRightName;
}

bool parseModeField(PluginField const& field, CornerPoolMode& mode, std::string& error)
{
    if (field.type == PluginFieldType::kCHAR)
    {
        if (field.data == nullptr || field.length <= 0)
        {
            error = "field 'mode' is an empty string; expected \"top_left\" or \"bottom_right\"";
            return false;
        }
        // The ONNX parser passes a NUL-terminated string whose length counts the NUL; accept either.
        char const* text = static_cast<char const*>(field.data);
        std::string const value(text, strnlen(text, static_cast<size_t>(field.length)));
        if (value == kTopLeftName)
        {
            mode = CornerPoolMode::kTopLeft;
            return true;
        }
        if (value == kBottomRightName)
        {
            mode = CornerPoolMode::kBottomRight;
            return true;
        }
        error = "field 'mode' is \"" + value + "\"; expected \"top_left\" or \"bottom_right\"";
        return false;
    }
    if (field.type == PluginFieldType::kINT32)
    {
        if (field.data == nullptr || field.length != 1)
        {
            error = "field 'mode' (kINT32) must hold exactly one value, got " + std::to_string(field.length);
            return false;
        }
        int32_t const value = *static_cast<int32_t const*>(field.data);
        if (value == static_cast<int32_t>(CornerPoolMode::kTopLeft)
            || value == static_cast<int32_t>(CornerPoolMode::kBottomRight))
        {
            mode = static_cast<CornerPoolMode>(value);
            return true;
        }
        error = "field 'mode' is " + std::to_string(value) + "; expected 0 (top_left) or 1 (bottom_right)";
        return false;
    }
    error = "field 'mode' has type " + fieldTypeName(field.type)
        + "; expected kCHAR (\"top_left\" | \"bottom_right\") or kINT32 (0 | 1)";
    return false;
}

// ---------------------------------------------------------------------------------------------------------
// CornerPoolPlugin

CornerPoolPlugin::CornerPoolPlugin(std::string layerName, CornerPoolMode mode)
    : mLayerName(std::move(layerName))
    , mMode(mode)
{
}

// Copies the configuration only; the serialization buffers are rebuilt by getFieldsToSerialize and must
// not point into `other`.
CornerPoolPlugin::CornerPoolPlugin(CornerPoolPlugin const& other)
    : nvinfer1::IPluginV3(other)
    , nvinfer1::IPluginV3OneCore(other)
    , nvinfer1::IPluginV3OneBuild(other)
    , nvinfer1::IPluginV3OneRuntime(other)
    , mLayerName(other.mLayerName)
    , mMode(other.mMode)
    , mErrorRecorder(other.mErrorRecorder)
{
}

void CornerPoolPlugin::fail(ErrorCode code, std::string const& message) const noexcept
{
    try
    {
        reportError(mErrorRecorder, code, std::string(kCornerPoolName) + "[" + mLayerName + "]: " + message);
    }
    catch (...)
    {
    }
}

nvinfer1::IPluginCapability* CornerPoolPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* CornerPoolPlugin::clone() noexcept
{
    try
    {
        return new CornerPoolPlugin(*this);
    }
    catch (std::exception const& e)
    {
        fail(ErrorCode::kFAILED_ALLOCATION, std::string("clone failed: ") + e.what());
    }
    return nullptr;
}

char const* CornerPoolPlugin::getPluginName() const noexcept
{
    return kCornerPoolName;
}

char const* CornerPoolPlugin::getPluginVersion() const noexcept
{
    return kCornerPoolVersion;
}

char const* CornerPoolPlugin::getPluginNamespace() const noexcept
{
    return kCornerPoolNamespace;
}

int32_t CornerPoolPlugin::getNbOutputs() const noexcept
{
    return kNbOutputs;
}

bool CornerPoolPlugin::checkIoCount(char const* method, int32_t nbInputs, int32_t nbOutputs) const noexcept
{
    if (nbInputs == kNbInputs && nbOutputs == kNbOutputs)
    {
        return true;
    }
    try
    {
        fail(ErrorCode::kINVALID_ARGUMENT,
            std::string(method) + ": expects 2 inputs (a, b) and 1 output, got " + std::to_string(nbInputs)
                + " inputs and " + std::to_string(nbOutputs) + " outputs");
    }
    catch (...)
    {
    }
    return false;
}

int32_t CornerPoolPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        if (!checkIoCount("getOutputDataTypes", nbInputs, nbOutputs) || outputTypes == nullptr || inputTypes == nullptr)
        {
            return -1;
        }
        if (!isSupportedType(inputTypes[0]))
        {
            fail(ErrorCode::kINVALID_ARGUMENT,
                "input 0 (a) has type " + dataTypeName(inputTypes[0]) + "; supported: FLOAT32, FLOAT16");
            return -1;
        }
        if (inputTypes[1] != inputTypes[0])
        {
            fail(ErrorCode::kINVALID_ARGUMENT,
                "inputs must have the same type, got a: " + dataTypeName(inputTypes[0])
                    + ", b: " + dataTypeName(inputTypes[1]));
            return -1;
        }
        outputTypes[0] = inputTypes[0];
        return 0;
    }
    catch (std::exception const& e)
    {
        fail(ErrorCode::kINTERNAL_ERROR, e.what());
    }
    return -1;
}

int32_t CornerPoolPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    try
    {
        if (!checkIoCount("getOutputShapes", nbInputs, nbOutputs) || inputs == nullptr || outputs == nullptr)
        {
            return -1;
        }
        if (nbShapeInputs != 0)
        {
            fail(ErrorCode::kINVALID_ARGUMENT, "takes no shape inputs, got " + std::to_string(nbShapeInputs));
            return -1;
        }
        for (int32_t i = 0; i < kNbInputs; ++i)
        {
            if (inputs[i].nbDims != kRank)
            {
                fail(ErrorCode::kINVALID_ARGUMENT,
                    std::string(ioName(i)) + " has rank " + std::to_string(inputs[i].nbDims)
                        + "; expected a rank-4 NCHW tensor");
                return -1;
            }
        }
        // Dimensions known at network definition time must already agree; the rest is checked at runtime.
        for (int32_t d = 0; d < kRank; ++d)
        {
            nvinfer1::IDimensionExpr const* first = inputs[0].d[d];
            nvinfer1::IDimensionExpr const* second = inputs[1].d[d];
            if (first != nullptr && second != nullptr && first->isConstant() && second->isConstant()
                && first->getConstantValue() != second->getConstantValue())
            {
                fail(ErrorCode::kINVALID_ARGUMENT,
                    "a and b must have the same shape; dimension " + std::to_string(d) + " is "
                        + std::to_string(first->getConstantValue()) + " vs "
                        + std::to_string(second->getConstantValue()));
                return -1;
            }
        }
        outputs[0] = inputs[0];
        return 0;
    }
    catch (std::exception const& e)
    {
        fail(ErrorCode::kINTERNAL_ERROR, e.what());
    }
    return -1;
}

bool CornerPoolPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0
        || pos >= kNbInputs + kNbOutputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    // TensorRT asks position by position; later positions must match the type chosen for input 0.
    return pos == 0 ? isSupportedType(desc.type) : desc.type == inOut[0].desc.type;
}

int32_t CornerPoolPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        if (!checkIoCount("configurePlugin", nbInputs, nbOutputs) || in == nullptr || out == nullptr)
        {
            return -1;
        }
        PluginTensorDesc const descs[] = {in[0].desc, in[1].desc, out[0].desc};
        for (int32_t i = 0; i < kNbInputs + kNbOutputs; ++i)
        {
            if (descs[i].dims.nbDims != kRank)
            {
                fail(ErrorCode::kINVALID_ARGUMENT,
                    std::string(ioName(i)) + " has rank " + std::to_string(descs[i].dims.nbDims)
                        + "; expected a rank-4 NCHW tensor");
                return -1;
            }
            if (!isSupportedType(descs[i].type) || descs[i].type != descs[0].type)
            {
                fail(ErrorCode::kINVALID_ARGUMENT,
                    std::string(ioName(i)) + " has type " + dataTypeName(descs[i].type)
                        + "; all tensors must be FLOAT32 or all FLOAT16");
                return -1;
            }
        }
        for (int32_t d = 0; d < kRank; ++d)
        {
            int64_t const first = descs[0].dims.d[d];
            int64_t const second = descs[1].dims.d[d];
            if (first >= 0 && second >= 0 && first != second) // -1 = dynamic, checked in onShapeChange
            {
                fail(ErrorCode::kINVALID_ARGUMENT,
                    "a and b must have the same shape, got " + dimsToString(descs[0].dims) + " and "
                        + dimsToString(descs[1].dims));
                return -1;
            }
        }
        int64_t const maxWidth = std::max(in[0].max.d[3], in[0].desc.dims.d[3]);
        if (in[0].max.nbDims == kRank && maxWidth > kWidthWithoutOptIn)
        {
            int const limit = cornerPoolMaxWidth();
            if (limit <= 0)
            {
                fail(ErrorCode::kINVALID_ARGUMENT,
                    "the profile allows width W = " + std::to_string(maxWidth)
                        + ", which needs a shared-memory opt-in, but the GPU's limit could not be queried");
                return -1;
            }
            if (maxWidth > limit)
            {
                fail(ErrorCode::kINVALID_ARGUMENT,
                    "the profile allows width W = " + std::to_string(maxWidth) + " but this GPU supports at most "
                        + std::to_string(limit) + " (one float per column in shared memory)");
                return -1;
            }
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        fail(ErrorCode::kINTERNAL_ERROR, e.what());
    }
    return -1;
}

size_t CornerPoolPlugin::getWorkspaceSize(
    DynamicPluginTensorDesc const*, int32_t, DynamicPluginTensorDesc const*, int32_t) const noexcept
{
    return 0; // the kernel needs no scratch memory
}

bool CornerPoolPlugin::checkRuntimeDescs(
    char const* method, PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs)
    const noexcept
{
    try
    {
        if (!checkIoCount(method, nbInputs, nbOutputs) || in == nullptr || out == nullptr)
        {
            return false;
        }
        PluginTensorDesc const descs[] = {in[0], in[1], out[0]};
        for (int32_t i = 0; i < kNbInputs + kNbOutputs; ++i)
        {
            Dims const& dims = descs[i].dims;
            bool sameShape = dims.nbDims == kRank;
            for (int32_t d = 0; sameShape && d < kRank; ++d)
            {
                sameShape = dims.d[d] == descs[0].dims.d[d] && dims.d[d] >= 0
                    && dims.d[d] <= std::numeric_limits<int32_t>::max();
            }
            if (!sameShape)
            {
                fail(ErrorCode::kINVALID_ARGUMENT,
                    std::string(method) + ": a, b and the output must be rank-4 tensors of one shape (each "
                        + "dimension < 2^31), got " + dimsToString(descs[0].dims) + ", " + dimsToString(descs[1].dims)
                        + ", " + dimsToString(descs[2].dims));
                return false;
            }
            if (!isSupportedType(descs[i].type) || descs[i].type != descs[0].type
                || descs[i].format != nvinfer1::TensorFormat::kLINEAR)
            {
                fail(ErrorCode::kINVALID_ARGUMENT,
                    std::string(method) + ": " + ioName(i) + " has type " + dataTypeName(descs[i].type)
                        + "; all tensors must be linear FLOAT32 or all linear FLOAT16");
                return false;
            }
        }
        return true;
    }
    catch (std::exception const& e)
    {
        fail(ErrorCode::kINTERNAL_ERROR, e.what());
    }
    return false;
}

int32_t CornerPoolPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return checkRuntimeDescs("onShapeChange", in, nbInputs, out, nbOutputs) ? 0 : -1;
}

int32_t CornerPoolPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    if (!checkRuntimeDescs("enqueue", inputDesc, kNbInputs, outputDesc, kNbOutputs))
    {
        return -1;
    }
    if (inputs == nullptr || outputs == nullptr)
    {
        fail(ErrorCode::kINVALID_ARGUMENT, "enqueue: null input/output pointer array");
        return -1;
    }
    Dims const& dims = inputDesc[0].dims;
    int const dtype = inputDesc[0].type == DataType::kHALF ? CORNER_POOL_FLOAT16 : CORNER_POOL_FLOAT32;
    int const status = cornerPoolForward(static_cast<int>(mMode), dtype, inputs[0], inputs[1], outputs[0],
        static_cast<int>(dims.d[0]), static_cast<int>(dims.d[1]), static_cast<int>(dims.d[2]),
        static_cast<int>(dims.d[3]), stream);
    if (status != CORNER_POOL_SUCCESS)
    {
        try
        {
            fail(ErrorCode::kFAILED_EXECUTION,
                "enqueue of shape " + dimsToString(dims) + " failed: " + cornerPoolStatusString(status) + " (status "
                    + std::to_string(status) + ")");
        }
        catch (...)
        {
        }
        return status;
    }
    return 0;
}

nvinfer1::IPluginV3* CornerPoolPlugin::attachToContext(nvinfer1::IPluginResourceContext* context) noexcept
{
    try
    {
        auto* attached = new CornerPoolPlugin(*this);
        attached->mErrorRecorder = context != nullptr ? context->getErrorRecorder() : nullptr;
        return attached;
    }
    catch (std::exception const& e)
    {
        fail(ErrorCode::kFAILED_ALLOCATION, std::string("attachToContext failed: ") + e.what());
    }
    return nullptr;
}

PluginFieldCollection const* CornerPoolPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        // Same form as the ONNX parser's STRING attribute, so an engine stores what the model said.
        char const* const name = modeName(mMode);
        mFieldsToSerialize.clear();
        mFieldsToSerialize.emplace_back(
            kModeField, name, PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(name) + 1));
        mFieldCollectionToSerialize.nbFields = static_cast<int32_t>(mFieldsToSerialize.size());
        mFieldCollectionToSerialize.fields = mFieldsToSerialize.data();
        return &mFieldCollectionToSerialize;
    }
    catch (std::exception const& e)
    {
        fail(ErrorCode::kFAILED_ALLOCATION, std::string("getFieldsToSerialize failed: ") + e.what());
    }
    return nullptr;
}

// ---------------------------------------------------------------------------------------------------------
// CornerPoolPluginCreator

CornerPoolPluginCreator::CornerPoolPluginCreator()
{
    mFieldNames.emplace_back(kModeField, nullptr, PluginFieldType::kCHAR, 0);
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

char const* CornerPoolPluginCreator::getPluginName() const noexcept
{
    return kCornerPoolName;
}

char const* CornerPoolPluginCreator::getPluginVersion() const noexcept
{
    return kCornerPoolVersion;
}

char const* CornerPoolPluginCreator::getPluginNamespace() const noexcept
{
    return kCornerPoolNamespace;
}

PluginFieldCollection const* CornerPoolPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

nvinfer1::IPluginV3* CornerPoolPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    // Every string is built inside the try: an allocation failure must come back as nullptr, not escape
    // this noexcept function (std::terminate would end the host process).
    try
    {
        std::string const layerName = name != nullptr ? name : "";
        std::string const prefix = std::string(kCornerPoolName) + "[" + layerName + "]: ";
        bool haveMode = false;
        CornerPoolMode mode = CornerPoolMode::kTopLeft;
        int32_t const nbFields = fc != nullptr && fc->fields != nullptr ? fc->nbFields : 0;
        for (int32_t i = 0; i < nbFields; ++i)
        {
            PluginField const& field = fc->fields[i];
            std::string const fieldName = field.name != nullptr ? field.name : "";
            if (fieldName != kModeField)
            {
                logWarning(prefix + "ignoring unknown field '" + fieldName + "'");
                continue;
            }
            std::string error;
            if (!parseModeField(field, mode, error))
            {
                reportError(nullptr, ErrorCode::kINVALID_ARGUMENT, prefix + error);
                return nullptr;
            }
            haveMode = true;
        }
        if (!haveMode)
        {
            reportError(nullptr, ErrorCode::kINVALID_ARGUMENT,
                prefix
                    + "required field 'mode' is missing; expected \"top_left\" or \"bottom_right\" (the ONNX node "
                      "attribute `mode`)");
            return nullptr;
        }
        return new CornerPoolPlugin(layerName, mode);
    }
    catch (std::exception const& e)
    {
        reportCreateFailure(name, e.what());
    }
    catch (...)
    {
        reportCreateFailure(name, "unknown exception");
    }
    return nullptr;
}

} // namespace plugin
} // namespace cornernet_deploy
