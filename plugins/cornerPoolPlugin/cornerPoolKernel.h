/*
 * Corner pooling CUDA kernels (CornerNet / CornerNet-Lite), independent of TensorRT.
 *
 * Plain C entry points so the kernels can be called from the TensorRT plugin, from a test through
 * ctypes, or from a benchmark, without TensorRT. All tensors are dense, contiguous NCHW (TensorRT
 * kLINEAR), on the device, and all of one dtype.
 *
 * Pools (per (n, c) plane, y = row 0..H-1, x = column 0..W-1):
 *   TopPool(x)[y]    = max x[y'] over y' in [y, H-1]     (looks down)
 *   BottomPool(x)[y] = max x[y'] over y' in [0, y]
 *   LeftPool(x)[x]   = max x[x'] over x' in [x, W-1]     (looks right)
 *   RightPool(x)[x]  = max x[x'] over x' in [0, x]
 * Fused corner pools (one launch, a and b read once, out written once):
 *   top_left     = TopPool(a) + LeftPool(b)
 *   bottom_right = BottomPool(a) + RightPool(b)
 *
 * Numerics: max is exact in any dtype. FP16 values are widened to float (exact), the sum is taken in
 * float and rounded to half once; that equals PyTorch's half addition (both operands are halves, and
 * float's 24-bit significand is >= 2*11+2 bits, so double rounding cannot occur). NaN propagates like
 * torch.cummax: a NaN makes every output whose pooling window contains it NaN. The sign of a zero
 * result when +0 and -0 tie is unspecified.
 */
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#if defined(_WIN32)
#define CORNERPOOL_API __declspec(dllexport)
#else
#define CORNERPOOL_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C"
{
#endif

/* Fused modes. */
enum CornerPoolMode
{
    CORNER_POOL_TOP_LEFT = 0,
    CORNER_POOL_BOTTOM_RIGHT = 1
};

/* Single-direction pools. */
enum CornerPoolDirection
{
    CORNER_POOL_TOP = 0,
    CORNER_POOL_BOTTOM = 1,
    CORNER_POOL_LEFT = 2,
    CORNER_POOL_RIGHT = 3
};

enum CornerPoolDtype
{
    CORNER_POOL_FLOAT32 = 0,
    CORNER_POOL_FLOAT16 = 1
};

/* Status codes: 0 = success, > 0 = a cudaError_t from the launch, < 0 = one of these. */
enum CornerPoolStatus
{
    CORNER_POOL_SUCCESS = 0,
    CORNER_POOL_INVALID_MODE = -1,
    CORNER_POOL_INVALID_DTYPE = -2,
    CORNER_POOL_INVALID_SHAPE = -3,
    CORNER_POOL_NULL_POINTER = -4,
    CORNER_POOL_WIDTH_TOO_LARGE = -5
};

/*
 * out = top_left or bottom_right corner pool of (a, b). a, b, out: N*C*H*W elements each; out must
 * not alias a or b. Asynchronous on `stream`; returns launch errors only (like any kernel launch).
 * Dimensions must be >= 0 (H, W < 2^31 - 128); an empty tensor launches nothing.
 */
CORNERPOOL_API int cornerPoolForward(int mode, int dtype, void const* a, void const* b, void* out, int N, int C,
    int H, int W, cudaStream_t stream);

/* out = one single-direction pool of `in` (for tests and benchmarks; the plugin uses the fused form). */
CORNERPOOL_API int cornerPoolDirectional(
    int direction, int dtype, void const* in, void* out, int N, int C, int H, int W, cudaStream_t stream);

/* Human-readable text for a status code returned above (static storage). */
CORNERPOOL_API char const* cornerPoolStatusString(int status);

/*
 * Largest W the vertical pools (and so both fused modes) accept on the current device: the kernel keeps
 * one float per column in shared memory. (sharedMemPerBlockOptin - 4 KiB) / 4, e.g. 57,088 on H100,
 * 24,320 on sm_86/sm_89, 15,360 on sm_75. Returns 0 if the current device cannot be queried.
 */
CORNERPOOL_API int cornerPoolMaxWidth(void);

#ifdef __cplusplus
}
#endif
