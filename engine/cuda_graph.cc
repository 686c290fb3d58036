// CUDA graphs for decode steps (engine/cuda_backend_impl.h). A step made only of 1-token chunks
// with kLast logits (the steady state of serving) is padded to a batch bucket (1, 2, 4, 8, 16,
// 24, 32, 48, 64, 96, ... up to the largest graph batch, itself the last: the engine's largest
// decode batch min(num_slots, token budget), or BackendOptions::cuda_graph_max_batch) and runs
// as one replay of the bucket's graph (embedding .. head GEMM, ~14 launches per layer otherwise).
// Larger all-decode steps run eagerly.
//
// Padding: padded rows use slot -1, which the conv and scan kernels treat as "no state" (zeros
// in, nothing stored), so no padding slots beyond the one reserved are needed and a real slot's
// state is never touched by padding; padded rows are also left out of the routing counters
// (RouterSelectParams::n_counted) and their logits rows are not copied back.
//
// Stable pointers: every graph reads its metadata from one fixed-layout device block (sized for
// the largest bucket, written by one H2D copy before each replay) and uses the activation
// workspace. Capture happens at start-up (PrepareForServing, called by the engine after its
// warm-up step): the workspace is first sized for the engine's largest step (token budget,
// logits rows), then each bucket up to the largest decode batch (or BackendOptions::
// cuda_graph_max_batch) runs once eagerly with every row a padding row (no side effects; loads
// the kernels and lets the grouped-GEMM tuner time the bucket's shapes, which it cannot do while
// capturing) and is captured, instantiated and uploaded. Nothing a serving step does moves what
// the graphs point at: eager steps use their own metadata buffer, the tuner's cached choices
// never change, the routing counters and GEMM workspace are fixed. Two things still drop graphs,
// which are then recaptured on use (counted by graph_captures(), logged): an eager step larger
// than the sizing (a backend used without PrepareForServing) and a sampling block outgrowing its
// start-up reserve. Without PrepareForServing (tests), capture is lazy, on a bucket's first step.
// Memory is bounded by the bucket count (~2 log2(max batch) graphs). If capture fails, graphs are
// turned off for this backend (a warning on stderr) and steps run eagerly.
//
// ForwardSampled steps replay a second set of graphs (one per bucket) that also run the sampling
// kernel after the head GEMM (issue #8: the graph covers embedding .. sampling); they read the
// per-row sampling params from the fixed sampling block (engine/cuda_sampling.cc), padded rows
// marked inactive, and are dropped when that block grows.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "engine/cuda_backend_impl.h"
#include "engine/status_macros.h"
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
  size_t exec_bytes = 0;  // device memory the executables took (free-memory drop at capture)

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
    exec_bytes = 0;
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
int64_t CudaBackendImpl::graph_captures() const { return graph_captures_total_.load(); }

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

int CudaBackendImpl::GraphBatchCap() const {
  if (graph_cap_ > 0) return graph_cap_;  // set by PrepareForServing
  return cuda_graph_max_batch_ > 0 ? std::min(cuda_graph_max_batch_, num_slots_) : num_slots_;
}

absl::StatusOr<bool> CudaBackendImpl::LaunchDecodeGraph(
    const StepInput& input, const std::span<const SampleContext>* sample_rows) {
  if (!use_graphs_) return false;
  const int n = static_cast<int>(input.seqs.size());
  if (n == 0 || n > GraphBatchCap()) return false;
  for (const SeqChunk& s : input.seqs)
    if (s.n_tokens != 1 || s.logits != LogitsMode::kLast) return false;
  const int B = BucketFor(n, GraphBatchCap());
  const bool sampled = sample_rows != nullptr;
  if (sampled) BMS_RETURN_IF_ERROR(PackSampling(*sample_rows, B));
  auto ready = EnsureDecodeGraph(B, sampled);
  if (!ready.ok() || !*ready) return ready;
  BMS_RETURN_IF_ERROR(FillDecodeGraphMetadata(&input, B));
  const auto& execs = sampled ? graphs_->sampled_execs : graphs_->execs;
  BMS_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(execs.at(B), stream_));
  ++graphs_->replays;
  return true;
}

absl::Status CudaBackendImpl::FillDecodeGraphMetadata(const StepInput* input, int B) {
  DecodeGraphs& g = *graphs_;
  const int n = input ? static_cast<int>(input->seqs.size()) : 0;
  int32_t* h = g.h32();
  uint8_t* has_state = g.h_has_state();
  for (int i = 0; i < B; ++i) {
    const bool pad = i >= n;
    const SeqChunk* s = pad ? nullptr : &input->seqs[i];
    h[i] = pad ? 0 : input->tokens[s->token_offset];
    h[g.off_slots() + i] = pad ? -1 : s->slot;
    has_state[i] = pad || s->first_chunk ? 0 : 1;
  }
  h[g.off_dense()] = 0;
  h[g.off_dense() + 1] = B;
  h[g.off_count()] = n;
  return cuda::CopyToDeviceAsync(g.dev.get(), g.host, g.bytes, stream_);
}

absl::StatusOr<bool> CudaBackendImpl::EnsureDecodeGraph(int B, bool sampled) {
  if (!use_graphs_) return false;
  if (!graphs_) {
    auto g = std::unique_ptr<DecodeGraphs, DecodeGraphsDeleter>(new DecodeGraphs());
    g->max_batch = GraphBatchCap();
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
  if (B > g.max_batch) return false;
  BMS_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  BMS_RETURN_IF_ERROR(EnsureWorkspace(g.max_batch, g.max_batch));
  if (g.workspace != ws_.buffer.get()) {
    if (!g.execs.empty() || !g.sampled_execs.empty())
      std::fprintf(stderr,
                   "cuda backend: the activation workspace grew to %d tokens / %d logits rows: "
                   "dropping %d decode graphs (recaptured on use)\n",
                   ws_.tokens, ws_.logit_rows, graphs_captured());
    g.DropExecs();
    g.workspace = ws_.buffer.get();
    UpdateGraphStats();
  }
  if (sampled && g.sampling_block != sampling_.in_dev.get()) {
    if (!g.sampled_execs.empty())
      std::fprintf(stderr,
                   "cuda backend: the sampling block grew to %zu entries: dropping %zu sampling "
                   "graphs (recaptured on use)\n",
                   sampling_.entry_capacity, g.sampled_execs.size());
    g.DropSampledExecs();
    g.sampling_block = sampling_.in_dev.get();
    UpdateGraphStats();
  }
  std::map<int, cudaGraphExec_t>& execs = sampled ? g.sampled_execs : g.execs;
  if (execs.count(B)) return true;

  // Point the step metadata at the graph block (fixed addresses for every bucket).
  const int32_t* d32 = g.dev.as<int32_t>();
  d_tokens_ = d32;
  d_cu_seqlens_ = d32 + g.off_cu();
  d_slots_ = d32 + g.off_slots();
  d_rows_ = d32 + g.off_rows();
  d_dense_offsets_ = d32 + g.off_dense();
  d_n_counted_ = d32 + g.off_count();
  d_has_state_ = reinterpret_cast<const uint8_t*>(d32 + g.n_i32());

  // Eager run first, every row padding (no state or counter writes): loads the kernels and lets
  // the grouped-GEMM tuner time this bucket's shape classes (while capturing it could only cache
  // the heuristic). The step itself is skipped when the bucket's plain graph already ran it.
  const bool run_step = !sampled || !g.execs.count(B);
  auto st = FillDecodeGraphMetadata(nullptr, B);
  if (st.ok() && run_step) st = EnqueueStep(B, B, B);
  if (st.ok() && sampled) st = EnqueueSampling(B);
  if (st.ok()) st = cuda::SynchronizeStream(stream_);
  if (!st.ok()) return st;

  auto enqueue = [&]() {
    absl::Status s = EnqueueStep(B, B, B);
    if (s.ok() && sampled) s = EnqueueSampling(B);
    return s;
  };
  size_t free_before = 0, free_after = 0, total = 0;
  (void)cuda::MemInfo(&free_before, &total);
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
  // Upload now, so the executable's device memory exists (and is measured) before serving.
  if (err == cudaSuccess && enq.ok()) err = cudaGraphUpload(exec, stream_);
  if (err == cudaSuccess && enq.ok()) err = cudaStreamSynchronize(stream_);
  ++graph_captures_total_;
  if (err != cudaSuccess || !enq.ok()) {
    (void)cudaGetLastError();  // capture errors are not sticky
    if (exec) cudaGraphExecDestroy(exec);
    std::fprintf(stderr,
                 "cuda backend: decode graph capture for batch %d failed (%s%s); "
                 "running decode steps eagerly\n",
                 B, cudaGetErrorString(err),
                 enq.ok() ? "" : absl::StrCat("; ", enq.message()).c_str());
    use_graphs_ = false;
    g.DropExecs();
    UpdateGraphStats();
    return false;
  }
  (void)cuda::MemInfo(&free_after, &total);
  if (free_before > free_after) g.exec_bytes += free_before - free_after;
  execs.emplace(B, exec);
  UpdateGraphStats();
  return true;
}

void CudaBackendImpl::UpdateGraphStats() {
  const DecodeGraphs* g = graphs_.get();
  graph_count_.store(graphs_captured());
  graph_bytes_.store(g && graphs_captured() > 0 ? g->exec_bytes : 0);
  int max_b = 0;
  if (g) {
    for (const auto& [b, e] : g->execs) max_b = std::max(max_b, b);
    for (const auto& [b, e] : g->sampled_execs) max_b = std::max(max_b, b);
  }
  graph_max_b_.store(max_b);
  UpdateBytesInUse();
}

GraphMemoryStats CudaBackendImpl::graph_memory() const {
  GraphMemoryStats s;
  s.graphs = graph_count_.load();
  s.captures = graph_captures_total_.load();
  s.max_batch = graph_max_b_.load();
  s.graph_bytes = graph_bytes_.load();
  s.workspace_bytes = workspace_bytes_.load();
  s.prepare_seconds = prepare_seconds_.load();
  return s;
}

std::vector<int> CudaBackendImpl::GraphBuckets() const {
  std::vector<int> out;
  const int cap = GraphBatchCap();
  for (int n = 1; n <= cap;) {
    const int b = BucketFor(n, cap);
    out.push_back(b);
    n = b + 1;
  }
  return out;
}

absl::Status CudaBackendImpl::PrepareForServing(int max_decode_batch, int max_tokens_per_step) {
  if (max_decode_batch < 1 || max_tokens_per_step < 1)
    return absl::InvalidArgumentError(
        absl::StrCat("PrepareForServing: max_decode_batch = ", max_decode_batch,
                     " and max_tokens_per_step = ", max_tokens_per_step, " must be >= 1"));
  const auto t0 = std::chrono::steady_clock::now();
  // The largest step: max_tokens_per_step tokens, and one logits row per chunk (a chunk holds
  // a slot, so at most num_slots rows). Sized once here, so no later step grows the workspace
  // (which would drop every graph).
  const int max_rows = std::min(num_slots_, max_tokens_per_step);
  int cap = std::min(max_decode_batch, num_slots_);
  if (cuda_graph_max_batch_ > 0) cap = std::min(cap, cuda_graph_max_batch_);
  const int want_tokens = std::max(max_tokens_per_step, cap);
  const int want_rows = std::max(max_rows, cap);
  if (ws_.tokens != want_tokens || ws_.logit_rows != want_rows) {
    // Exactly this size: a larger one left by an earlier step (the warm-up may have captured a
    // lazy graph sized for num_slots rows) would only waste memory.
    BMS_RETURN_IF_ERROR(cuda::SynchronizeStream(stream_));
    graphs_.reset();  // they point into the old workspace
    ws_ = Workspace();
    UpdateBytesInUse();
  }
  BMS_RETURN_IF_ERROR(EnsureWorkspace(want_tokens, want_rows));
  if (use_graphs_) {
    // The metadata block is sized for the largest bucket.
    if (graphs_ && graphs_->max_batch != cap) graphs_.reset();
    graph_cap_ = cap;
    if (device_sampling_) {
      // The sampled graphs read the sampling block at a fixed address: give it room for
      // kSamplingEntriesPerRow sparse entries (logit_bias, min_tokens masks, penalty counts) per
      // state slot (bounded), so that serving rarely outgrows it (growth recaptures the
      // sampling graphs on use, logged).
      const size_t entries = std::min<size_t>(
          kMaxReservedSamplingEntries,
          std::max<size_t>(sampling_.min_entries,
                           static_cast<size_t>(num_slots_ + 1) * kSamplingEntriesPerRow));
      if (sampling_.entry_capacity < entries) {
        BMS_RETURN_IF_ERROR(cuda::SynchronizeStream(stream_));
        if (graphs_) graphs_->DropSampledExecs();
        FreeSampling();
        sampling_.min_entries = entries;
      }
    }
    int buckets = 0;
    for (int B : GraphBuckets()) {
      ++buckets;
      auto ok = EnsureDecodeGraph(B, /*sampled=*/false);
      if (!ok.ok()) return ok.status();
      if (!*ok) break;  // capture failed: eager decode (warning printed)
      if (device_sampling_) {
        BMS_RETURN_IF_ERROR(PackSampling({}, B));  // every row inactive; creates the block
        ok = EnsureDecodeGraph(B, /*sampled=*/true);
        if (!ok.ok()) return ok.status();
        if (!*ok) break;
      }
    }
    BMS_RETURN_IF_ERROR(cuda::SynchronizeStream(stream_));
    prepare_seconds_.store(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    const GraphMemoryStats m = graph_memory();
    std::fprintf(stderr,
                 "cuda backend: start-up capture: %d decode graphs for %d batch buckets (1..%d%s) "
                 "in %.2f s (eager tuning step + capture per bucket); graphs %.1f MiB, "
                 "activation workspace %.1f MiB (%d tokens, %d logits rows)\n",
                 m.graphs, buckets, cap, device_sampling_ ? ", plain + sampling" : "",
                 m.prepare_seconds, m.graph_bytes / 1048576.0, m.workspace_bytes / 1048576.0,
                 ws_.tokens, ws_.logit_rows);
  } else {
    prepare_seconds_.store(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    std::fprintf(stderr,
                 "cuda backend: CUDA graphs off; activation workspace %.1f MiB (%d tokens, %d "
                 "logits rows)\n",
                 workspace_bytes_.load() / 1048576.0, ws_.tokens, ws_.logit_rows);
  }
  return absl::OkStatus();
}

}  // namespace bms
