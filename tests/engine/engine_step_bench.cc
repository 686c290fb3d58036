// engine_step_bench: the engine's own host work per step (schedule, sampling contexts, update,
// event delivery) at high concurrency, with a zero-cost backend. The backend samples "on the
// device" like the CUDA backend (ForwardSampled returns a token per row at once), so the step
// time the engine measures minus the backend time is exactly the engine's per-step work.
// A measurement tool (bench/NOTES.md "Engine host work per step"), not a test.
//
//   engine_step_bench [concurrency=256] [gen_len=512] [rounds=3] [prompt_len=32] [poll_ms=0]
//                     [async_publish_min_events=32]
//
// Each round submits `concurrency` requests at once (random prompts, gen_len tokens each,
// EOS ignored) and waits for all of them; one consumer thread drains every channel when
// notified (as a frontend would). Prints the engine's mean step time (= its host work: the
// backend costs nothing) over all steps and over the decode-only steps of the steady state
// (every request running), and the part outside Engine::ForwardSampled (the engine's
// "backend time" also covers building the sampling contexts).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "engine/backend.h"
#include "engine/engine.h"
#include "engine/rng.h"

namespace bms {
namespace {

class ZeroBackend : public Backend {
 public:
  ZeroBackend(int num_slots, int vocab) : num_slots_(num_slots) {
    config_.num_layers = 1;
    config_.d_model = 16;
    config_.vocab_size = vocab;
    config_.layers = {LayerKind::kMamba};
  }
  std::string name() const override { return "zero"; }
  const ModelConfig& config() const override { return config_; }
  int num_slots() const override { return num_slots_; }
  size_t state_bytes_per_slot() const override { return 8; }
  absl::Status Forward(const StepInput& input, std::vector<float>* logits) override {
    size_t rows = 0;
    for (const SeqChunk& c : input.seqs) rows += c.logits == LogitsMode::kNone ? 0 : 1;
    logits->assign(rows * config_.vocab_size, 0.f);
    return absl::OkStatus();
  }
  bool SamplesOnDevice() const override { return true; }
  absl::Status ForwardSampled(const StepInput& input, std::span<const SampleContext> rows,
                              std::vector<SampledToken>* out) override {
    out->resize(rows.size());
    for (size_t r = 0; r < rows.size(); ++r) {
      (*out)[r] = SampledToken();
      (*out)[r].token = static_cast<int32_t>(
          SplitMix64(rows[r].seed + static_cast<uint64_t>(rows[r].num_generated)) %
          static_cast<uint64_t>(config_.vocab_size));
    }
    (void)input;
    return absl::OkStatus();
  }
  absl::Status CopyState(int, int) override { return absl::OkStatus(); }
  absl::StatusOr<std::vector<float>> ReadState(int) override { return std::vector<float>{0.f}; }

 private:
  int num_slots_;
  ModelConfig config_;
};

int Arg(int argc, char** argv, int i, int def) { return argc > i ? std::atoi(argv[i]) : def; }

}  // namespace
}  // namespace bms

int main(int argc, char** argv) {
  using namespace bms;
  const int concurrency = Arg(argc, argv, 1, 256);
  const int gen_len = Arg(argc, argv, 2, 512);
  const int rounds = Arg(argc, argv, 3, 3);
  const int prompt_len = Arg(argc, argv, 4, 32);
  // 0: the consumer drains when notified; N > 0: it ignores notifications and drains every
  // N ms (isolates the engine's own cost from lock contention with the consumer).
  const int poll_ms = Arg(argc, argv, 5, 0);
  // EngineOptions::async_publish_min_events (0: every event pushed on the engine thread).
  const int async_min = Arg(argc, argv, 6, EngineOptions().async_publish_min_events);
  if (concurrency < 1 || gen_len < 1 || rounds < 1 || prompt_len < 1) {
    std::fprintf(stderr,
                 "usage: engine_step_bench [concurrency] [gen_len] [rounds] [prompt_len]\n");
    return 2;
  }
  constexpr int kVocab = 50304;
  EngineOptions o;
  o.max_num_batched_tokens = 2048;
  o.max_queued_requests = concurrency + 1;
  o.eos_token_id = 0;
  o.async_publish_min_events = async_min;
  auto engine = Engine::Create(std::make_unique<ZeroBackend>(concurrency, kVocab), o);
  if (!engine.ok() || !(*engine)->Start().ok()) {
    std::fprintf(stderr, "engine start failed\n");
    return 1;
  }
  Engine& e = **engine;

  std::mt19937_64 rng(1);
  double host_all = 0, host_steady = 0, step_all = 0, step_steady = 0;
  int64_t steps_all = 0, steps_steady = 0;
  for (int round = 0; round < rounds; ++round) {
    // The consumer's notifier coalesces wake-ups like the HTTP frontend's (HttpSession::Waker):
    // only the first event after a drain wakes it.
    std::mutex mu;
    std::condition_variable cv;
    bool signalled = false;
    std::atomic<bool> wake_pending{false};
    auto notify = [&] {
      if (wake_pending.exchange(true)) return;
      {
        std::lock_guard<std::mutex> lock(mu);
        signalled = true;
      }
      cv.notify_one();
    };
    std::vector<std::shared_ptr<EventChannel>> channels;
    const EngineStats before = e.Stats();
    for (int i = 0; i < concurrency; ++i) {
      GenerateRequest r;
      r.prompt_ids.resize(prompt_len);
      for (int32_t& t : r.prompt_ids) t = static_cast<int32_t>(rng() % kVocab);
      r.sampling.temperature = 0.8f;
      r.sampling.max_tokens = gen_len;
      r.sampling.ignore_eos = true;
      r.sampling.seed = rng();
      auto ch = e.Submit(std::move(r));
      if (!ch.ok()) {
        std::fprintf(stderr, "submit: %s\n", std::string(ch.status().message()).c_str());
        return 1;
      }
      (*ch)->SetNotifier(notify);
      channels.push_back(*ch);
    }
    // Steady state: from the step where every request runs until the first one finishes.
    EngineStats steady_begin{}, steady_end{};
    bool in_steady = false, steady_done = false;
    int finished = 0;
    std::vector<bool> done(channels.size(), false);
    while (finished < concurrency) {
      {
        std::unique_lock<std::mutex> lock(mu);
        if (poll_ms > 0)
          cv.wait_for(lock, std::chrono::milliseconds(poll_ms));
        else
          cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return signalled; });
        signalled = false;
      }
      wake_pending.store(false);
      for (size_t i = 0; i < channels.size(); ++i) {
        if (done[i]) continue;
        for (GenerationEvent& ev : channels[i]->DrainAll()) {
          if (ev.finish != FinishReason::kNone) {
            done[i] = true;
            ++finished;
            if (in_steady && !steady_done) {
              steady_end = e.Stats();
              steady_done = true;
            }
          }
        }
      }
      if (!in_steady) {
        const EngineStats s = e.Stats();
        if (s.running == concurrency && s.waiting == 0 &&
            s.generation_tokens_total >= before.generation_tokens_total + 2 * concurrency) {
          steady_begin = s;
          in_steady = true;
        }
      }
    }
    const EngineStats after = e.Stats();
    steps_all += after.steps_total - before.steps_total;
    step_all += after.step_seconds_total - before.step_seconds_total;
    host_all += (after.step_seconds_total - before.step_seconds_total) -
                (after.backend_seconds_total - before.backend_seconds_total);
    if (in_steady && steady_done) {
      steps_steady += steady_end.steps_total - steady_begin.steps_total;
      step_steady += steady_end.step_seconds_total - steady_begin.step_seconds_total;
      host_steady += (steady_end.step_seconds_total - steady_begin.step_seconds_total) -
                     (steady_end.backend_seconds_total - steady_begin.backend_seconds_total);
    }
  }
  e.Stop();
  std::printf(
      "engine_step_bench: concurrency=%d gen_len=%d rounds=%d prompt_len=%d poll_ms=%d "
      "async_publish_min_events=%d\n",
      concurrency, gen_len, rounds, prompt_len, poll_ms, async_min);
  std::printf("%-44s %10s\n", "metric", "value");
  std::printf("%-44s %10lld\n", "engine steps", static_cast<long long>(steps_all));
  std::printf("%-44s %10.4f\n", "step time, all steps (ms)",
              steps_all ? 1e3 * step_all / steps_all : 0.0);
  std::printf("%-44s %10.4f\n", "  outside ForwardSampled, all steps (ms)",
              steps_all ? 1e3 * host_all / steps_all : 0.0);
  std::printf("%-44s %10lld\n", "steady decode steps (all running)",
              static_cast<long long>(steps_steady));
  std::printf("%-44s %10.4f\n", "step time, steady steps (ms)",
              steps_steady ? 1e3 * step_steady / steps_steady : 0.0);
  std::printf("%-44s %10.4f\n", "  outside ForwardSampled, steady (ms)",
              steps_steady ? 1e3 * host_steady / steps_steady : 0.0);
  return 0;
}
