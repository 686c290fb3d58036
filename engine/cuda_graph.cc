// CUDA graphs for decode steps (engine/cuda_backend_impl.h). A step made only of 1-token chunks
// with kLast logits (the steady state of serving) is padded to a batch bucket (1, 2, 4, 8, 16,
// 24, 32, 48, 64, 96, ... up to num_slots, num_slots itself the last) and runs as one replay of
// the bucket's graph (embedding .. head GEMM, ~14 launches per layer otherwise).
//
// Padding: padded rows use slot -1, which the conv and scan kernels treat as "no state" (zeros
// in, nothing stored), so no padding slots beyond the one reserved are needed and a real slot's
// state is never touched by padding; padded rows are also left out of the routing counters
// (RouterSelectParams::n_counted) and their logits rows are not copied back.
//
// Stable pointers: every graph reads its metadata from one fixed-layout device block (sized for
// the largest bucket, written by one H2D copy before each replay) and uses the activation
// workspace, which is grown to the largest bucket before the first capture. If an eager step
// later grows the workspace (a longer prefill), every graph is dropped and recaptured lazily.
// Capture is lazy: the first step of a bucket first runs the step once eagerly with every row a
// padding row (no side effects; loads modules and cuBLASLt plans), then captures. Memory is
// bounded by the bucket count (~2 log2(num_slots) graphs). If capture fails, graphs are turned
// off for this backend (a warning on stderr) and steps run eagerly.
//
// ForwardSampled steps replay a second set of graphs (one per bucket) that also run the sampling
// kernel after the head GEMM (issue #8: the graph covers embedding .. sampling); they read the
// per-row sampling params from the fixed sampling block (engine/cuda_sampling.cc), padded rows
// marked inactive, and are dropped when that block grows.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "engine/cuda_backend_impl.h"
#include "kernels/cuda/cuda_check.h"

namespace bms {

struct CudaBackendImpl::DecodeGraphs {
  int max_batch = 0;
  void* host = nullptr;  // pinned, layout below
  cuda::DeviceBuffer dev;
  size_t bytes = 0;
  const void* workspace = nullptr;       // ws_.buffer the graphs were captured against
  const void* sampling_block = nullptr;  // sampling_.in_dev the sampled graphs read
  std::map<int, cudaGraphExec_t> execs;
  std::map<int, cudaGraphExec_t> sampled_execs;  // the same step + the sampling kernel
  int64_t replays = 0;

  // int32 [tokens Bmax | cu Bmax+1 | slots Bmax | rows Bmax | dense 2 | n_counted 1], then
  // uint8 has_state [Bmax].
  size_t off_cu() const { return max_batch; }
  size_t off_slots() const { return 2 * max_batch + 1; }
  size_t off_rows() const { return 3 * max_batch + 1; }
  size_t off_dense() const { return 4 * max_batch + 1; }
  size_t off_count() const { return 4 * max_batch + 3; }
  size_t n_i32() const { return 4 * max_batch + 4; }
  int32_t* h32() const { return static_cast<int32_t*>(host); }
  uint8_t* h_has_state() const { return reinterpret_cast<uint8_t*>(h32() + n_i32()); }

  void DropSampledExecs() {
    for (auto& [b, e] : sampled_execs) cudaGraphExecDestroy(e);
    sampled_execs.clear();
  }
  void DropExecs() {
    for (auto& [b, e] : execs) cudaGraphExecDestroy(e);
    execs.clear();
    DropSampledExecs();
  }
  ~DecodeGraphs() {
    DropExecs();
    cuda::FreeHost(host);
  }
};

void CudaBackendImpl::DecodeGraphsDeleter::operator()(DecodeGraphs* g) const { delete g; }

int CudaBackendImpl::graphs_captured() const {
  return graphs_ ? static_cast<int>(graphs_->execs.size() + graphs_->sampled_execs.size()) : 0;
}
int64_t CudaBackendImpl::graph_replays() const { return graphs_ ? graphs_->replays : 0; }

namespace {

// Smallest bucket >= n: powers of two, plus 1.5x powers of two from 24 on, capped at max.
int BucketFor(int n, int max_batch) {
  for (int p = 1;; p *= 2) {
    if (p >= n) return std::min(p, max_batch);
    if (p >= 16 && p + p / 2 >= n) return std::min(p + p / 2, max_batch);
  }
}

}  // namespace

absl::StatusOr<bool> CudaBackendImpl::ForwardDecodeGraph(const StepInput& input,
                                                         std::vector<float>* logits) {
  auto launched = LaunchDecodeGraph(input, nullptr);
  if (!launched.ok() || !*launched) return launched;
  MarkEnqueued();  // before the logits copy: a copy into pageable memory waits for the GPU
  const int n = static_cast<int>(input.seqs.size());
  logits->resize(static_cast<size_t>(n) * config_.vocab_size);  // [n, vocab_size]
  auto st = cuda::CopyToHostAsync(logits->data(), ws_.logits, logits->size() * 4, stream_);
  if (!st.ok()) return st;
  st = cuda::SynchronizeStream(stream_);
  if (!st.ok()) return st;
  return true;
}

absl::StatusOr<bool> CudaBackendImpl::LaunchDecodeGraph(
    const StepInput& input, const std::span<const SampleContext>* sample_rows) {
  if (!use_graphs_) return false;
  const int n = static_cast<int>(input.seqs.size());
  if (n == 0 || n > num_slots_) return false;
  for (const SeqChunk& s : input.seqs)
    if (s.n_tokens != 1 || s.logits != LogitsMode::kLast) return false;

  if (!graphs_) {
    auto g = std::unique_ptr<DecodeGraphs, DecodeGraphsDeleter>(new DecodeGraphs());
    g->max_batch = num_slots_;
    g->bytes = g->n_i32() * 4 + static_cast<size_t>(g->max_batch);
    auto host = cuda::AllocHost(g->bytes);
    if (!host.ok()) return host.status();
    g->host = *host;
    auto dev = cuda::DeviceBuffer::Alloc(g->bytes, "decode graph metadata");
    if (!dev.ok()) return dev.status();
    g->dev = std::move(*dev);
    std::memset(g->host, 0, g->bytes);
    for (int i = 0; i <= g->max_batch; ++i) g->h32()[g->off_cu() + i] = i;
    for (int i = 0; i < g->max_batch; ++i) g->h32()[g->off_rows() + i] = i;
    graphs_ = std::move(g);
  }
  DecodeGraphs& g = *graphs_;
  BMS_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  auto ws = EnsureWorkspace(g.max_batch, g.max_batch);
  if (!ws.ok()) return ws;
  if (g.workspace != ws_.buffer.get()) {
    g.DropExecs();
    g.workspace = ws_.buffer.get();
  }
  const int B = BucketFor(n, g.max_batch);
  const bool sampled = sample_rows != nullptr;
  if (sampled) {
    auto st = PackSampling(*sample_rows, B);
    if (!st.ok()) return st;
    if (g.sampling_block != sampling_.in_dev.get()) {
      g.DropSampledExecs();
      g.sampling_block = sampling_.in_dev.get();
    }
  }
  std::map<int, cudaGraphExec_t>& execs = sampled ? g.sampled_execs : g.execs;
  auto enqueue = [&]() {
    absl::Status st = EnqueueStep(B, B, B);
    if (st.ok() && sampled) st = EnqueueSampling(B);
    return st;
  };

  // Point the step metadata at the graph block (fixed addresses for every bucket).
  const int32_t* d32 = g.dev.as<int32_t>();
  d_tokens_ = d32;
  d_cu_seqlens_ = d32 + g.off_cu();
  d_slots_ = d32 + g.off_slots();
  d_rows_ = d32 + g.off_rows();
  d_dense_offsets_ = d32 + g.off_dense();
  d_n_counted_ = d32 + g.off_count();
  d_has_state_ = reinterpret_cast<const uint8_t*>(d32 + g.n_i32());
  int32_t* h = g.h32();
  auto fill = [&](bool real) {
    for (int i = 0; i < B; ++i) {
      const bool pad = !real || i >= n;
      const SeqChunk* s = pad ? nullptr : &input.seqs[i];
      h[i] = pad ? 0 : input.tokens[s->token_offset];
      h[g.off_slots() + i] = pad ? -1 : s->slot;
      g.h_has_state()[i] = pad || s->first_chunk ? 0 : 1;
    }
    h[g.off_dense()] = 0;
    h[g.off_dense() + 1] = B;
    h[g.off_count()] = real ? n : 0;
    return cuda::CopyToDeviceAsync(g.dev.get(), g.host, g.bytes, stream_);
  };

  auto it = execs.find(B);
  if (it == execs.end()) {
    // Warm-up: all rows padding (no state or counter writes), then capture.
    auto st = fill(/*real=*/false);
    if (st.ok()) st = enqueue();
    if (st.ok()) st = cuda::SynchronizeStream(stream_);
    if (!st.ok()) return st;
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    cudaError_t err = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal);
    absl::Status enq = absl::OkStatus();
    if (err == cudaSuccess) {
      enq = enqueue();
      err = cudaStreamEndCapture(stream_, &graph);
    }
    if (err == cudaSuccess && enq.ok()) err = cudaGraphInstantiate(&exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (err != cudaSuccess || !enq.ok()) {
      (void)cudaGetLastError();  // capture errors are not sticky
      std::fprintf(stderr,
                   "cuda backend: decode graph capture for batch %d failed (%s%s); "
                   "running decode steps eagerly\n",
                   B, cudaGetErrorString(err),
                   enq.ok() ? "" : absl::StrCat("; ", enq.message()).c_str());
      use_graphs_ = false;
      g.DropExecs();
      return false;
    }
    it = execs.emplace(B, exec).first;
  }
  auto st = fill(/*real=*/true);
  if (!st.ok()) return st;
  BMS_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(it->second, stream_));
  ++g.replays;
  return true;
}

}  // namespace bms
