#include "server/grpc_generate.h"

#include <cstdio>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/grpc_auth.h"
#include "server/grpc_convert.h"

namespace bms {
namespace pb = ::bmserve::v1;

GrpcWorkQueue::GrpcWorkQueue(int threads) {
  if (threads < 1) threads = 1;
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this] {
      for (;;) {
        std::function<void()> task;
        {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
          if (tasks_.empty()) return;  // stop_ and nothing left
          task = std::move(tasks_.front());
          tasks_.pop_front();
        }
        task();
      }
    });
  }
}

GrpcWorkQueue::~GrpcWorkQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void GrpcWorkQueue::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
  }
  cv_.notify_one();
}

namespace {

std::string NewRequestId() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t prefix = std::random_device{}() * 0x9E3779B97F4A7C15ull;
  return absl::StrFormat("grpc-%08x-%d", static_cast<uint32_t>(prefix >> 32),
                         counter.fetch_add(1) + 1);
}

class GenerateReactor;

// The engine's notifier reaches the reactor only through this link, which the reactor cuts in
// OnDone; a notification after that is a no-op.
struct ReactorLink {
  std::mutex mu;
  GenerateReactor* reactor = nullptr;
  void Notify();
};

class GenerateReactor final : public grpc::ServerWriteReactor<pb::GenerateResponse> {
 public:
  GenerateReactor(ServerContext& ctx, GrpcWorkQueue& queue, std::atomic<int64_t>& active_calls,
                  grpc::CallbackServerContext* call, const pb::GenerateRequest& request)
      : ctx_(ctx), queue_(queue), active_calls_(active_calls), tokenizer_(*ctx.tokenizer) {
    active_calls_.fetch_add(1);
    if (grpc::Status auth = CheckGrpcAuth(ctx.api_keys, *call); !auth.ok()) {
      FinishEarly(auth);
      return;
    }
    if (!ctx.Ready()) {
      FinishEarly(grpc::Status(grpc::StatusCode::UNAVAILABLE, ctx.draining.load()
                                                                  ? "the server is draining"
                                                                  : "the engine is not ready"));
      return;
    }
    GrpcGenerateSpec spec;
    grpc::Status status = ToEngineRequest(request, ctx, &spec);
    if (!status.ok()) {
      FinishEarly(status);
      return;
    }
    if (spec.request.request_id.empty()) spec.request.request_id = NewRequestId();
    request_id_ = spec.request.request_id;
    stream_ = spec.stream;
    const int n = spec.request.n;
    auto channel = ctx.engine->Submit(std::move(spec.request));
    if (!channel.ok()) {
      grpc::Status s = ToGrpcStatus(channel.status());
      if (s.error_code() == grpc::StatusCode::INTERNAL) {
        std::fprintf(stderr, "grpc: Generate %s: internal error at submit: %s\n",
                     request_id_.c_str(), s.error_message().c_str());
      }
      FinishEarly(s);
      return;
    }
    call->AddInitialMetadata("x-request-id", request_id_);
    choices_.emplace(tokenizer_, n, spec.choice_options);
    channel_ = *std::move(channel);
    link_ = std::make_shared<ReactorLink>();
    link_->reactor = this;
    channel_->SetNotifier([link = link_] { link->Notify(); });
  }

  void OnWriteDone(bool ok) override {
    Ref();
    {
      std::lock_guard<std::mutex> lock(mu_);
      write_in_flight_ = false;
      if (!ok) cancelled_ = true;  // the stream is broken: the client is gone
    }
    if (!ok && channel_) channel_->Abandon();
    Pump();
    Unref();
  }

  void OnCancel() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
    }
    if (channel_) channel_->Abandon();  // the engine cancels it at its next step
    SchedulePump();
  }

  void OnDone() override {
    if (link_) {
      std::lock_guard<std::mutex> lock(link_->mu);
      link_->reactor = nullptr;
    }
    bool unfinished;
    {
      std::lock_guard<std::mutex> lock(mu_);  // a queued Pump may still be running
      unfinished = choices_ && !choices_->AllFinished();
    }
    if (channel_ && unfinished) channel_->Abandon();
    active_calls_.fetch_sub(1);
    Unref();
  }

  // Posts one Pump to the work queue unless one is already waiting there.
  void SchedulePump() {
    if (pump_scheduled_.exchange(true)) return;
    Ref();
    queue_.Post([this] {
      pump_scheduled_.store(false);
      Pump();
      Unref();
    });
  }

 private:
  // Ends a call that never reached the engine (called from the constructor only).
  void FinishEarly(const grpc::Status& status) {
    finishing_ = true;
    Finish(status);
  }

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  bool Sendable(const ChoiceDelta& d) const {
    return d.finish != FinishReason::kNone || (stream_ && d.HasOutput());
  }

  // Turns the pending delta of one choice into out_ (the choice's prompt scores go into its
  // first message). Returns true when the choice has nothing left to send afterwards.
  bool BuildMessage(ChoiceDelta& d) {
    out_.Clear();
    out_.set_request_id(request_id_);
    const bool built = BuildMessageBody(d);
    if (auto it = prompt_scores_.find(d.index); it != prompt_scores_.end()) {
      FillPromptLogprobs(tokenizer_, it->second, &out_);
      prompt_scores_.erase(it);
    }
    return built;
  }

  bool BuildMessageBody(ChoiceDelta& d) {
    if (d.finish == FinishReason::kError) {
      if (d.HasOutput()) {  // what it produced before failing, then the error
        FillChunk(tokenizer_, d, out_.mutable_chunk());
        d.token_ids.clear();
        d.text.clear();
        d.logprobs.clear();
        return false;
      }
      pb::Error* e = out_.mutable_error();
      e->set_index(d.index);
      e->set_code(static_cast<int>(ErrorStatus(d).error_code()));
      e->set_message(ErrorStatus(d).error_message());
      return true;
    }
    if (d.finish != FinishReason::kNone) {
      FillComplete(tokenizer_, d, out_.mutable_complete());
    } else {
      FillChunk(tokenizer_, d, out_.mutable_chunk());
    }
    return true;
  }

  static grpc::Status ErrorStatus(const ChoiceDelta& d) {
    if (d.error.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "generation failed");
    return ToGrpcStatus(d.error);
  }

  // Moves engine events into per-choice pending deltas and starts the next write or the
  // finish. Runs on a work-queue thread or in OnWriteDone; the caller holds a reference.
  // Touches no member after StartWrite/Finish (OnDone may run inline and drop the last ref).
  void Pump() {
    std::unique_lock<std::mutex> lock(mu_);
    if (finishing_ || write_in_flight_) return;
    if (cancelled_) {
      finishing_ = true;
      lock.unlock();
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call"));
      return;
    }
    for (GenerationEvent& ev : channel_->DrainAll()) {
      // Only a choice's first token event carries them, so no message of that choice was sent
      // yet: they wait here for its first message (which may coalesce later events too).
      if (!ev.prompt_logprobs.empty()) prompt_scores_[ev.choice] = std::move(ev.prompt_logprobs);
      ChoiceDelta d = choices_->Consume(ev);
      if (d.index < 0) {  // engine bug: fail the whole call
        final_status_ = ErrorStatus(d);
        finishing_ = true;
        lock.unlock();
        channel_->Abandon();
        Finish(final_status_);
        return;
      }
      if (d.finish == FinishReason::kError && final_status_.ok()) {
        final_status_ = ErrorStatus(d);
        if (final_status_.error_code() == grpc::StatusCode::INTERNAL) {
          std::fprintf(stderr, "grpc: Generate %s choice %d failed: %s\n", request_id_.c_str(),
                       d.index, final_status_.error_message().c_str());
        }
      }
      if (d.finish != FinishReason::kNone && !choices_->AllFinished() &&
          choices_->ChoiceNeedsEngineCancel(d.index)) {
        // This choice ended on a stop string while others go on: free its engine slot now
        // (takes only the engine's queue lock, never held while the engine notifies).
        (void)ctx_.engine->CancelChoice(request_id_, d.index);  // NotFound if it just ended
      }
      auto it = pending_.find(d.index);
      if (it == pending_.end()) {
        if (d.HasOutput() || d.finish != FinishReason::kNone)
          pending_.emplace(d.index, std::move(d));
      } else {
        it->second.Append(std::move(d));
      }
    }
    // Choices that ended on a stop string leave the engine running them: cancel it.
    if (choices_->NeedsEngineCancel()) channel_->Abandon();

    // Round-robin over choices so one chatty choice does not starve the others.
    auto it = pending_.lower_bound(next_choice_);
    for (size_t tries = 0; tries < pending_.size(); ++tries) {
      if (it == pending_.end()) it = pending_.begin();
      if (Sendable(it->second)) break;
      ++it;
    }
    if (it != pending_.end() && Sendable(it->second)) {
      next_choice_ = it->first + 1;
      if (BuildMessage(it->second)) pending_.erase(it);
      write_in_flight_ = true;
      lock.unlock();
      StartWrite(&out_);
      return;
    }
    if (choices_->AllFinished() && pending_.empty()) {
      finishing_ = true;
      lock.unlock();
      Finish(final_status_);
    }
  }

  ServerContext& ctx_;
  GrpcWorkQueue& queue_;
  std::atomic<int64_t>& active_calls_;
  const Tokenizer& tokenizer_;
  std::string request_id_;
  bool stream_ = false;
  std::optional<RequestStream> choices_;
  std::shared_ptr<EventChannel> channel_;
  std::shared_ptr<ReactorLink> link_;

  std::mutex mu_;
  bool write_in_flight_ = false;
  bool finishing_ = false;
  bool cancelled_ = false;
  std::map<int, ChoiceDelta> pending_;  // choice -> output not yet written (coalesced)
  // choice -> GenerationEvent::prompt_logprobs not yet sent (they go into its first message)
  std::map<int, std::vector<TokenLogprob>> prompt_scores_;
  int next_choice_ = 0;
  grpc::Status final_status_;
  pb::GenerateResponse out_;  // the message being written (alive until OnWriteDone)

  std::atomic<int> refs_{1};  // gRPC's reference, dropped in OnDone; plus queued pumps
  std::atomic<bool> pump_scheduled_{false};
};

void ReactorLink::Notify() {
  std::lock_guard<std::mutex> lock(mu);
  if (reactor != nullptr) reactor->SchedulePump();
}

}  // namespace

grpc::ServerWriteReactor<pb::GenerateResponse>* NewGenerateReactor(
    ServerContext& ctx, GrpcWorkQueue& queue, std::atomic<int64_t>& active_calls,
    grpc::CallbackServerContext* call, const pb::GenerateRequest& request) {
  return new GenerateReactor(ctx, queue, active_calls, call, request);
}

}  // namespace bms
