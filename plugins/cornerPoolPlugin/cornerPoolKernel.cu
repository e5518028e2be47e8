/*
 * Corner pooling kernels: one pass over memory, coalesced in both scan directions.
 *
 * Work decomposition (all pools share one kernel template):
 *   - one block of 8 warps owns one (n, c) plane at a time (grid-stride over planes);
 *   - the plane is walked in chunks of 32 rows, taken in the order of the vertical scan (bottom-up for
 *     TopPool, top-down for BottomPool); inside a chunk, in segments of 128 columns taken in the order of
 *     the horizontal scan (right-to-left for LeftPool, left-to-right for RightPool);
 *   - warp w holds 4 consecutive rows of the chunk; lane l holds columns l, l+32, l+64, l+96 of the
 *     segment ("striped"), so every load and store of a warp touches 32 consecutive elements of one row:
 *     coalesced for both a (column scan) and b (row scan); nothing is read with stride W;
 *   - row scan (LeftPool/RightPool of b): inside the warp, a 5-step shuffle-up max scan per 32 columns
 *     plus a per-row running carry (a register) across the 32-column pieces and across segments;
 *   - column scan (TopPool/BottomPool of a): each lane scans its 4 rows in registers; the 8 warp totals
 *     of the chunk go through shared memory so warp w combines the totals of warps 0..w-1 with the
 *     running column carry of all earlier chunks (shared memory, one float per column);
 *   - out = column pool + row pool is written once.
 * Memory traffic is therefore exactly: read a once, read b once, write out once (3 * numel * sizeof(T));
 * shared memory only holds 4 KiB of warp totals plus one float per column, never a whole plane.
 *
 * Arithmetic is in float: half loads widen exactly, max is exact, and the fused sum is rounded to the
 * storage type once (see cornerPoolKernel.h for why that equals PyTorch's half add).
 */
#include "cornerPoolKernel.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <climits>
#include <cmath>
#include <cstdint>

#if defined(CORNERPOOL_HOST_EMULATION)
// Test-only: runs this exact source on CPU fibers (plugins/tests/simtHostEmulation.h).
#include "simtHostEmulation.h"
#endif

namespace
{

constexpr int kWarpSize = 32;
constexpr int kWarpsPerBlock = 8;
constexpr int kThreadsPerBlock = kWarpSize * kWarpsPerBlock;
constexpr int kRowsPerWarp = 4;
constexpr int kRowsPerChunk = kWarpsPerBlock * kRowsPerWarp;
constexpr int kColsPerLane = 4;
constexpr int kColsPerSegment = kWarpSize * kColsPerLane;
constexpr unsigned kFullWarpMask = 0xffffffffu;
// Shared memory besides the per-column carry: the warp totals of one chunk segment.
constexpr size_t kWarpTotalsBytes = sizeof(float) * kWarpsPerBlock * kColsPerSegment;
// Dynamic shared memory every device grants without an opt-in.
constexpr size_t kDefaultSharedBytes = 48 * 1024;

enum class VerticalPool
{
    kNone,
    kTop,    // out[y] = max over rows y..H-1: scan rows bottom-up
    kBottom, // out[y] = max over rows 0..y: scan rows top-down
};

enum class HorizontalPool
{
    kNone,
    kLeft,  // out[x] = max over columns x..W-1: scan columns right-to-left
    kRight, // out[x] = max over columns 0..x: scan columns left-to-right
};

// Max that propagates NaN (torch.cummax/torch.maximum semantics); fmaxf would drop the NaN.
// `a != a` is the NaN test; this file must never be compiled with --use_fast_math.
__device__ __forceinline__ float maxPropagateNan(float a, float b)
{
    return (a > b || a != a) ? a : b;
}

__device__ __forceinline__ float toFloat(float v)
{
    return v;
}

__device__ __forceinline__ float toFloat(__half v)
{
    return __half2float(v);
}

template <typename T>
__device__ __forceinline__ T fromFloat(float v);

template <>
__device__ __forceinline__ float fromFloat<float>(float v)
{
    return v;
}

template <>
__device__ __forceinline__ __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

__device__ __forceinline__ float* dynamicSharedFloats()
{
#if defined(CORNERPOOL_HOST_EMULATION)
    return simt::dynamicShared<float>();
#else
    extern __shared__ float cornerPoolDynamicShared[];
    return cornerPoolDynamicShared;
#endif
}

/*
 * verticalIn: tensor pooled along H (a); horizontalIn: tensor pooled along W (b). Either pool may be
 * kNone (single-direction pools); then its input is unused. out = vertical + horizontal.
 * Shared memory (vertical pools only): kWarpTotalsBytes + W floats.
 */
template <typename T, VerticalPool kVertical, HorizontalPool kHorizontal>
__global__ void __launch_bounds__(kThreadsPerBlock) cornerPoolKernel(T const* __restrict__ verticalIn,
    T const* __restrict__ horizontalIn, T* __restrict__ out, int64_t planes, int H, int W)
{
    constexpr bool kHasVertical = kVertical != VerticalPool::kNone;
    constexpr bool kHasHorizontal = kHorizontal != HorizontalPool::kNone;
    float const kIdentity = -INFINITY; // neutral for max, and NaN still wins over it

    int const lane = static_cast<int>(threadIdx.x) % kWarpSize;
    int const warp = static_cast<int>(threadIdx.x) / kWarpSize;
    float* const warpTotals = dynamicSharedFloats();                   // [kWarpsPerBlock][kColsPerSegment]
    float* const columnCarry = warpTotals + kWarpsPerBlock * kColsPerSegment; // [W], by scan position q
    int const nbChunks = (H + kRowsPerChunk - 1) / kRowsPerChunk;
    int const nbSegments = (W + kColsPerSegment - 1) / kColsPerSegment;
    int64_t const planeSize = static_cast<int64_t>(H) * W;

    for (int64_t plane = blockIdx.x; plane < planes; plane += gridDim.x)
    {
        int64_t const planeOffset = plane * planeSize;
        if (kHasVertical)
        {
            for (int q = static_cast<int>(threadIdx.x); q < W; q += kThreadsPerBlock)
            {
                columnCarry[q] = kIdentity;
            }
            __syncthreads();
        }

        for (int chunk = 0; chunk < nbChunks; ++chunk)
        {
            // Rows of this warp, in vertical scan order s (s = 0 is where the vertical scan starts).
            int rowY[kRowsPerWarp];
            bool rowValid[kRowsPerWarp];
            float rowCarry[kRowsPerWarp]; // horizontal scan carry of each row across segments
#pragma unroll
            for (int r = 0; r < kRowsPerWarp; ++r)
            {
                int const s = chunk * kRowsPerChunk + warp * kRowsPerWarp + r;
                rowValid[r] = s < H;
                rowY[r] = kVertical == VerticalPool::kTop ? H - 1 - s : s;
                rowCarry[r] = kIdentity;
            }

            for (int segment = 0; segment < nbSegments; ++segment)
            {
                // Columns of this lane, in horizontal scan order q.
                int colQ[kColsPerLane];
                int colX[kColsPerLane];
                bool colValid[kColsPerLane];
#pragma unroll
                for (int k = 0; k < kColsPerLane; ++k)
                {
                    colQ[k] = segment * kColsPerSegment + k * kWarpSize + lane;
                    colValid[k] = colQ[k] < W;
                    colX[k] = kHorizontal == HorizontalPool::kLeft ? W - 1 - colQ[k] : colQ[k];
                }

                // 1. Load: all loads of the iteration are independent, so they are in flight together.
                float vertical[kRowsPerWarp][kColsPerLane];
                float horizontal[kRowsPerWarp][kColsPerLane];
#pragma unroll
                for (int r = 0; r < kRowsPerWarp; ++r)
                {
#pragma unroll
                    for (int k = 0; k < kColsPerLane; ++k)
                    {
                        bool const valid = rowValid[r] && colValid[k];
                        int64_t const index = planeOffset + static_cast<int64_t>(rowY[r]) * W + colX[k];
                        vertical[r][k] = (kHasVertical && valid) ? toFloat(verticalIn[index]) : kIdentity;
                        horizontal[r][k] = (kHasHorizontal && valid) ? toFloat(horizontalIn[index]) : kIdentity;
                    }
                }

                // 2. Row scan (all lanes take part in every shuffle; invalid slots hold the identity,
                //    and they only ever come after the valid ones in scan order).
                if (kHasHorizontal)
                {
#pragma unroll
                    for (int r = 0; r < kRowsPerWarp; ++r)
                    {
#pragma unroll
                        for (int k = 0; k < kColsPerLane; ++k)
                        {
                            float v = horizontal[r][k];
#pragma unroll
                            for (int delta = 1; delta < kWarpSize; delta *= 2)
                            {
                                float const earlier = __shfl_up_sync(kFullWarpMask, v, delta);
                                if (lane >= delta)
                                {
                                    v = maxPropagateNan(v, earlier);
                                }
                            }
                            v = maxPropagateNan(v, rowCarry[r]);
                            rowCarry[r] = __shfl_sync(kFullWarpMask, v, kWarpSize - 1);
                            horizontal[r][k] = v;
                        }
                    }
                }

                // 3. Column scan: inclusive over this warp's rows, then the exclusive prefix over earlier
                //    warps of the chunk and earlier chunks.
                float chunkTotal[kColsPerLane];
                if (kHasVertical)
                {
#pragma unroll
                    for (int k = 0; k < kColsPerLane; ++k)
                    {
#pragma unroll
                        for (int r = 1; r < kRowsPerWarp; ++r)
                        {
                            vertical[r][k] = maxPropagateNan(vertical[r][k], vertical[r - 1][k]);
                        }
                        warpTotals[warp * kColsPerSegment + k * kWarpSize + lane] = vertical[kRowsPerWarp - 1][k];
                    }
                    __syncthreads(); // (A) warp totals and the previous chunk's carry are visible
#pragma unroll
                    for (int k = 0; k < kColsPerLane; ++k)
                    {
                        float before = colValid[k] ? columnCarry[colQ[k]] : kIdentity;
                        for (int w = 0; w < warp; ++w)
                        {
                            before = maxPropagateNan(before, warpTotals[w * kColsPerSegment + k * kWarpSize + lane]);
                        }
#pragma unroll
                        for (int r = 0; r < kRowsPerWarp; ++r)
                        {
                            vertical[r][k] = maxPropagateNan(vertical[r][k], before);
                        }
                        chunkTotal[k] = vertical[kRowsPerWarp - 1][k]; // used by the last warp only
                    }
                }

                // 4. Store once.
#pragma unroll
                for (int r = 0; r < kRowsPerWarp; ++r)
                {
#pragma unroll
                    for (int k = 0; k < kColsPerLane; ++k)
                    {
                        if (rowValid[r] && colValid[k])
                        {
                            float result;
                            if (kHasVertical && kHasHorizontal)
                            {
                                result = vertical[r][k] + horizontal[r][k];
                            }
                            else if (kHasVertical)
                            {
                                result = vertical[r][k];
                            }
                            else
                            {
                                result = horizontal[r][k];
                            }
                            out[planeOffset + static_cast<int64_t>(rowY[r]) * W + colX[k]] = fromFloat<T>(result);
                        }
                    }
                }

                if (kHasVertical)
                {
                    __syncthreads(); // (B) every warp has read warpTotals and columnCarry of this segment
                    if (warp == kWarpsPerBlock - 1)
                    {
#pragma unroll
                        for (int k = 0; k < kColsPerLane; ++k)
                        {
                            if (colValid[k])
                            {
                                columnCarry[colQ[k]] = chunkTotal[k];
                            }
                        }
                    }
                    // The next write of warpTotals (next segment) happens after (B); the next read of this
                    // columnCarry segment (next chunk) happens after that chunk's (A).
                }
            }
        }
        if (kHasVertical)
        {
            __syncthreads(); // the next plane re-initialises columnCarry
        }
    }
}

int sharedBytesFor(bool hasVertical, int W)
{
    return hasVertical ? static_cast<int>(kWarpTotalsBytes + sizeof(float) * static_cast<size_t>(W)) : 0;
}

int maxSharedBytesOptIn()
{
#if defined(CORNERPOOL_HOST_EMULATION)
    return static_cast<int>(kDefaultSharedBytes);
#else
    int device = 0;
    cudaError_t status = cudaGetDevice(&device);
    int bytes = 0;
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    }
    return status == cudaSuccess ? bytes : -static_cast<int>(status);
#endif
}

template <typename T, VerticalPool kVertical, HorizontalPool kHorizontal>
int launch(void const* verticalIn, void const* horizontalIn, void* out, int N, int C, int H, int W,
    cudaStream_t stream)
{
    constexpr bool kHasVertical = kVertical != VerticalPool::kNone;
    int64_t const planes = static_cast<int64_t>(N) * C;
    if (planes == 0 || H == 0 || W == 0)
    {
        return CORNER_POOL_SUCCESS;
    }
    int const sharedBytes = sharedBytesFor(kHasVertical, W);
    auto* const kernel = &cornerPoolKernel<T, kVertical, kHorizontal>;
    if (static_cast<size_t>(sharedBytes) > kDefaultSharedBytes)
    {
        int const limit = maxSharedBytesOptIn();
        if (limit < 0)
        {
            return -limit; // the cudaError_t of the device query
        }
        if (sharedBytes > limit)
        {
            return CORNER_POOL_WIDTH_TOO_LARGE;
        }
#if !defined(CORNERPOOL_HOST_EMULATION)
        cudaError_t const status
            = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, sharedBytes);
        if (status != cudaSuccess)
        {
            return static_cast<int>(status);
        }
#endif
    }
    unsigned const blocks = static_cast<unsigned>(planes < INT_MAX ? planes : INT_MAX);
    T const* const v = static_cast<T const*>(verticalIn);
    T const* const h = static_cast<T const*>(horizontalIn);
    T* const o = static_cast<T*>(out);
#if defined(CORNERPOOL_HOST_EMULATION)
    (void) stream;
    simt::launch(simt::Dim3{blocks, 1, 1}, simt::Dim3{kThreadsPerBlock, 1, 1}, static_cast<size_t>(sharedBytes), kernel,
        v, h, o, planes, H, W);
    return CORNER_POOL_SUCCESS;
#else
    kernel<<<blocks, kThreadsPerBlock, sharedBytes, stream>>>(v, h, o, planes, H, W);
    return static_cast<int>(cudaGetLastError());
#endif
}

int checkShape(int N, int C, int H, int W)
{
    // Row/column scan positions run up to one chunk/segment past H/W in int arithmetic.
    constexpr int kMaxExtent = INT_MAX - kColsPerSegment;
    bool const valid = N >= 0 && C >= 0 && H >= 0 && W >= 0 && H <= kMaxExtent && W <= kMaxExtent;
    return valid ? CORNER_POOL_SUCCESS : CORNER_POOL_INVALID_SHAPE;
}

bool isEmpty(int N, int C, int H, int W)
{
    return static_cast<int64_t>(N) * C * H * W == 0;
}

template <VerticalPool kVertical, HorizontalPool kHorizontal>
int dispatchDtype(int dtype, void const* verticalIn, void const* horizontalIn, void* out, int N, int C, int H, int W,
    cudaStream_t stream)
{
    switch (dtype)
    {
    case CORNER_POOL_FLOAT32:
        return launch<float, kVertical, kHorizontal>(verticalIn, horizontalIn, out, N, C, H, W, stream);
    case CORNER_POOL_FLOAT16:
        return launch<__half, kVertical, kHorizontal>(verticalIn, horizontalIn, out, N, C, H, W, stream);
    default: return CORNER_POOL_INVALID_DTYPE;
    }
}

} // namespace

extern "C" int cornerPoolForward(
    int mode, int dtype, void const* a, void const* b, void* out, int N, int C, int H, int W, cudaStream_t stream)
{
    if (mode != CORNER_POOL_TOP_LEFT && mode != CORNER_POOL_BOTTOM_RIGHT)
    {
        return CORNER_POOL_INVALID_MODE;
    }
    if (dtype != CORNER_POOL_FLOAT32 && dtype != CORNER_POOL_FLOAT16)
    {
        return CORNER_POOL_INVALID_DTYPE;
    }
    if (int const status = checkShape(N, C, H, W))
    {
        return status;
    }
    if (isEmpty(N, C, H, W))
    {
        return CORNER_POOL_SUCCESS;
    }
    if (a == nullptr || b == nullptr || out == nullptr)
    {
        return CORNER_POOL_NULL_POINTER;
    }
    if (mode == CORNER_POOL_TOP_LEFT)
    {
        return dispatchDtype<VerticalPool::kTop, HorizontalPool::kLeft>(dtype, a, b, out, N, C, H, W, stream);
    }
    return dispatchDtype<VerticalPool::kBottom, HorizontalPool::kRight>(dtype, a, b, out, N, C, H, W, stream);
}

extern "C" int cornerPoolDirectional(
    int direction, int dtype, void const* in, void* out, int N, int C, int H, int W, cudaStream_t stream)
{
    if (direction < CORNER_POOL_TOP || direction > CORNER_POOL_RIGHT)
    {
        return CORNER_POOL_INVALID_MODE;
    }
    if (dtype != CORNER_POOL_FLOAT32 && dtype != CORNER_POOL_FLOAT16)
    {
        return CORNER_POOL_INVALID_DTYPE;
    }
    if (int const status = checkShape(N, C, H, W))
    {
        return status;
    }
    if (isEmpty(N, C, H, W))
    {
        return CORNER_POOL_SUCCESS;
    }
    if (in == nullptr || out == nullptr)
    {
        return CORNER_POOL_NULL_POINTER;
    }
    switch (direction)
    {
    case CORNER_POOL_TOP:
        return dispatchDtype<VerticalPool::kTop, HorizontalPool::kNone>(dtype, in, nullptr, out, N, C, H, W, stream);
    case CORNER_POOL_BOTTOM:
        return dispatchDtype<VerticalPool::kBottom, HorizontalPool::kNone>(dtype, in, nullptr, out, N, C, H, W, stream);
    case CORNER_POOL_LEFT:
        return dispatchDtype<VerticalPool::kNone, HorizontalPool::kLeft>(dtype, nullptr, in, out, N, C, H, W, stream);
    default:
        return dispatchDtype<VerticalPool::kNone, HorizontalPool::kRight>(dtype, nullptr, in, out, N, C, H, W, stream);
    }
}

extern "C" char const* cornerPoolStatusString(int status)
{
    switch (status)
    {
    case CORNER_POOL_SUCCESS: return "success";
    case CORNER_POOL_INVALID_MODE: return "invalid mode/direction";
    case CORNER_POOL_INVALID_DTYPE: return "invalid dtype (expected 0 = float32 or 1 = float16)";
    case CORNER_POOL_INVALID_SHAPE: return "invalid shape (negative dimension, or H or W above 2^31 - 129)";
    case CORNER_POOL_NULL_POINTER: return "null data pointer for a non-empty tensor";
    case CORNER_POOL_WIDTH_TOO_LARGE:
        return "width too large: the vertical pool keeps one float per column in shared memory "
               "(see cornerPoolMaxWidth)";
    default: break;
    }
#if defined(CORNERPOOL_HOST_EMULATION)
    return status > 0 ? "CUDA error (host emulation)" : "unknown corner pool status";
#else
    return status > 0 ? cudaGetErrorString(static_cast<cudaError_t>(status)) : "unknown corner pool status";
#endif
}

extern "C" int cornerPoolMaxWidth(void)
{
    int const limit = maxSharedBytesOptIn();
    if (limit <= static_cast<int>(kWarpTotalsBytes))
    {
        return 0; // the device could not be queried
    }
    return static_cast<int>((static_cast<size_t>(limit) - kWarpTotalsBytes) / sizeof(float));
}
