/*
 * Corner pooling kernels: one pass over memory, coalesced and vectorised in both scan directions.
 *
 * Work decomposition (all pools share one kernel template):
 *   - one block owns one (n, c) plane at a time, and walks several when there are more planes than
 *     resident blocks (grid stride); its size (1..16 warps) and the
 *     number of lanes per row are chosen on the host from N, C, H, W and the GPU's SM count (chooseShape);
 *   - a row segment is covered by `lanesPerRow` (8, 16 or 32) lanes, each holding 4 consecutive columns
 *     (one 16-byte float4 / 8-byte half4 load or store per lane when the row allows it), so narrow maps
 *     (Saccade's 64x64, W <= 32) put 2 or 4 rows side by side in a warp instead of idling lanes;
 *   - each lane holds 4 row slots: the warp covers kSlots * (32 / lanesPerRow) consecutive rows;
 *   - rows are taken in vertical scan order s (bottom-up for TopPool), columns in horizontal scan order q
 *     (right-to-left for LeftPool); a block walks its plane in steps of (chunk of rows, segment of columns),
 *     and the loads of the next step are issued before the current step's scans and barriers
 *     (software double buffering), so memory stays busy while the block synchronises;
 *   - row scan (LeftPool/RightPool of b): a 3-max scan of the lane's 4 columns, a shuffle scan of the lane
 *     totals (log2(lanesPerRow) steps, amortised over 4 columns), a per-row carry across segments;
 *   - column scan (TopPool/BottomPool of a): each lane scans its 4 row slots in registers, rows side by side
 *     in a warp combine by shuffles, warps combine through shared memory (the warp totals of the step and
 *     one running float per column for earlier chunks);
 *   - out = column pool + row pool is written once.
 * Memory traffic is exactly: read a once, read b once, write out once (3 * numel * sizeof(T)).
 *
 * Max is one FMNMX.NAN instruction on sm_80+ (PTX max.NaN.f32); sm_75 has no NaN-propagating max and
 * keeps the two compares and a select. Arithmetic is in float: half loads widen exactly, max is exact,
 * and the fused sum is rounded to the storage type once (see cornerPoolKernel.h for why that equals
 * PyTorch's half add).
 */
#include "cornerPoolKernel.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <vector_functions.h>

#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(CORNERPOOL_HOST_EMULATION)
// Test-only: runs this exact source on CPU fibers (plugins/tests/simtHostEmulation.h).
#include "simtHostEmulation.h"
#endif

namespace
{

constexpr int kWarpSize = 32;
constexpr int kMaxWarpsPerBlock = 16;
constexpr int kMinWarpsPerBlock = 4;
constexpr int kMaxThreadsPerBlock = kWarpSize * kMaxWarpsPerBlock;
constexpr int kSlots = 4;                          // row slots per lane
constexpr int kVec = 4;                            // consecutive columns per lane
constexpr int kMaxSegment = kWarpSize * kVec;      // columns per segment with 32 lanes per row
constexpr unsigned kFullWarpMask = 0xffffffffu;
// Dynamic shared memory every device grants without an opt-in.
constexpr size_t kDefaultSharedBytes = 48 * 1024;
// Warp totals of the narrowest configuration that any width falls back to (8 warps x 128 columns): what
// the documented width limit, (max shared memory - 4 KiB) / 4, leaves for them.
constexpr size_t kBaseWarpTotalsBytes = 4096;
// Resident warps per SM the block size aims for when there are few planes (latency hiding).
constexpr int kTargetWarpsPerSm = 16;

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
__device__ __forceinline__ float maxPropagateNan(float a, float b)
{
#if defined(CORNERPOOL_HOST_EMULATION) && !defined(CORNERPOOL_EMULATE_PRE_SM80)
    return simt::maxNaN(a, b); // what max.NaN.f32 computes, modelled in simtHostEmulation.h
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    float result;
    asm("max.NaN.f32 %0, %1, %2;" : "=f"(result) : "f"(a), "f"(b)); // one FMNMX.NAN
    return result;
#else
    // sm_75 (and the emulation of it): `a != a` is the NaN test; never compile with --use_fast_math.
    return (a > b || a != a) ? a : b;
#endif
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
    extern __shared__ float4 cornerPoolDynamicShared[]; // float4: 16-byte aligned for the vector accesses
    return reinterpret_cast<float*>(cornerPoolDynamicShared);
#endif
}

// Naturally aligned vector access (a misaligned one faults on the GPU; the emulation checks it). Global
// memory: inputs are read once (read-only path), the output is written once (streaming store: evict first).
template <typename V>
__device__ __forceinline__ V loadGlobal(void const* p)
{
#if defined(CORNERPOOL_HOST_EMULATION)
    return simt::loadAligned<V>(p);
#else
    return __ldg(static_cast<V const*>(p));
#endif
}

template <typename V>
__device__ __forceinline__ void storeGlobal(void* p, V const& v)
{
#if defined(CORNERPOOL_HOST_EMULATION)
    simt::storeAligned<V>(p, v);
#else
    __stcs(static_cast<V*>(p), v);
#endif
}

__device__ __forceinline__ float4 loadShared(float const* p)
{
#if defined(CORNERPOOL_HOST_EMULATION)
    return simt::loadAligned<float4>(p);
#else
    return *reinterpret_cast<float4 const*>(p);
#endif
}

__device__ __forceinline__ void storeShared(float* p, float4 const& v)
{
#if defined(CORNERPOOL_HOST_EMULATION)
    simt::storeAligned<float4>(p, v);
#else
    *reinterpret_cast<float4*>(p) = v;
#endif
}

// 4 consecutive elements as one aligned memory word: float4 (16 bytes) or 4 halves in a uint2 (8 bytes).
// The raw tiles stay in this form between the prefetch and the scan; toFloats widens them in one
// instruction per element (HADD2.F32 reads a half straight out of either half of a register).
template <typename T>
struct Quad;

template <>
struct Quad<float>
{
    using Word = float4;
    __device__ __forceinline__ static Word filled(float v)
    {
        return make_float4(v, v, v, v);
    }
    __device__ __forceinline__ static Word fromElements(float const (&v)[kVec])
    {
        return make_float4(v[0], v[1], v[2], v[3]);
    }
    __device__ __forceinline__ static void toFloats(Word const& w, float (&v)[kVec])
    {
        v[0] = w.x;
        v[1] = w.y;
        v[2] = w.z;
        v[3] = w.w;
    }
    __device__ __forceinline__ static Word pack(float const (&v)[kVec])
    {
        return make_float4(v[0], v[1], v[2], v[3]);
    }
};

template <>
struct Quad<__half>
{
    using Word = uint2;
    __device__ __forceinline__ static unsigned bits(__half2 h)
    {
        unsigned u;
        memcpy(&u, static_cast<void const*>(&h), sizeof(u)); // a register rename on the GPU
        return u;
    }
    __device__ __forceinline__ static __half2 halves(unsigned u)
    {
        __half2 h;
        memcpy(static_cast<void*>(&h), &u, sizeof(u));
        return h;
    }
    __device__ __forceinline__ static Word filled(float v)
    {
        unsigned const pair = bits(__float2half2_rn(v));
        return make_uint2(pair, pair);
    }
    __device__ __forceinline__ static Word fromElements(__half const (&v)[kVec])
    {
        return make_uint2(bits(__halves2half2(v[0], v[1])), bits(__halves2half2(v[2], v[3])));
    }
    __device__ __forceinline__ static void toFloats(Word const& w, float (&v)[kVec])
    {
        float2 const lo = __half22float2(halves(w.x));
        float2 const hi = __half22float2(halves(w.y));
        v[0] = lo.x;
        v[1] = lo.y;
        v[2] = hi.x;
        v[3] = hi.y;
    }
    __device__ __forceinline__ static Word pack(float const (&v)[kVec])
    {
        // One rounding per element, as fromFloat<__half>: the pair conversion packs two in one instruction.
        return make_uint2(bits(__floats2half2_rn(v[0], v[1])), bits(__floats2half2_rn(v[2], v[3])));
    }
};

// Position of a block in its walk: plane, chunk of rows, segment of columns.
struct Cursor
{
    int64_t plane;
    int chunk;
    int segment;
};

// Geometry of one launch, the same for every thread of it.
struct Layout
{
    int64_t planes;
    int H;
    int W;
    int laneShift;     // log2(lanes per row)
    int lanesPerRow;   // 8, 16 or 32
    int segmentWidth;  // lanesPerRow * kVec columns
    int rowsPerWarp;   // kSlots * (32 / lanesPerRow)
    int rowsPerChunk;  // rowsPerWarp * warps
    int nbChunks;
    int nbSegments;
};

// Where one lane's elements of a step are.
struct LanePlace
{
    int64_t rowStart[kSlots]; // element index of column 0 of each row slot's row
    bool rowValid[kSlots];
    int q0;                   // scan position of the lane's first column
};

template <VerticalPool kVertical>
__device__ __forceinline__ LanePlace placeOf(Layout const& g, Cursor const& c, int warp, int group, int laneInRow)
{
    LanePlace p;
    int64_t const planeOffset = c.plane * static_cast<int64_t>(g.H) * g.W;
#pragma unroll
    for (int r = 0; r < kSlots; ++r)
    {
        int const s = c.chunk * g.rowsPerChunk + warp * g.rowsPerWarp + group * kSlots + r;
        p.rowValid[r] = s < g.H;
        int const y = kVertical == VerticalPool::kTop ? g.H - 1 - s : s;
        p.rowStart[r] = planeOffset + static_cast<int64_t>(y) * g.W;
    }
    p.q0 = c.segment * g.segmentWidth + laneInRow * kVec;
    return p;
}

// Loads the lane's 4 row slots of `in`, each as the memory word of its 4 columns in ascending x (toScanOrder
// turns them into scan order); slots outside the plane hold the max identity -inf. kVectorIO: W % 4 == 0
// and aligned tensors, so a lane's 4 columns are one aligned word, wholly inside the row or wholly outside.
template <typename T, HorizontalPool kHorizontal, bool kVectorIO>
__device__ __forceinline__ void loadTile(
    T const* __restrict__ in, LanePlace const& p, int W, typename Quad<T>::Word (&raw)[kSlots])
{
    using Word = typename Quad<T>::Word;
    // Lowest x of the lane's columns: q0 for a left-to-right scan, W - 1 - (q0 + 3) right-to-left.
    int const x0 = kHorizontal == HorizontalPool::kLeft ? W - kVec - p.q0 : p.q0;
#pragma unroll
    for (int r = 0; r < kSlots; ++r)
    {
        if (kVectorIO)
        {
            raw[r] = (p.rowValid[r] && p.q0 < W) ? loadGlobal<Word>(in + p.rowStart[r] + x0) : Quad<T>::filled(-INFINITY);
        }
        else
        {
            T const identity = fromFloat<T>(-INFINITY);
            T v[kVec];
#pragma unroll
            for (int i = 0; i < kVec; ++i)
            {
                int const x = x0 + i; // may lie outside [0, W) at the row ends
                v[i] = (p.rowValid[r] && x >= 0 && x < W) ? in[p.rowStart[r] + x] : identity;
            }
            raw[r] = Quad<T>::fromElements(v);
        }
    }
}

// The raw words (ascending x) as floats in scan order: column j = scan position q0 + j.
template <typename T, HorizontalPool kHorizontal>
__device__ __forceinline__ void toScanOrder(typename Quad<T>::Word const (&raw)[kSlots], float (&v)[kSlots][kVec])
{
#pragma unroll
    for (int r = 0; r < kSlots; ++r)
    {
        float ascending[kVec];
        Quad<T>::toFloats(raw[r], ascending);
#pragma unroll
        for (int j = 0; j < kVec; ++j)
        {
            v[r][j] = kHorizontal == HorizontalPool::kLeft ? ascending[kVec - 1 - j] : ascending[j];
        }
    }
}

template <typename T, HorizontalPool kHorizontal, bool kVectorIO>
__device__ __forceinline__ void storeTile(T* __restrict__ out, LanePlace const& p, int W, float const (&result)[kSlots][kVec])
{
#pragma unroll
    for (int r = 0; r < kSlots; ++r)
    {
        if (!p.rowValid[r])
        {
            continue;
        }
        if (kVectorIO)
        {
            if (p.q0 < W)
            {
                float v[kVec];
#pragma unroll
                for (int j = 0; j < kVec; ++j)
                {
                    v[j] = kHorizontal == HorizontalPool::kLeft ? result[r][kVec - 1 - j] : result[r][j];
                }
                int const x0 = kHorizontal == HorizontalPool::kLeft ? W - kVec - p.q0 : p.q0;
                storeGlobal(out + p.rowStart[r] + x0, Quad<T>::pack(v));
            }
        }
        else
        {
#pragma unroll
            for (int j = 0; j < kVec; ++j)
            {
                int const q = p.q0 + j;
                if (q < W)
                {
                    int const x = kHorizontal == HorizontalPool::kLeft ? W - 1 - q : q;
                    out[p.rowStart[r] + x] = fromFloat<T>(result[r][j]);
                }
            }
        }
    }
}

/*
 * verticalIn: tensor pooled along H (a); horizontalIn: tensor pooled along W (b). Either pool may be
 * kNone (single-direction pools); then its input is unused. out = vertical + horizontal.
 * Shared memory (vertical pools only): warps * segmentWidth floats of warp totals, then roundUp(W, 4)
 * floats of column carry (indexed by scan position q).
 */
template <typename T, VerticalPool kVertical, HorizontalPool kHorizontal, bool kVectorIO>
__global__ void __launch_bounds__(kMaxThreadsPerBlock) cornerPoolKernel(T const* __restrict__ verticalIn,
    T const* __restrict__ horizontalIn, T* __restrict__ out, int64_t planes, int H, int W, int laneShift)
{
    constexpr bool kHasVertical = kVertical != VerticalPool::kNone;
    constexpr bool kHasHorizontal = kHorizontal != HorizontalPool::kNone;
    float const kIdentity = -INFINITY; // neutral for max, and NaN still wins over it

    int const warps = static_cast<int>(blockDim.x) / kWarpSize;
    Layout g;
    g.planes = planes;
    g.H = H;
    g.W = W;
    g.laneShift = laneShift;
    g.lanesPerRow = 1 << laneShift;
    g.segmentWidth = g.lanesPerRow * kVec;
    g.rowsPerWarp = kSlots * (kWarpSize >> laneShift);
    g.rowsPerChunk = g.rowsPerWarp * warps;
    g.nbChunks = (H + g.rowsPerChunk - 1) / g.rowsPerChunk;
    g.nbSegments = (W + g.segmentWidth - 1) / g.segmentWidth;

    int const lane = static_cast<int>(threadIdx.x) % kWarpSize;
    int const warp = static_cast<int>(threadIdx.x) / kWarpSize;
    int const laneInRow = lane & (g.lanesPerRow - 1);
    int const group = lane >> laneShift;              // which of the rows side by side in the warp
    int const lastGroup = (kWarpSize >> laneShift) - 1;
    float* const warpTotals = dynamicSharedFloats();  // [warps][segmentWidth]
    float* const columnCarry = warpTotals + warps * g.segmentWidth; // [roundUp(W, 4)], by scan position

    Cursor cursor{static_cast<int64_t>(blockIdx.x), 0, 0};
    if (cursor.plane >= planes)
    {
        return; // the whole block: no barrier is skipped by only some threads
    }
    typename Quad<T>::Word rawVertical[kSlots];
    typename Quad<T>::Word rawHorizontal[kSlots];
    LanePlace place = placeOf<kVertical>(g, cursor, warp, group, laneInRow);
    if (kHasVertical)
    {
        loadTile<T, kHorizontal, kVectorIO>(verticalIn, place, W, rawVertical);
    }
    if (kHasHorizontal)
    {
        loadTile<T, kHorizontal, kVectorIO>(horizontalIn, place, W, rawHorizontal);
    }
    float rowCarry[kSlots]; // horizontal scan carry of each row slot across segments

    while (true)
    {
        float vertical[kSlots][kVec];
        float horizontal[kSlots][kVec];
        if (kHasVertical)
        {
            toScanOrder<T, kHorizontal>(rawVertical, vertical);
        }
        if (kHasHorizontal)
        {
            toScanOrder<T, kHorizontal>(rawHorizontal, horizontal);
        }

        // 1. Prefetch the next step (same block, so the same decision in every thread) while this one is
        //    scanned: its loads are in flight across both barriers below.
        Cursor next = cursor;
        if (++next.segment == g.nbSegments)
        {
            next.segment = 0;
            if (++next.chunk == g.nbChunks)
            {
                next.chunk = 0;
                next.plane += gridDim.x;
            }
        }
        bool const hasNext = next.plane < planes;
        LanePlace const here = place;
        if (hasNext)
        {
            place = placeOf<kVertical>(g, next, warp, group, laneInRow);
            if (kHasVertical)
            {
                loadTile<T, kHorizontal, kVectorIO>(verticalIn, place, W, rawVertical);
            }
            if (kHasHorizontal)
            {
                loadTile<T, kHorizontal, kVectorIO>(horizontalIn, place, W, rawHorizontal);
            }
        }

        if (kHasVertical && cursor.chunk == 0 && cursor.segment == 0)
        {
            // New plane. Every thread has passed the previous step's (B), after which nothing reads or
            // writes columnCarry until here; this step's (A) orders these writes before the reads.
            int const carryLength = (W + kVec - 1) / kVec * kVec;
            for (int q = static_cast<int>(threadIdx.x); q < carryLength; q += static_cast<int>(blockDim.x))
            {
                columnCarry[q] = kIdentity;
            }
        }
        if (cursor.segment == 0)
        {
#pragma unroll
            for (int r = 0; r < kSlots; ++r)
            {
                rowCarry[r] = kIdentity; // new rows
            }
        }

        // 2. Row scan: the lane's 4 columns in registers, then the lane totals across the row's lanes
        //    (every lane of the warp takes part in every shuffle; out-of-plane slots hold the identity and
        //    come after the valid ones in scan order).
        if (kHasHorizontal)
        {
#pragma unroll
            for (int r = 0; r < kSlots; ++r)
            {
#pragma unroll
                for (int j = 1; j < kVec; ++j)
                {
                    horizontal[r][j] = maxPropagateNan(horizontal[r][j], horizontal[r][j - 1]);
                }
                float total = horizontal[r][kVec - 1];
#pragma unroll
                for (int step = 0; step < 5; ++step)
                {
                    int const delta = 1 << step;
                    if (delta < g.lanesPerRow) // warp-uniform
                    {
                        // Lanes less than delta into their row get their own value back: max(v, v) = v.
                        total = maxPropagateNan(total, __shfl_up_sync(kFullWarpMask, total, delta, g.lanesPerRow));
                    }
                }
                float const earlierLanes = __shfl_up_sync(kFullWarpMask, total, 1, g.lanesPerRow);
                float const before = laneInRow == 0 ? rowCarry[r] : maxPropagateNan(earlierLanes, rowCarry[r]);
#pragma unroll
                for (int j = 0; j < kVec; ++j)
                {
                    horizontal[r][j] = maxPropagateNan(horizontal[r][j], before);
                }
                rowCarry[r] = __shfl_sync(kFullWarpMask, horizontal[r][kVec - 1], g.lanesPerRow - 1, g.lanesPerRow);
            }
        }

        // 3. Column scan: inclusive over the lane's row slots, then over the rows side by side in the warp,
        //    then the exclusive prefix over earlier warps of the chunk and earlier chunks.
        float chunkTotal[kVec];
        if (kHasVertical)
        {
            float groupBefore[kVec];
            float warpTotal[kVec];
#pragma unroll
            for (int j = 0; j < kVec; ++j)
            {
#pragma unroll
                for (int r = 1; r < kSlots; ++r)
                {
                    vertical[r][j] = maxPropagateNan(vertical[r][j], vertical[r - 1][j]);
                }
                float inclusive = vertical[kSlots - 1][j];
                groupBefore[j] = kIdentity;
                if (g.lanesPerRow < kWarpSize) // warp-uniform: several rows side by side
                {
#pragma unroll
                    for (int step = 3; step < 5; ++step)
                    {
                        int const delta = 1 << step;
                        if (delta >= g.lanesPerRow)
                        {
                            // Lanes of the first delta / lanesPerRow groups get their own value back.
                            inclusive = maxPropagateNan(inclusive, __shfl_up_sync(kFullWarpMask, inclusive, delta));
                        }
                    }
                    float const earlierGroups = __shfl_up_sync(kFullWarpMask, inclusive, g.lanesPerRow);
                    groupBefore[j] = group == 0 ? kIdentity : earlierGroups;
                }
                warpTotal[j] = inclusive;
            }
            if (group == lastGroup)
            {
                storeShared(warpTotals + warp * g.segmentWidth + laneInRow * kVec,
                    make_float4(warpTotal[0], warpTotal[1], warpTotal[2], warpTotal[3]));
            }
            __syncthreads(); // (A) warp totals and the previous chunk's carry are visible
            float4 before = make_float4(kIdentity, kIdentity, kIdentity, kIdentity);
            if (here.q0 < W)
            {
                before = loadShared(columnCarry + here.q0);
            }
            for (int w = 0; w < warp; ++w)
            {
                float4 const t = loadShared(warpTotals + w * g.segmentWidth + laneInRow * kVec);
                before.x = maxPropagateNan(before.x, t.x);
                before.y = maxPropagateNan(before.y, t.y);
                before.z = maxPropagateNan(before.z, t.z);
                before.w = maxPropagateNan(before.w, t.w);
            }
            float const earlier[kVec] = {before.x, before.y, before.z, before.w};
#pragma unroll
            for (int j = 0; j < kVec; ++j)
            {
                float const prefix = maxPropagateNan(earlier[j], groupBefore[j]);
#pragma unroll
                for (int r = 0; r < kSlots; ++r)
                {
                    vertical[r][j] = maxPropagateNan(vertical[r][j], prefix);
                }
                chunkTotal[j] = vertical[kSlots - 1][j]; // used by the last group of the last warp only
            }
        }

        // 4. Store once.
        float result[kSlots][kVec];
#pragma unroll
        for (int r = 0; r < kSlots; ++r)
        {
#pragma unroll
            for (int j = 0; j < kVec; ++j)
            {
                result[r][j] = kHasVertical && kHasHorizontal ? vertical[r][j] + horizontal[r][j]
                                                              : (kHasVertical ? vertical[r][j] : horizontal[r][j]);
            }
        }
        storeTile<T, kHorizontal, kVectorIO>(out, here, W, result);

        if (kHasVertical)
        {
            __syncthreads(); // (B) every warp has read warpTotals and columnCarry of this step
            // The last chunk's carry is never read again (the next plane starts afresh): skipping its write
            // is what lets the next plane's initialisation follow (B) without another barrier.
            if (warp == warps - 1 && group == lastGroup && here.q0 < W && cursor.chunk + 1 < g.nbChunks)
            {
                storeShared(columnCarry + here.q0, make_float4(chunkTotal[0], chunkTotal[1], chunkTotal[2], chunkTotal[3]));
            }
            // The next write of warpTotals (next step) happens after (B); the next read of this columnCarry
            // segment (next chunk) happens after that step's (A).
        }
        if (!hasNext)
        {
            break;
        }
        cursor = next;
    }
}

// ---- launch configuration ----------------------------------------------------------------------------

// What the launch needs from the device, cached per device (queried once, not at every enqueue).
struct DeviceLimits
{
    int smCount;
    int maxSharedOptIn; // bytes of dynamic shared memory a block may opt in to
};

constexpr int kCachedDevices = 64;

// Returns 0 and fills `limits`, or the cudaError_t of the failed query.
int deviceLimits(DeviceLimits& limits)
{
#if defined(CORNERPOOL_HOST_EMULATION)
    int const device = 0;
#else
    int device = 0;
    if (cudaError_t const status = cudaGetDevice(&device); status != cudaSuccess)
    {
        return static_cast<int>(status);
    }
#endif
    // Packed smCount << 32 | bytes; 0 = not queried yet. Racing first queries store the same value.
    static std::atomic<uint64_t> cache[kCachedDevices];
    bool const cacheable = device >= 0 && device < kCachedDevices;
    if (cacheable)
    {
        uint64_t const packed = cache[device].load(std::memory_order_relaxed);
        if (packed != 0)
        {
            limits.smCount = static_cast<int>(packed >> 32);
            limits.maxSharedOptIn = static_cast<int>(packed & 0xffffffffu);
            return 0;
        }
    }
#if defined(CORNERPOOL_HOST_EMULATION)
    limits.smCount = simt::deviceAttribute(simt::kMultiProcessorCount);
    limits.maxSharedOptIn = simt::deviceAttribute(simt::kMaxSharedMemoryPerBlockOptin);
#else
    cudaError_t status = cudaDeviceGetAttribute(&limits.smCount, cudaDevAttrMultiProcessorCount, device);
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&limits.maxSharedOptIn, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    }
    if (status != cudaSuccess)
    {
        return static_cast<int>(status);
    }
#endif
    if (cacheable && limits.smCount > 0 && limits.maxSharedOptIn > 0)
    {
        cache[device].store(static_cast<uint64_t>(limits.smCount) << 32 | static_cast<uint32_t>(limits.maxSharedOptIn),
            std::memory_order_relaxed);
    }
    return 0;
}

struct Shape
{
    int laneShift;
    int warps;
    size_t sharedBytes;
};

size_t sharedBytesFor(bool hasVertical, int warps, int laneShift, int W)
{
    if (!hasVertical)
    {
        return 0;
    }
    size_t const carry = (static_cast<size_t>(W) + kVec - 1) / kVec * kVec; // size_t: no overflow for any int W
    return sizeof(float) * (static_cast<size_t>(warps) * (kVec << laneShift) + carry);
}

/*
 * Work per block from the problem: lanes per row from W (no idle lanes on 64- or 32-wide maps); warps per
 * block so that the grid holds about kTargetWarpsPerSm warps per SM even when N * C is small (batch 1 with
 * 128 channels on a 132-SM H100: 16-warp blocks instead of 8), but no more warps than the plane has rows
 * for, and at most the 8 x 128 columns of warp totals (4 KiB) when shared memory would pass 48 KiB.
 */
Shape chooseShape(bool hasVertical, int64_t planes, int H, int W, DeviceLimits const& limits)
{
    Shape s{};
    s.laneShift = W <= 8 * kVec ? 3 : (W <= 16 * kVec ? 4 : 5);
    int64_t const rowsPerWarp = kSlots * (kWarpSize >> s.laneShift);
    int64_t const warpsForRows = (static_cast<int64_t>(H) + rowsPerWarp - 1) / rowsPerWarp;
    int64_t const sms = limits.smCount > 0 ? limits.smCount : 1;
    int64_t const wanted = (kTargetWarpsPerSm * sms + planes - 1) / planes;
    int64_t warps = wanted < kMinWarpsPerBlock ? kMinWarpsPerBlock : (wanted > kMaxWarpsPerBlock ? kMaxWarpsPerBlock : wanted);
    warps = warps < warpsForRows ? warps : warpsForRows; // a warp without rows would only wait at the barriers
    int const baseWarps = static_cast<int>(kBaseWarpTotalsBytes / sizeof(float)) >> (s.laneShift + 2);
    if (warps > baseWarps && sharedBytesFor(hasVertical, static_cast<int>(warps), s.laneShift, W) > kDefaultSharedBytes)
    {
        warps = baseWarps;
    }
    s.warps = static_cast<int>(warps);
    s.sharedBytes = sharedBytesFor(hasVertical, s.warps, s.laneShift, W);
    return s;
}

// Raises the kernel's dynamic shared memory limit to the device's opt-in maximum, once per kernel and device.
template <typename Kernel>
int allowLargeShared(Kernel kernel, DeviceLimits const& limits)
{
    static std::atomic<bool> done[kCachedDevices];
#if defined(CORNERPOOL_HOST_EMULATION)
    int const device = 0;
#else
    int device = 0;
    if (cudaError_t const status = cudaGetDevice(&device); status != cudaSuccess)
    {
        return static_cast<int>(status);
    }
#endif
    bool const cacheable = device >= 0 && device < kCachedDevices;
    if (cacheable && done[device].load(std::memory_order_acquire))
    {
        return 0;
    }
    // Always the same value (the device maximum), so racing threads cannot leave a smaller one behind.
#if defined(CORNERPOOL_HOST_EMULATION)
    int const status = simt::setMaxDynamicSharedBytes(reinterpret_cast<void const*>(kernel), limits.maxSharedOptIn);
#else
    int const status = static_cast<int>(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, limits.maxSharedOptIn));
#endif
    if (status == 0 && cacheable)
    {
        done[device].store(true, std::memory_order_release);
    }
    return status;
}

template <typename T, VerticalPool kVertical, HorizontalPool kHorizontal, bool kVectorIO>
int launchVariant(T const* v, T const* h, T* o, int64_t planes, int H, int W, cudaStream_t stream)
{
    constexpr bool kHasVertical = kVertical != VerticalPool::kNone;
    DeviceLimits limits{};
    if (int const status = deviceLimits(limits))
    {
        return status;
    }
    // The documented limit first, in size_t (4 * W near INT_MAX does not fit an int): the same for every H
    // and batch, so a width that configurePlugin accepted (cornerPoolMaxWidth) always runs.
    if (kHasVertical && kBaseWarpTotalsBytes + sharedBytesFor(true, 0, 0, W) > static_cast<size_t>(limits.maxSharedOptIn))
    {
        return CORNER_POOL_WIDTH_TOO_LARGE;
    }
    Shape const shape = chooseShape(kHasVertical, planes, H, W, limits);
    auto* const kernel = &cornerPoolKernel<T, kVertical, kHorizontal, kVectorIO>;
    if (shape.sharedBytes > kDefaultSharedBytes)
    {
        if (int const status = allowLargeShared(kernel, limits))
        {
            return status;
        }
    }
    // About kTargetWarpsPerSm resident warps per SM; a block with more planes than that walks them in turn
    // (grid stride), prefetching the next plane's first rows while it finishes the last ones of this one.
    int64_t const residentBlocks = static_cast<int64_t>(limits.smCount > 0 ? limits.smCount : 1)
        * (shape.warps < kTargetWarpsPerSm ? kTargetWarpsPerSm / shape.warps : 1);
    int64_t const grid = planes < residentBlocks ? planes : residentBlocks;
    unsigned const blocks = static_cast<unsigned>(grid < INT_MAX ? grid : INT_MAX);
    unsigned const threads = static_cast<unsigned>(shape.warps * kWarpSize);
#if defined(CORNERPOOL_HOST_EMULATION)
    (void) stream;
    return simt::launch(simt::Dim3{blocks, 1, 1}, simt::Dim3{threads, 1, 1}, shape.sharedBytes, kernel, v, h, o, planes,
        H, W, shape.laneShift);
#else
    kernel<<<blocks, threads, shape.sharedBytes, stream>>>(v, h, o, planes, H, W, shape.laneShift);
    return static_cast<int>(cudaGetLastError());
#endif
}

bool alignedTo(void const* p, size_t bytes)
{
    return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

template <typename T, VerticalPool kVertical, HorizontalPool kHorizontal>
int launch(void const* verticalIn, void const* horizontalIn, void* out, int N, int C, int H, int W,
    cudaStream_t stream)
{
    int64_t const planes = static_cast<int64_t>(N) * C;
    if (planes == 0 || H == 0 || W == 0)
    {
        return CORNER_POOL_SUCCESS;
    }
    T const* const v = static_cast<T const*>(verticalIn);
    T const* const h = static_cast<T const*>(horizontalIn);
    T* const o = static_cast<T*>(out);
    // Vector loads/stores need every row start aligned to 4 elements (W % 4 == 0) and aligned tensors.
    size_t const word = kVec * sizeof(T);
    bool const vectorIO = W % kVec == 0 && alignedTo(v, word) && alignedTo(h, word) && alignedTo(o, word);
    return vectorIO ? launchVariant<T, kVertical, kHorizontal, true>(v, h, o, planes, H, W, stream)
                    : launchVariant<T, kVertical, kHorizontal, false>(v, h, o, planes, H, W, stream);
}

int checkShape(int N, int C, int H, int W)
{
    // Row/column scan positions run up to one chunk/segment past H/W in int arithmetic.
    constexpr int kMaxExtent = INT_MAX - kMaxSegment;
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
    DeviceLimits limits{};
    if (deviceLimits(limits) != 0 || static_cast<size_t>(limits.maxSharedOptIn) <= kBaseWarpTotalsBytes)
    {
        return 0; // the device could not be queried
    }
    // Rows this wide run with 8 warps x 128 columns of warp totals (chooseShape), i.e. 4 KiB.
    return static_cast<int>((static_cast<size_t>(limits.maxSharedOptIn) - kBaseWarpTotalsBytes) / sizeof(float));
}
