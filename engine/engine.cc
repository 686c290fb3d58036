// The Engine implementation: one thread that drains the submit queue, runs
// Schedule -> Forward -> sample -> Update, and publishes events (engine/engine.h).
#include "engine/engine.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "kernels/ref/thread_pool.h"

namespace bms {
namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Pushes batches of events to their channels on its own thread, so that a large step's event
// delivery (a lock, a queue insert and the frontend's notifier per event) overlaps the next
// step. At most one batch waits while another is being pushed; Submit blocks beyond that.
class Publisher {
 public:
  Publisher() : thread_([this] { Run(); }) {}
  ~Publisher() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();  // pushes what was handed over first
  }
  // Takes *events (left empty; its capacity comes back from an earlier batch).
  void Submit(std::vector<OutgoingEvent>* events) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return queued_.empty(); });
    queued_.swap(*events);
    lock.unlock();
    cv_.notify_all();
  }
  // Returns once every handed-over event is pushed.
  void Flush() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return queued_.empty() && !busy_; });
  }

 private:
  void Run() {
    std::vector<OutgoingEvent> batch;
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return stop_ || !queued_.empty(); });
      if (queued_.empty()) return;  // stopping, nothing left
      batch.swap(queued_);
      busy_ = true;
      lock.unlock();
      cv_.notify_all();
      for (OutgoingEvent& e : batch)
        if (e.channel != nullptr) e.channel->Push(std::move(e.event));
      batch.clear();
      lock.lock();
      busy_ = false;
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<OutgoingEvent> queued_;  // handed over, not taken by the thread yet
  bool busy_ = false;                  // the thread is pushing a batch
  bool stop_ = false;
  std::thread thread_;  // last: starts after the members above exist
};

// "" -> 0 (off); "step-fail:N" -> N >= 1.
absl::StatusOr<int> ParseFaultInjection(const std::string& spec) {
  if (spec.empty()) return 0;
  absl::string_view rest = spec;
  int n = 0;
  if (!absl::ConsumePrefix(&rest, "step-fail:") || !absl::SimpleAtoi(rest, &n) || n < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("fault_injection must be \"step-fail:N\" with N >= 1, got \"", spec, "\""));
  }
  return n;
}

absl::Status ValidateOptions(const EngineOptions& o, const ModelConfig& config) {
  auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (o.max_num_batched_tokens < 1) return bad("max_num_batched_tokens must be >= 1");
  if (o.max_queued_requests < 1) return bad("max_queued_requests must be >= 1");
  if (o.max_prompt_tokens < 1) return bad("max_prompt_tokens must be >= 1");
  if (o.max_tokens_limit < 1) return bad("max_tokens_limit must be >= 1");
  if (o.max_n < 1) return bad("max_n must be >= 1");
  if (o.async_publish_min_events < 0) return bad("async_publish_min_events must be >= 0");
  if (o.state_cache_entries < 0) return bad("state_cache_entries must be >= 0");
  if (o.state_cache_min_tokens < 1) return bad("state_cache_min_tokens must be >= 1");
  if (o.sampler_threads < 1 || o.sampler_threads > 256) {
    return bad("sampler_threads must be in [1, 256]");
  }
  if (o.eos_token_id < -1 || o.eos_token_id >= config.vocab_size) {
    return bad("eos_token_id must be -1 (none) or in [0, ", config.vocab_size, ")");
  }
  return absl::OkStatus();
}

class EngineImpl final : public Engine {
 public:
  EngineImpl(std::unique_ptr<Backend> backend, EngineOptions options, int fail_every)
      : backend_(std::move(backend)),
        options_(std::move(options)),
        fail_every_(fail_every),
        scheduler_(SchedulerOptions{
            .num_slots = backend_->num_slots(),
            .max_num_batched_tokens = options_.max_num_batched_tokens,
            .eos_token_id = options_.eos_token_id,
            .max_logits_rows = std::min(backend_->num_slots(), options_.max_num_batched_tokens),
            .state_cache_entries = options_.state_cache_entries,
            .state_cache_min_tokens = options_.state_cache_min_tokens}),
        seed_gen_(std::random_device{}()) {
    if (options_.sampler_threads > 1) {
      sampler_pool_ = std::make_unique<ref::ThreadPool>(options_.sampler_threads);
    }
    slots_total_ = backend_->num_slots();
    if (options_.async_publish_min_events > 0) publisher_ = std::make_unique<Publisher>();
  }
  ~EngineImpl() override { Stop(); }

  absl::Status Start() override;
  void Stop() override;
  absl::StatusOr<std::shared_ptr<EventChannel>> Submit(GenerateRequest request) override;
  absl::Status Cancel(const std::string& request_id) override;
  absl::Status CancelChoice(const std::string& request_id, int choice) override;
  EngineStats Stats() const override;
  const ModelConfig& config() const override { return backend_->config(); }
  const EngineOptions& options() const override { return options_; }

 private:
  enum class RunState { kCreated, kStarting, kRunning, kStopping, kStopped };

  absl::StatusOr<std::shared_ptr<EventChannel>> Enqueue(GenerateRequest request);
  absl::Status ValidateRequest(const GenerateRequest& r) const;
  absl::Status WarmUp();
  void Loop();
  void RunStep();
  // Runs the plan's forward and sampling into *result (cleared first).
  void Execute(const StepPlan& plan, StepResult* result, double* backend_seconds);
  // Execute through Backend::ForwardSampled (sampling on the device): only when the backend
  // samples on the device and every logits row is one kLast row sampled by exactly one choice.
  bool CanSampleOnDevice(const StepPlan& plan) const;
  // State cache: copies each cache hit's state into its slot before the forward, and each
  // finishing prompt's state into its snapshot slot after it (a failed copy fails that sequence).
  absl::Status RestoreCachedStates(const StepPlan& plan);
  void SnapshotPromptStates(const StepPlan& plan, StepResult* result);
  absl::Status ForwardSampled(const StepPlan& plan, StepResult* result);
  void Publish(UpdateOutput* out);

  // Immutable after construction.
  const std::unique_ptr<Backend> backend_;
  const EngineOptions options_;
  const int fail_every_;

  // Engine thread only.
  Scheduler scheduler_;
  int64_t forward_calls_ = 0;
  Clock::time_point last_expert_refresh_{};
  std::vector<float> logits_;
  std::unique_ptr<ref::ThreadPool> sampler_pool_;  // null: sample on the engine thread
  // Per-step buffers, reused so that a steady decode step allocates little.
  StepPlan plan_;
  StepResult result_;
  UpdateOutput out_;
  std::vector<SampleContext> rows_;
  std::vector<size_t> seq_of_row_;
  std::vector<SampledToken> sampled_;
  std::unique_ptr<Publisher> publisher_;  // null: events pushed on the engine thread

  // Shared, guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  RunState state_ = RunState::kCreated;
  bool stop_requested_ = false;
  std::deque<std::unique_ptr<RequestState>> submitted_;
  std::vector<std::string> cancels_;
  std::vector<std::pair<std::string, int>> choice_cancels_;  // (request id, choice)
  absl::flat_hash_set<std::string> live_ids_;
  uint64_t next_auto_id_ = 1;
  std::mt19937_64 seed_gen_;

  std::mutex stop_mu_;  // serializes Start/Stop
  std::thread thread_;

  // Lock-free counters (written by the engine thread, read anywhere).
  std::atomic<int64_t> cache_entries_{0}, cache_hits_{0}, cache_tokens_{0};
  std::atomic<int64_t> running_{0}, sched_waiting_{0}, submitted_count_{0}, slots_total_{0},
      slots_used_{0}, prompt_tokens_{0}, generation_tokens_{0}, steps_{0};
  std::atomic<double> last_step_seconds_{0}, backend_seconds_{0}, step_seconds_{0},
      warmup_seconds_{0};
  std::atomic<bool> ready_{false};
};

absl::Status EngineImpl::ValidateRequest(const GenerateRequest& r) const {
  const int vocab = backend_->config().vocab_size;
  if (r.prompt_ids.empty()) return absl::InvalidArgumentError("prompt must have at least 1 token");
  if (static_cast<int64_t>(r.prompt_ids.size()) > options_.max_prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("prompt has ", r.prompt_ids.size(),
                                                   " tokens, more than max_prompt_tokens (",
                                                   options_.max_prompt_tokens, ")"));
  }
  for (int32_t t : r.prompt_ids) {
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", t, " must be in [0, ", vocab, ")"));
    }
  }
  if (r.prompt_logprobs < -1 || r.prompt_logprobs > 20) {
    return absl::InvalidArgumentError("prompt_logprobs must be in [0, 20] (or -1: none)");
  }
  const int max_n = std::min(options_.max_n, backend_->num_slots());
  if (r.n < 1 || r.n > max_n) {
    return absl::InvalidArgumentError(absl::StrCat("n must be in [1, ", max_n, "]"));
  }
  if (r.sampling.max_tokens == 0 && r.prompt_logprobs < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be in [1, ", options_.max_tokens_limit,
                     "] (0 only with prompt_logprobs: score the prompt without generating)"));
  }
  if (r.sampling.max_tokens == 0 && r.prompt_logprobs >= 0) {
    // Score the prompt only: nothing is sampled, each choice ends (length) after the prefill.
    if (r.sampling.min_tokens != 0)
      return absl::InvalidArgumentError("min_tokens must be 0 when max_tokens is 0");
    SamplingParams scored = r.sampling;
    scored.max_tokens = 1;
    return ValidateSamplingParams(scored, vocab, options_.max_tokens_limit);
  }
  return ValidateSamplingParams(r.sampling, vocab, options_.max_tokens_limit);
}

absl::Status EngineImpl::Start() {
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != RunState::kCreated) {
      return absl::FailedPreconditionError("engine was already started");
    }
    state_ = RunState::kStarting;
  }
  auto warm = std::make_shared<std::promise<absl::Status>>();
  std::future<absl::Status> warm_done = warm->get_future();
  thread_ = std::thread([this, warm] {
    absl::Status s = WarmUp();
    {
      std::lock_guard<std::mutex> lock(mu_);
      state_ = s.ok() ? RunState::kRunning : RunState::kStopped;
    }
    if (s.ok()) ready_.store(true);
    warm->set_value(s);
    if (s.ok()) Loop();
    if (publisher_) publisher_->Flush();  // every final event is delivered before Stop returns
  });
  absl::Status s = warm_done.get();
  if (!s.ok()) {
    thread_.join();
    return absl::Status(s.code(), absl::StrCat("engine warm-up step failed: ", s.message()));
  }
  return absl::OkStatus();
}

void EngineImpl::Stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == RunState::kCreated) state_ = RunState::kStopped;
    if (state_ == RunState::kRunning) state_ = RunState::kStopping;
    stop_requested_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  ready_.store(false);
  std::lock_guard<std::mutex> lock(mu_);
  state_ = RunState::kStopped;
}

absl::Status EngineImpl::WarmUp() {
  // One token through the padding slot: exercises every layer without touching a real slot.
  const int32_t token = 0;
  SeqChunk chunk{.slot = backend_->padding_slot(),
                 .token_offset = 0,
                 .n_tokens = 1,
                 .first_chunk = true,
                 .logits = LogitsMode::kLast};
  const Clock::time_point t0 = Clock::now();
  absl::Status s = backend_->Forward(
      StepInput{std::span<const int32_t>(&token, 1), std::span<const SeqChunk>(&chunk, 1)},
      &logits_);
  // Then the backend's start-up work for the engine's limits (CUDA: workspace for the largest
  // step, every decode bucket's graph): a decode step holds at most one token per slot and at
  // most the token budget.
  if (s.ok()) {
    s = backend_->PrepareForServing(
        std::min(backend_->num_slots(), options_.max_num_batched_tokens),
        options_.max_num_batched_tokens);
  }
  warmup_seconds_.store(Seconds(Clock::now() - t0));
  return s;
}

absl::StatusOr<std::shared_ptr<EventChannel>> EngineImpl::Submit(GenerateRequest request) {
  absl::StatusOr<std::shared_ptr<EventChannel>> channel = Enqueue(std::move(request));
  if (!channel.ok() && options_.observer != nullptr)
    options_.observer->OnRejected(channel.status());
  return channel;
}

absl::StatusOr<std::shared_ptr<EventChannel>> EngineImpl::Enqueue(GenerateRequest request) {
  if (absl::Status s = ValidateRequest(request); !s.ok()) return s;
  auto r = std::make_unique<RequestState>();
  r->channel = std::make_shared<EventChannel>();
  r->arrival_time = Clock::now();
  std::shared_ptr<EventChannel> channel = r->channel;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != RunState::kRunning) {
      return absl::UnavailableError("the engine is not running (starting up or shutting down)");
    }
    if (static_cast<int64_t>(submitted_.size()) + sched_waiting_.load() >=
        options_.max_queued_requests) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "too many waiting requests (max_queued_requests = ", options_.max_queued_requests,
          "); retry later"));
    }
    if (request.request_id.empty()) {
      do {
        request.request_id = absl::StrCat("req-", next_auto_id_++);
      } while (live_ids_.contains(request.request_id));
    } else if (live_ids_.contains(request.request_id)) {
      return absl::AlreadyExistsError(
          absl::StrCat("request_id '", request.request_id, "' is already in use"));
    }
    r->seed = request.sampling.seed.has_value() ? *request.sampling.seed : seed_gen_();
    r->request = std::move(request);
    live_ids_.insert(r->request.request_id);
    submitted_.push_back(std::move(r));
    submitted_count_.store(static_cast<int64_t>(submitted_.size()));
  }
  cv_.notify_all();
  return channel;
}

absl::Status EngineImpl::Cancel(const std::string& request_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!live_ids_.contains(request_id)) {
      return absl::NotFoundError(absl::StrCat("no live request with id '", request_id, "'"));
    }
    cancels_.push_back(request_id);
  }
  cv_.notify_all();
  return absl::OkStatus();
}

absl::Status EngineImpl::CancelChoice(const std::string& request_id, int choice) {
  if (choice < 0) {
    return absl::InvalidArgumentError(absl::StrCat("choice ", choice, " must be >= 0"));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!live_ids_.contains(request_id)) {
      return absl::NotFoundError(absl::StrCat("no live request with id '", request_id, "'"));
    }
    choice_cancels_.emplace_back(request_id, choice);
  }
  cv_.notify_all();
  return absl::OkStatus();
}

EngineStats EngineImpl::Stats() const {
  EngineStats s;
  s.running = running_.load();
  s.waiting = sched_waiting_.load() + submitted_count_.load();
  s.slots_total = slots_total_.load();
  s.slots_used = slots_used_.load();
  s.state_cache_entries = cache_entries_.load();
  s.state_cache_hits_total = cache_hits_.load();
  s.state_cache_tokens_total = cache_tokens_.load();
  s.prompt_tokens_total = prompt_tokens_.load();
  s.generation_tokens_total = generation_tokens_.load();
  s.steps_total = steps_.load();
  s.last_step_seconds = last_step_seconds_.load();
  s.backend_seconds_total = backend_seconds_.load();
  s.step_seconds_total = step_seconds_.load();
  s.state_bytes_per_slot = backend_->state_bytes_per_slot();
  s.backend_memory_bytes = backend_->memory_bytes_in_use();
  s.graphs = backend_->graph_memory();
  s.warmup_seconds = warmup_seconds_.load();
  s.ready = ready_.load();
  return s;
}

void EngineImpl::Loop() {
  while (true) {
    bool stopping = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!scheduler_.HasWork()) {
        cv_.wait(lock, [this] {
          return stop_requested_ || !submitted_.empty() || !cancels_.empty() ||
                 !choice_cancels_.empty();
        });
      }
      while (!submitted_.empty()) {
        scheduler_.Add(std::move(submitted_.front()));
        submitted_.pop_front();
      }
      for (const std::string& id : cancels_) scheduler_.RequestCancel(id);
      cancels_.clear();
      for (const auto& [id, choice] : choice_cancels_) scheduler_.RequestCancelChoice(id, choice);
      choice_cancels_.clear();
      sched_waiting_.store(scheduler_.num_waiting());
      submitted_count_.store(0);
      stopping = stop_requested_;
    }
    if (stopping) scheduler_.CancelAll();
    scheduler_.PollAbandoned();
    RunStep();
    if (stopping && !scheduler_.HasWork()) break;
  }
}

void EngineImpl::RunStep() {
  const Clock::time_point start = Clock::now();
  StepPlan& plan = plan_;
  scheduler_.Schedule(start, &plan);
  sched_waiting_.store(scheduler_.num_waiting());
  StepResult& result = result_;
  double backend_seconds = 0;
  result.status = absl::OkStatus();
  result.seq_status.clear();
  result.sampled.clear();
  result.prompt_logprobs.clear();
  if (!plan.empty()) Execute(plan, &result, &backend_seconds);
  UpdateOutput& out = out_;
  scheduler_.Update(plan, result, Clock::now(), &out);
  // Counters first, so a client that saw an event also sees the counts that include it.
  running_.store(scheduler_.num_running());
  sched_waiting_.store(scheduler_.num_waiting());
  slots_used_.store(scheduler_.num_request_slots());
  cache_entries_.store(scheduler_.state_cache().size());
  cache_hits_.fetch_add(out.cache_hits);
  cache_tokens_.fetch_add(out.cached_prompt_tokens);
  prompt_tokens_.fetch_add(out.prompt_tokens);
  generation_tokens_.fetch_add(out.generated_tokens);
  // The observer too, so metrics scraped after a client's final event include its step.
  if (!plan.empty() && options_.observer != nullptr) {
    StepObservation obs;
    obs.num_seqs = static_cast<int>(plan.seqs.size());
    obs.num_decode_tokens = plan.num_decode_tokens;
    obs.num_prefill_tokens = plan.num_prefill_tokens;
    const Clock::time_point now = Clock::now();
    obs.step_seconds = Seconds(now - start);
    obs.backend_seconds = backend_seconds;
    obs.failed = !result.status.ok();
    // Also refreshed when the engine goes idle, so the counts are exact after traffic.
    if (Seconds(now - last_expert_refresh_) >= kExpertCountsRefreshSeconds ||
        !scheduler_.HasWork()) {
      last_expert_refresh_ = now;
      obs.expert_token_counts = backend_->ExpertTokenCounts();
    }
    options_.observer->OnStep(obs);
  }
  Publish(&out);
  if (!plan.empty()) {
    const double step = Seconds(Clock::now() - start);
    steps_.fetch_add(1);
    last_step_seconds_.store(step);
    step_seconds_.store(step_seconds_.load() + step);  // single writer
  }
}

void EngineImpl::Execute(const StepPlan& plan, StepResult* result_ptr, double* backend_seconds) {
  StepResult& result = *result_ptr;
  ++forward_calls_;
  const Clock::time_point t0 = Clock::now();
  if (fail_every_ > 0 && forward_calls_ % fail_every_ == 0) {
    result.status = absl::InternalError(absl::StrCat(
        "injected fault: backend step ", forward_calls_, " failed (step-fail:", fail_every_, ")"));
  } else if (absl::Status restored = RestoreCachedStates(plan); !restored.ok()) {
    result.status = restored;
  } else if (CanSampleOnDevice(plan)) {
    result.status = ForwardSampled(plan, &result);
    if (result.status.ok()) SnapshotPromptStates(plan, &result);
    *backend_seconds = Seconds(Clock::now() - t0);
    backend_seconds_.store(backend_seconds_.load() + *backend_seconds);
    return;
  } else {
    result.status = backend_->Forward(plan.Input(), &logits_);
  }
  *backend_seconds = Seconds(Clock::now() - t0);
  backend_seconds_.store(backend_seconds_.load() + *backend_seconds);
  if (!result.status.ok()) return;

  const size_t vocab = static_cast<size_t>(backend_->config().vocab_size);
  result.seq_status.assign(plan.seqs.size(), absl::OkStatus());
  result.sampled.resize(plan.seqs.size());
  struct SampleJob {
    size_t seq, index;  // output: result.sampled[seq][index]
    int choice;
    const float* row;  // [vocab]
  };
  std::vector<SampleJob> jobs;
  // A kAll prompt chunk's rows score the prompt tokens after each of its tokens.
  struct ScoreJob {
    TokenLogprob* out;
    int32_t token;  // the prompt token that follows the row's position
    int top_n;
    const float* row;  // [vocab]
  };
  std::vector<ScoreJob> score_jobs;
  size_t row = 0;
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const PlannedSeq& seq = plan.seqs[i];
    if (seq.chunk.logits == LogitsMode::kNone) continue;
    const size_t n_rows = seq.chunk.logits == LogitsMode::kAll ? seq.chunk.n_tokens : 1;
    if ((row + n_rows) * vocab > logits_.size()) {
      result.seq_status[i] = absl::InternalError("backend returned fewer logits rows than asked");
      row += n_rows;
      continue;
    }
    if (seq.chunk.logits == LogitsMode::kAll && seq.choice < 0) {
      const GenerateRequest& req = seq.request->request;
      const int start = seq.request->prefilled;  // prompt position of the chunk's first token
      const int n_scored = std::min<int>(seq.chunk.n_tokens, seq.request->prompt_len() - 1 - start);
      if (result.prompt_logprobs.size() < plan.seqs.size())
        result.prompt_logprobs.resize(plan.seqs.size());
      std::vector<TokenLogprob>& scores = result.prompt_logprobs[i];
      scores.resize(std::max(n_scored, 0));
      for (int t = 0; t < n_scored; ++t) {
        score_jobs.push_back({&scores[t], req.prompt_ids[start + t + 1],
                              std::max(req.prompt_logprobs, 0),
                              logits_.data() + (row + t) * vocab});
      }
    }
    // Sampling reads the chunk's last row.
    std::span<const float> logits(logits_.data() + (row + n_rows - 1) * vocab, vocab);
    row += n_rows;
    for (int dst : seq.fork_to) {
      absl::Status s = backend_->CopyState(seq.chunk.slot, dst);
      if (!s.ok()) {
        result.seq_status[i] = s;
        break;
      }
    }
    if (!result.seq_status[i].ok()) continue;
    result.sampled[i].resize(seq.sample_choices.size());
    for (size_t j = 0; j < seq.sample_choices.size(); ++j) {
      jobs.push_back({i, j, seq.sample_choices[j], logits.data()});
    }
  }
  SnapshotPromptStates(plan, &result);
  // Rows are independent: sample them in parallel (each job writes its own output element;
  // the scheduler is only read). Small vocabularies keep many rows per range.
  const int64_t rows_per_range = std::max<int64_t>(1, 32768 / static_cast<int64_t>(vocab));
  ref::ParallelFor(
      sampler_pool_.get(), static_cast<int64_t>(jobs.size()),
      [&](int64_t begin, int64_t end) {
        thread_local std::vector<float> scratch;
        for (int64_t k = begin; k < end; ++k) {
          const SampleJob& job = jobs[k];
          result.sampled[job.seq][job.index] =
              SampleToken(std::span<const float>(job.row, vocab),
                          scheduler_.ContextFor(*plan.seqs[job.seq].request, job.choice), &scratch);
        }
      },
      rows_per_range);
  ref::ParallelFor(
      sampler_pool_.get(), static_cast<int64_t>(score_jobs.size()),
      [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          const ScoreJob& job = score_jobs[k];
          *job.out = ComputeLogprobs(std::span<const float>(job.row, vocab), job.token, job.top_n);
          const float x = job.row[job.token];
          job.out->rank = 1 + static_cast<int>(std::count_if(job.row, job.row + vocab,
                                                             [x](float v) { return v > x; }));
        }
      },
      rows_per_range);
}

absl::Status EngineImpl::RestoreCachedStates(const StepPlan& plan) {
  for (const PlannedSeq& seq : plan.seqs) {
    if (seq.restore_from < 0) continue;
    if (absl::Status s = backend_->CopyState(seq.restore_from, seq.chunk.slot); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("state cache restore: ", s.message()));
    }
  }
  return absl::OkStatus();
}

void EngineImpl::SnapshotPromptStates(const StepPlan& plan, StepResult* result) {
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const PlannedSeq& seq = plan.seqs[i];
    if (seq.snapshot_to < 0 || !result->seq_status[i].ok()) continue;
    result->seq_status[i] = backend_->CopyState(seq.chunk.slot, seq.snapshot_to);
  }
}

bool EngineImpl::CanSampleOnDevice(const StepPlan& plan) const {
  if (!backend_->SamplesOnDevice()) return false;
  for (const PlannedSeq& seq : plan.seqs) {
    if (seq.chunk.logits == LogitsMode::kNone) continue;
    if (seq.chunk.logits != LogitsMode::kLast || seq.sample_choices.size() != 1 ||
        !seq.fork_to.empty())
      return false;
  }
  return true;
}

absl::Status EngineImpl::ForwardSampled(const StepPlan& plan, StepResult* result) {
  std::vector<SampleContext>& rows = rows_;  // one per logits row, in chunk order
  std::vector<size_t>& seq_of_row = seq_of_row_;
  rows.clear();
  seq_of_row.clear();
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const PlannedSeq& seq = plan.seqs[i];
    if (seq.chunk.logits == LogitsMode::kNone) continue;
    rows.push_back(scheduler_.ContextFor(*seq.request, seq.sample_choices[0]));
    seq_of_row.push_back(i);
  }
  std::vector<SampledToken>& sampled = sampled_;
  absl::Status s = backend_->ForwardSampled(plan.Input(), rows, &sampled);
  if (!s.ok()) return s;
  if (sampled.size() != rows.size())
    return absl::InternalError("backend returned fewer sampled tokens than asked");
  result->seq_status.assign(plan.seqs.size(), absl::OkStatus());
  result->sampled.resize(plan.seqs.size());
  for (size_t r = 0; r < rows.size(); ++r)
    result->sampled[seq_of_row[r]].push_back(std::move(sampled[r]));
  return absl::OkStatus();
}

void EngineImpl::Publish(UpdateOutput* out) {
  if (!out->finished_ids.empty()) {
    // Forget the ids first, so a client that sees the final event may reuse its id at once.
    std::lock_guard<std::mutex> lock(mu_);
    for (const std::string& id : out->finished_ids) live_ids_.erase(id);
  }
  if (options_.observer != nullptr) {  // on the engine thread, in order, before any push
    for (const OutgoingEvent& e : out->events)
      if (e.channel != nullptr) options_.observer->OnEvent(e.channel.get(), e.event);
  }
  if (publisher_ != nullptr &&
      static_cast<int>(out->events.size()) >= options_.async_publish_min_events) {
    publisher_->Submit(&out->events);  // pushed while the next step runs
    return;
  }
  if (publisher_ != nullptr) publisher_->Flush();  // a channel's earlier events go first
  for (OutgoingEvent& e : out->events) {
    if (e.channel != nullptr) e.channel->Push(std::move(e.event));
  }
  out->events.clear();  // drop the channel references now (the capacity stays)
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::unique_ptr<Backend> backend,
                                                       EngineOptions options) {
  if (backend == nullptr) return absl::InvalidArgumentError("backend must not be null");
  if (backend->num_slots() < 1) return absl::InvalidArgumentError("backend has no state slots");
  if (absl::Status s = ValidateOptions(options, backend->config()); !s.ok()) return s;
  absl::StatusOr<int> fail_every = ParseFaultInjection(options.fault_injection);
  if (!fail_every.ok()) return fail_every.status();
  return std::unique_ptr<Engine>(
      new EngineImpl(std::move(backend), std::move(options), *fail_every));
}

}  // namespace bms
