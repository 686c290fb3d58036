// cuBLASLt-backed GemmRunner (kernels/cuda/gemm.h).
#include "kernels/cuda/gemm.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"

namespace bms::cuda {

struct GemmRunner::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

namespace {
cudaDataType_t CudaType(DType t) { return t == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF; }

int PointerAlignment(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}
}  // namespace

absl::StatusOr<std::unique_ptr<GemmRunner>> GemmRunner::Create(size_t workspace_bytes) {
  std::unique_ptr<GemmRunner> r(new GemmRunner());
  cublasLtHandle_t h = nullptr;
  BMS_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&h));
  r->handle_ = h;
  BMS_CUDA_RETURN_IF_ERROR(cudaMalloc(&r->workspace_, workspace_bytes));
  r->workspace_bytes_ = workspace_bytes;
  return r;
}

GemmRunner::~GemmRunner() {
  plans_.clear();
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

absl::StatusOr<GemmRunner::Plan*> GemmRunner::GetPlan(const LinearParams& p, int alignment) {
  const Key key{p.m,
                p.n,
                p.k,
                p.x_stride,
                p.y_stride,
                static_cast<int>(p.in_dtype),
                static_cast<int>(p.out_dtype),
                alignment};
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second.get();
  auto plan = std::make_unique<Plan>();
  BMS_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  BMS_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                            &trans_a, sizeof(trans_a)));
  BMS_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                            &trans_b, sizeof(trans_b)));
  // Column-major view: C[n, m] = W^T(op T of [k, n]) * X([k, m]).
  BMS_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&plan->a, CudaType(p.in_dtype), p.k, p.n, p.k));
  BMS_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&plan->b, CudaType(p.in_dtype), p.k, p.m, p.x_stride));
  BMS_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&plan->c, CudaType(p.out_dtype), p.n, p.m, p.y_stride));
  cublasLtMatmulPreference_t pref = nullptr;
  BMS_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const uint32_t align = alignment;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                       &workspace_bytes_, sizeof(workspace_bytes_));
  for (auto attr :
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(handle_), plan->desc, plan->a,
                                     plan->b, plan->c, plan->c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  BMS_CUBLAS_RETURN_IF_ERROR(st);
  if (found == 0)
    return absl::InternalError(
        absl::StrCat("cuBLASLt found no algorithm for m=", p.m, " n=", p.n, " k=", p.k));
  plan->algo = result.algo;
  Plan* raw = plan.get();
  plans_.emplace(key, std::move(plan));
  return raw;
}

namespace {
std::atomic<int> g_stream_rows{-1};  // -1: not yet read from BMS_GEMV_STREAM
}  // namespace

int StreamLinearMaxRows() {
  int v = g_stream_rows.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* env = std::getenv("BMS_GEMV_STREAM");
    v = env == nullptr                  ? 0
        : std::strcmp(env, "1") == 0    ? kSmallMMaxRows
        : std::strcmp(env, "auto") == 0 ? 0
                                        : std::max(std::atoi(env), 0);
    g_stream_rows.store(v, std::memory_order_relaxed);
  }
  return v;
}
void SetStreamLinearMaxRows(int rows) { g_stream_rows.store(std::max(rows, 0)); }

namespace {
std::atomic<int> g_stream_auto{-1};  // -1: not yet read from BMS_GEMV_STREAM
}  // namespace
bool StreamLinearAuto() {
  int v = g_stream_auto.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* env = std::getenv("BMS_GEMV_STREAM");
    v = env != nullptr && std::strcmp(env, "auto") == 0 ? 1 : 0;
    g_stream_auto.store(v, std::memory_order_relaxed);
  }
  return v == 1;
}
void SetStreamLinearAuto(bool on) { g_stream_auto.store(on ? 1 : 0); }

absl::Status GemmRunner::Linear(const LinearParams& p, Stream stream) {
  if (LegacyKernels() || !p.x || !p.w || !p.y) return LinearCublas(p, stream);
  // Small weights (x_proj, dt_proj) stay on SmallMLinear unless BMS_GEMV_STREAM=1 forces the
  // streaming kernel for every supported shape.
  const bool small = SmallMLinearSupported(p);
  if (!small && p.m == 1 && StreamLinearAuto()) {
    const SmallMPath path = StreamLinearAutoPath(p);
    if (path != SmallMPath::kCublas)
      return StreamLinearWith(p, path == SmallMPath::kStreamRing, stream);
  }
  const int stream_rows = StreamLinearMaxRows();
  if (p.m <= stream_rows && (!small || stream_rows >= kSmallMMaxRows) && StreamLinearSupported(p))
    return StreamLinear(p, stream);
  if (small) return SmallMLinear(p, stream);
  return LinearCublas(p, stream);
}

absl::Status GemmRunner::LinearCublas(const LinearParams& p_in, Stream stream) {
  LinearParams p = p_in;
  if (p.m < 0 || p.n <= 0 || p.k <= 0 || !p.x || !p.w || !p.y)
    return absl::InvalidArgumentError("Linear: bad sizes or null pointer");
  if (p.out_dtype != p.in_dtype && p.out_dtype != DType::kF32)
    return absl::InvalidArgumentError("Linear: out dtype must be the input dtype or fp32");
  if (p.m == 0) return absl::OkStatus();
  if (p.x_stride == 0) p.x_stride = p.k;
  if (p.y_stride == 0) p.y_stride = p.n;
  int alignment = std::min({PointerAlignment(p.x), PointerAlignment(p.w), PointerAlignment(p.y)});
  const int elem_in = DTypeBytes(p.in_dtype), elem_out = DTypeBytes(p.out_dtype);
  // Leading dimensions also constrain the alignment of every column after the first.
  while (alignment > 1 && ((p.x_stride * elem_in) % alignment || (p.k * elem_in) % alignment ||
                           (p.y_stride * elem_out) % alignment))
    alignment /= 2;
  auto plan = GetPlan(p, alignment);
  if (!plan.ok()) return plan.status();
  const float alpha = 1.f, beta = 0.f;
  BMS_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), (*plan)->desc,
                                            &alpha, p.w, (*plan)->a, p.x, (*plan)->b, &beta, p.y,
                                            (*plan)->c, p.y, (*plan)->c, &(*plan)->algo, workspace_,
                                            workspace_bytes_, stream));
  return absl::OkStatus();
}

}  // namespace bms::cuda
