/*
 * CornerPool TensorRT plugin (IPluginV3), CornerNet-family corner pooling.
 *
 * Creator: name "CornerPool", version "1", namespace "cornernet_deploy"; one field `mode`
 * (kCHAR "top_left" | "bottom_right", as the ONNX parser passes a STRING attribute; kINT32 0 | 1 is also
 * accepted). Inputs a, b: equal-shape NCHW, FP32 or FP16 (both the same), linear layout; output: same
 * shape and dtype. top_left = TopPool(a) + LeftPool(b), bottom_right = BottomPool(a) + RightPool(b).
 * See README.md next to this file for the full contract and cornerPoolKernel.h for numerics.
 *
 * The plugin calls no TensorRT library function: every interface used is defined inline in the headers,
 * so the library links against libcudart only. The same source builds for TensorRT 10.x and 11.x, but a
 * build runs only in the major version of its headers (the logger/registry vtables differ between majors;
 * see ../cornernetDeployPlugins.cpp).
 */
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cornernet_deploy
{
namespace plugin
{

constexpr char const* kCornerPoolName = "CornerPool";
constexpr char const* kCornerPoolVersion = "1";
constexpr char const* kCornerPoolNamespace = "cornernet_deploy";
constexpr char const* kModeField = "mode";

//! Values of the `mode` field (kINT32 form) and of cornerPoolForward's mode argument.
enum class CornerPoolMode : int32_t
{
    kTopLeft = 0,
    kBottomRight = 1,
};

//! "top_left" / "bottom_right".
char const* modeName(CornerPoolMode mode) noexcept;

//! Parse the `mode` plugin field. On failure returns false and explains why in `error`.
bool parseModeField(nvinfer1::PluginField const& field, CornerPoolMode& mode, std::string& error);

class CornerPoolPlugin : public nvinfer1::IPluginV3,
                         public nvinfer1::IPluginV3OneCore,
                         public nvinfer1::IPluginV3OneBuild,
                         public nvinfer1::IPluginV3OneRuntime
{
public:
    CornerPoolPlugin(std::string layerName, CornerPoolMode mode);
    CornerPoolPlugin(CornerPoolPlugin const& other);
    CornerPoolPlugin& operator=(CornerPoolPlugin const&) = delete;
    ~CornerPoolPlugin() override = default;

    CornerPoolMode mode() const noexcept
    {
        return mMode;
    }

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    //! "CornerPool[<layer name>]: <message>" through reportError.
    void fail(nvinfer1::ErrorCode code, std::string const& message) const noexcept;
    bool checkIoCount(char const* method, int32_t nbInputs, int32_t nbOutputs) const noexcept;
    bool checkRuntimeDescs(char const* method, nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) const noexcept;

    std::string mLayerName;
    CornerPoolMode mMode;
    nvinfer1::IErrorRecorder* mErrorRecorder{nullptr}; // set by attachToContext (runtime clones only)
    std::vector<nvinfer1::PluginField> mFieldsToSerialize;
    nvinfer1::PluginFieldCollection mFieldCollectionToSerialize{};
};

class CornerPoolPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    CornerPoolPluginCreator();
    ~CornerPoolPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    //! Returns nullptr (and reports why) when `mode` is missing or invalid.
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace plugin
} // namespace cornernet_deploy
