// Grouped expert GEMM on Hopper tensor cores (kernels/cuda/ops.h GroupedGemm, variants "wg*"):
// sm_90a warpgroup MMA (wgmma.mma_async m64nNk16, bf16 in, fp32 accumulate) with both operands
// read by the tensor cores from shared memory through matrix descriptors. Operand tiles are k 64
// (or 32) wide, one 128- (64-) byte row per tile row, in the swizzled K-major layout, filled by
// cp.async (the A rows are gathered through a_rows) and, for the weight rows, by cp.async or
// (variants "*t") the bulk tensor copy engine (TMA, a cached tensor map per weight tensor, an
// mbarrier per slot), in a kStages-deep ring: copies run kStages - 2 k-tiles ahead while one
// wgmma group stays in flight behind the block barrier. One block computes kBM (64 per consumer
// warpgroup) grouped rows x kBN weight rows (gated fc1: kBN / 2 columns of each half, so a thread
// holds the matching act and gate accumulators); tiles come from the device-side expert offsets
// (grouped::FindTile, no host sync, capturable). Same fused epilogues as the other variants.
// Compiled for sm_90a only (__CUDA_ARCH_FEAT_SM90_ALL); other targets get a trapping stub and
// WgmmaSupported() keeps the variants off devices other than compute capability 9.0.
#include <cuda.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "kernels/cuda/grouped_gemm_internal.cuh"
#include "kernels/cuda/pdl.cuh"

namespace bms::cuda {
namespace {

using grouped::CpAsync16;
using grouped::CpAsync16L2;
using grouped::CpAsyncCommit;
using grouped::CpAsyncWait;

// kWG consumer warpgroups along M (64 rows each), kBN weight rows per tile, kStages ring slots,
// kBK k per slot: 64 (128-byte rows, 128-byte swizzle) or 32 (64-byte rows, 64-byte swizzle:
// half the bytes per slot, so about twice the slots in flight in the same shared memory).
// kTma: the weight tile of each slot comes by the bulk tensor copy engine (one thread issues it;
// an mbarrier per slot counts its bytes) instead of per-thread cp.async (kBK 64 only).
template <int kWG_, int kBN_, int kStages_, int kBK_ = 64, bool kTma_ = false>
struct WgCfg {
  static constexpr int kWG = kWG_, kBN = kBN_, kStages = kStages_, kBK = kBK_;
  static constexpr bool kTma = kTma_;
  static constexpr int kBM = 64 * kWG;
  static constexpr int kRowBytes = kBK * 2;          // one swizzle row per tile row
  static constexpr int kChunks = kBK / 8;            // 16-byte chunks per tile row
  static constexpr int kSbo = 8 * kRowBytes;         // 8-row group stride (descriptor)
  static constexpr int kLayout = kBK == 64 ? 1 : 2;  // descriptor swizzle: 128 B or 64 B
  static constexpr int kThreads = 128 * kWG;
  static constexpr int kABytes = kBM * kBK * 2, kBBytes = kBN * kBK * 2;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes + 1024;  // + 1024-byte alignment slack
  static_assert(kStages >= 3 && kBN % 16 == 0 && kStageBytes % 1024 == 0 && (!kTma || kBK == 64));
  static_assert((kBK == 64 || kBK == 32) && kChunks * 16 == kRowBytes && kSbo == 8 * kRowBytes &&
                kLayout + kBK / 32 == 3);
};

// The device helpers exist for the sm_90a pass (and the host pass) only.
#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)

// Byte offset of 16-byte chunk c of tile row r in the swizzled layout of kRowBytes-wide rows
// (tile base 1024-byte aligned): address bits [4, 4 + log2(kRowBytes / 16)) XOR bits [7, ...),
// i.e. chunk XOR (row % 8) for 128-byte rows, chunk XOR ((row / 2) % 4) for 64-byte rows.
template <int kRowBytes>
__device__ __forceinline__ uint32_t Swz(int r, int c) {
  const uint32_t off = static_cast<uint32_t>(r * kRowBytes + c * 16);
  return off ^ (((off >> 7) & (kRowBytes / 16 - 1)) << 4);
}

// wgmma shared-memory matrix descriptor: K-major, swizzled (kLayout 1: 128 B, 2: 64 B), 8-row
// groups kSbo bytes apart (stride byte offset); the leading byte offset is unused for these.
template <int kSbo, int kLayout>
__device__ __forceinline__ uint64_t Desc(uint32_t smem_addr) {
  uint64_t d = (smem_addr & 0x3FFFFu) >> 4;
  d |= uint64_t{1} << 16;
  d |= uint64_t{kSbo >> 4} << 32;
  d |= uint64_t{kLayout} << 62;
  return d;
}

__device__ __forceinline__ void WgFence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void WgCommit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int kPending>
__device__ __forceinline__ void WgWait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}
// Generic-proxy shared-memory writes (cp.async) made visible to the async proxy (wgmma).
__device__ __forceinline__ void FenceProxyAsync() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Keeps the compiler from moving accumulator reads/writes across the async MMA boundaries.
template <int kN>
__device__ __forceinline__ void FenceAcc(float* d) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// d += A[64 x 16] * B[64 x 16]^T, both from shared memory (descriptors).
__device__ __forceinline__ void Wgmma64(float* d, uint64_t da, uint64_t db) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(1));
#endif
}

// d += A[64 x 16] * B[128 x 16]^T, both from shared memory (descriptors).
__device__ __forceinline__ void Wgmma128(float* d, uint64_t da, uint64_t db) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "l"(da), "l"(db), "r"(1));
#endif
}

// d += A[64 x 16] * B[192 x 16]^T, both from shared memory (descriptors).
__device__ __forceinline__ void Wgmma192(float* d, uint64_t da, uint64_t db) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n192k16.f32.bf16.bf16 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
      "}, %96, %97, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]),
        "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]),
        "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),
        "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]),
        "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
      : "l"(da), "l"(db), "r"(1));
#endif
}

// d += A[64 x 16] * B[256 x 16]^T, both from shared memory (descriptors).
__device__ __forceinline__ void Wgmma256(float* d, uint64_t da, uint64_t db) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, "
      "%127"
      "}, %128, %129, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]),
        "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]),
        "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),
        "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]),
        "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]),
        "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]),
        "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]),
        "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]),
        "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "r"(1));
#endif
}

template <int kN>
__device__ __forceinline__ void Wgmma(float* d, uint64_t da, uint64_t db) {
  if constexpr (kN == 64)
    Wgmma64(d, da, db);
  else if constexpr (kN == 128)
    Wgmma128(d, da, db);
  else if constexpr (kN == 192)
    Wgmma192(d, da, db);
  else
    Wgmma256(d, da, db);
}

__device__ __forceinline__ void MbarInit(uint32_t bar, uint32_t count) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
#endif
}
// Initialized mbarriers made visible to the copy engine (before the block's barrier).
__device__ __forceinline__ void MbarInitFence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void MbarExpectTx(uint32_t bar, uint32_t bytes) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
#endif
}
__device__ __forceinline__ void MbarWait(uint32_t bar, uint32_t parity) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
#endif
}
// Box (k0, row0) of the 2-D tensor map into shared memory at dst; completes bytes on bar.
__device__ __forceinline__ void TmaLoad2d(uint32_t dst, const CUtensorMap* map, int k0, int row0,
                                          uint32_t bar) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], "
      "[%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(k0), "r"(row0), "r"(bar)
      : "memory");
#endif
}

#endif  // !__CUDA_ARCH__ || __CUDA_ARCH_FEAT_SM90_ALL

template <GroupedEpilogue kEpi, class C>
__global__ void __launch_bounds__(C::kThreads, 1)
    GroupedGemmWgmmaKernel(GroupedGemmParams p, const __grid_constant__ CUtensorMap w_map) {
  PdlLaunchDependents();
  PdlWait();  // before any read of earlier kernels' outputs or global write (kernels/cuda/pdl.cuh)
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kHalves = kEpi == GroupedEpilogue::kGatedAct ? 2 : 1;
  constexpr int kBNc = C::kBN / kHalves;  // output columns per tile
  constexpr int kStages = C::kStages, kThreads = C::kThreads;
  constexpr int kCh = C::kChunks, kRowsPass = kThreads / kCh;  // tile rows per copy pass
  constexpr int kAIter = C::kBM * kCh / kThreads;  // 16-byte chunks per thread per stage
  constexpr int kBIter = C::kTma ? 1 : C::kBN * kCh / kThreads;
  constexpr int kAcc = C::kBN / 2;  // fp32 accumulators per thread (64 x kBN per warpgroup)
  static_assert(C::kBM * kCh % kThreads == 0 && C::kBN * kCh % kThreads == 0 && kBNc % 8 == 0);
  extern __shared__ unsigned char smem_raw[];
  const uint32_t smem_base =
      (static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
  unsigned char* smem =
      smem_raw + (smem_base - static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)));

  __shared__ __align__(8) uint64_t full_b[C::kTma ? kStages : 1];  // kTma: weight tile landed

  const grouped::Tile tile = grouped::FindTile<C::kBM>(p.expert_offsets, p.n_experts, blockIdx.y);
  if (tile.expert < 0) return;
  const int n0 = blockIdx.x * kBNc;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, wg = warp / 4;
  const uint32_t bar0 = static_cast<uint32_t>(__cvta_generic_to_shared(full_b));
  if constexpr (C::kTma) {
    if (tid == 0) {
      for (int s = 0; s < kStages; ++s) MbarInit(bar0 + 8 * s, 1);
      MbarInitFence();
    }
    __syncthreads();
  }
  const int chunk = tid % kCh;  // the 16-byte k chunk this thread copies
  const bf16* A = static_cast<const bf16*>(p.a);
  const bf16* W =
      static_cast<const bf16*>(p.w) + static_cast<int64_t>(tile.expert) * kHalves * p.n * p.k;

  // Source rows of this thread's copies (null: zero fill); tile row = tid / kCh + i * kRowsPass.
  const bf16* a_src[kAIter];
  const bf16* b_src[kBIter];
#pragma unroll
  for (int i = 0; i < kAIter; ++i) {
    const int r = tile.row_begin + tid / kCh + i * kRowsPass;
    a_src[i] =
        r < tile.row_end ? A + static_cast<int64_t>(p.a_rows ? p.a_rows[r] : r) * p.lda : nullptr;
  }
#pragma unroll
  for (int i = 0; i < kBIter; ++i) {
    const int row = tid / kCh + i * kRowsPass, j = n0 + row % kBNc;
    b_src[i] = !C::kTma && j < p.n ? W + static_cast<int64_t>(row / kBNc * p.n + j) * p.k : nullptr;
  }
  const int n_k_tiles = (p.k + C::kBK - 1) / C::kBK;
  auto issue = [&](int kt) {
    if (kt < n_k_tiles) {
      const int stage = kt % kStages, kc = kt * C::kBK + chunk * 8;
      unsigned char* as = smem + stage * C::kStageBytes;
      unsigned char* bs = as + C::kABytes;
#pragma unroll
      for (int i = 0; i < kAIter; ++i) {
        const bool ok = a_src[i] != nullptr && kc < p.k;
        CpAsync16(as + Swz<C::kRowBytes>(tid / kCh + i * kRowsPass, chunk), ok ? a_src[i] + kc : A,
                  ok);
      }
      if constexpr (C::kTma) {
        // kHalves boxes of kBNc weight rows (rows past n are never stored; past the tensor: 0).
        if (tid == 0) {
          const uint32_t bar = bar0 + 8 * stage;
          MbarExpectTx(bar, C::kBBytes);
#pragma unroll
          for (int h = 0; h < kHalves; ++h)
            TmaLoad2d(smem_base + stage * C::kStageBytes + C::kABytes + h * kBNc * C::kRowBytes,
                      &w_map, kt * C::kBK, (tile.expert * kHalves + h) * p.n + n0, bar);
        }
      } else {
#pragma unroll
        for (int i = 0; i < kBIter; ++i) {
          const bool ok = b_src[i] != nullptr && kc < p.k;
          CpAsync16L2(bs + Swz<C::kRowBytes>(tid / kCh + i * kRowsPass, chunk),
                      ok ? b_src[i] + kc : W, ok);
        }
      }
    }
    CpAsyncCommit();  // one group per call keeps the wait count uniform
  };

  float acc[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;

#pragma unroll
  for (int s = 0; s < kStages - 2; ++s) issue(s);
  for (int kt = 0; kt < n_k_tiles; ++kt) {
    CpAsyncWait<kStages - 3>();  // k-tile kt has landed (this thread's copies) ...
    FenceProxyAsync();           // ... is visible to the tensor cores ...
    if constexpr (C::kTma) MbarWait(bar0 + 8 * (kt % kStages), (kt / kStages) & 1);
    __syncthreads();          // ... for everyone's copies; and wgmma(kt - 2) is done everywhere
    issue(kt + kStages - 2);  // into the slot of k-tile kt - 2
    const uint32_t a_addr = smem_base + (kt % kStages) * C::kStageBytes + wg * 64 * C::kRowBytes;
    const uint32_t b_addr = smem_base + (kt % kStages) * C::kStageBytes + C::kABytes;
    FenceAcc<kAcc>(acc);
    WgFence();
#pragma unroll
    for (int kk = 0; kk < C::kBK / 16; ++kk)
      Wgmma<C::kBN>(acc, Desc<C::kSbo, C::kLayout>(a_addr + kk * 32),
                    Desc<C::kSbo, C::kLayout>(b_addr + kk * 32));
    WgCommit();
    WgWait<1>();  // wgmma(kt - 1) of this warpgroup is done
    FenceAcc<kAcc>(acc);
  }
  WgWait<0>();
  FenceAcc<kAcc>(acc);
  CpAsyncWait<0>();  // no copy outlives the block

  // Accumulator i of a thread: row 16 * (warp % 4) + lane / 4 + 8 * ((i / 2) % 2) of the
  // warpgroup's 64, tile column 8 * (i / 4) + 2 * (lane % 4) + i % 2.
  const int r0 = tile.row_begin + wg * 64 + (warp % 4) * 16 + lane / 4;
  constexpr int kNC = kBNc / 8;  // 8-column groups per half
#pragma unroll
  for (int c = 0; c < kNC; ++c) {
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
      const int r = r0 + rh * 8;
      const int j = n0 + c * 8 + 2 * (lane % 4);
      constexpr int kG = (kHalves - 1) * kNC;  // the gate half's column-group offset
      if (r < tile.row_end)
        grouped::StorePairBf16<kEpi>(p, tile.expert, r, j, acc[c * 4 + 2 * rh],
                                     acc[c * 4 + 2 * rh + 1], acc[(c + kG) * 4 + 2 * rh],
                                     acc[(c + kG) * 4 + 2 * rh + 1]);
    }
  }
#else
  __trap();  // launched only on compute capability 9.0 (WgmmaSupported)
#endif
}

// cuTensorMapEncodeTiled from the driver (through the runtime: no libcuda link), once.
using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                   const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                   const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                   CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
EncodeTiledFn GetEncodeTiled() {
  static const EncodeTiledFn fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      f = nullptr;
    return reinterpret_cast<EncodeTiledFn>(f);
  }();
  return fn;
}

// The tensor map over all experts' weight rows ([rows, k] bf16, 128-byte swizzle, box of 64 k
// x box_rows rows), built once per (weights, rows, k, box) on the host and cached: launches
// during CUDA graph capture only read the cache or encode on the host (no device work).
absl::StatusOr<CUtensorMap> WeightMap(const void* w, int64_t rows, int k, int box_rows) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int64_t, int, int>, CUtensorMap> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(w, rows, k, box_rows);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  EncodeTiledFn encode = GetEncodeTiled();
  if (encode == nullptr) return absl::InternalError("GroupedGemm: cuTensorMapEncodeTiled missing");
  CUtensorMap map;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(k), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(k) * 2};
  const cuuint32_t box[2] = {64, static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t elem[2] = {1, 1};
  const CUresult r =
      encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(w), dims, strides, box,
             elem, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return absl::InternalError(absl::StrCat("GroupedGemm: cuTensorMapEncodeTiled error ", r));
  if (cache.size() > 4096) cache.clear();  // bounded (weights are long-lived in practice)
  cache.emplace(key, map);
  return map;
}

template <GroupedEpilogue kEpi, class C>
absl::Status LaunchWgEpi(const GroupedGemmParams& p, Stream stream) {
  constexpr int kBNc = C::kBN / (kEpi == GroupedEpilogue::kGatedAct ? 2 : 1);
  static std::once_flag once;
  static cudaError_t attr_err = cudaSuccess;
  std::call_once(once, [] {
    attr_err = cudaFuncSetAttribute(GroupedGemmWgmmaKernel<kEpi, C>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes);
  });
  if (attr_err != cudaSuccess)
    return absl::InternalError(
        absl::StrCat("GroupedGemm: shared memory attribute: ", cudaGetErrorString(attr_err)));
  const int64_t row_tiles = GroupedGemmTightGrid()
                                ? p.n_rows / C::kBM + std::min(p.n_experts, p.n_rows)
                                : CeilDiv(p.n_rows, C::kBM) + p.n_experts;
  if (row_tiles > 65535)
    return absl::InvalidArgumentError("GroupedGemm: too many rows for one launch");
  const dim3 grid(CeilDiv(p.n, kBNc), static_cast<unsigned>(row_tiles));
  CUtensorMap map;
  std::memset(&map, 0, sizeof(map));
  if constexpr (C::kTma) {
    constexpr int kHalves = kEpi == GroupedEpilogue::kGatedAct ? 2 : 1;
    absl::StatusOr<CUtensorMap> m =
        WeightMap(p.w, static_cast<int64_t>(p.n_experts) * kHalves * p.n, p.k, kBNc);
    if (!m.ok()) return m.status();
    map = *m;
  }
  LaunchPdl(GroupedGemmWgmmaKernel<kEpi, C>, grid, C::kThreads, C::kSmemBytes, stream, p,
            map);
  BMS_CUDA_CHECK_LAUNCH("GroupedGemmWgmma");
  return absl::OkStatus();
}

template <class C>
absl::Status LaunchWg(const GroupedGemmParams& p, Stream stream) {
  switch (p.epilogue) {
    case GroupedEpilogue::kGatedAct:
      return LaunchWgEpi<GroupedEpilogue::kGatedAct, C>(p, stream);
    case GroupedEpilogue::kAct:
      return LaunchWgEpi<GroupedEpilogue::kAct, C>(p, stream);
    case GroupedEpilogue::kScaleScatter:
      return LaunchWgEpi<GroupedEpilogue::kScaleScatter, C>(p, stream);
  }
  return absl::InvalidArgumentError("GroupedGemm: bad epilogue");
}

struct WgVariant {
  const char* name;
  int rows_per_tile;
  absl::Status (*launch)(const GroupedGemmParams&, Stream);
};

// Candidates for the tuner (grouped_gemm.cu). fc2 (n = 1472) at 2048 tokens: 128 x 192 tiles
// make 8 column tiles x 16 row tiles = 128 blocks, one wave on 132 SMs.
const WgVariant kWgVariants[] = {
    // Prefill: 2 warpgroups of 64 x 128, 5 slots (160 KB shared).
    {"wg128x128", 128, &LaunchWg<WgCfg<2, 128, 5>>},
    // Prefill, wider: 64 x 192 per warpgroup, 4 slots (160 KB).
    {"wg128x192", 128, &LaunchWg<WgCfg<2, 192, 4>>},
    // Prefill, widest: 64 x 256 per warpgroup (128 accumulators per thread), 4 slots (192 KB).
    {"wg128x256", 128, &LaunchWg<WgCfg<2, 256, 4>>},
    // Mid M (32..128 rows per expert): one warpgroup of 64 x 128, 4 slots (96 KB: 2 blocks/SM).
    {"wg64x128", 64, &LaunchWg<WgCfg<1, 128, 4>>},
    // Decode fc2-like (few column tiles): 64 x 64, 6 slots (96 KB), twice the blocks of wg64x128.
    {"wg64x64", 64, &LaunchWg<WgCfg<1, 64, 6>>},
    // k 32 per slot (64-byte swizzle): 9 slots of 128 x 256 (216 KB), 7 k-tiles in flight.
    {"wg128x256k32", 128, &LaunchWg<WgCfg<2, 256, 9, 32>>},
    // k 32 per slot: 12 slots of 128 x 128 (192 KB), 10 k-tiles in flight.
    {"wg128x128k32", 128, &LaunchWg<WgCfg<2, 128, 12, 32>>},
    // Weight tiles by the bulk tensor copy engine (TMA), A rows still gathered by cp.async.
    {"wg128x256t", 128, &LaunchWg<WgCfg<2, 256, 4, 64, true>>},
    {"wg128x128t", 128, &LaunchWg<WgCfg<2, 128, 5, 64, true>>},
    {"wg64x128t", 64, &LaunchWg<WgCfg<1, 128, 4, 64, true>>},
};

}  // namespace

bool WgmmaSupported() {
  static const bool ok = [] {
    int dev = 0, major = 0, minor = 0;
    return cudaGetDevice(&dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
           major == 9 && minor == 0;
  }();
  return ok;
}

bool WgmmaTunerEnabled() {
  static const bool on = [] {
    const char* env = std::getenv("BMS_GROUPED_WGMMA");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return on;
}

int WgmmaVariantCount() { return static_cast<int>(sizeof(kWgVariants) / sizeof(kWgVariants[0])); }
const char* WgmmaVariantName(int i) { return kWgVariants[i].name; }
int WgmmaVariantRowsPerTile(int i) { return kWgVariants[i].rows_per_tile; }
absl::Status LaunchWgmmaVariant(int i, const GroupedGemmParams& p, Stream stream) {
  if (i < 0 || i >= WgmmaVariantCount())
    return absl::InvalidArgumentError("GroupedGemm: bad wgmma variant");
  if (!WgmmaSupported())
    return absl::FailedPreconditionError("GroupedGemm: wgmma variants need compute capability 9.0");
  return kWgVariants[i].launch(p, stream);
}

}  // namespace bms::cuda
