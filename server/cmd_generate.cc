// `bmserve generate`: offline generation through the same Engine the server uses (one request,
// n choices). Prints the generated ids and text, or one JSON object with --json.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "server/commands.h"
#include "server/flags.h"
#include "server/offline_engine.h"

namespace bms {
namespace {

struct ChoiceOut {
  std::vector<int32_t> ids;
  FinishReason finish = FinishReason::kNone;
  int32_t stop_token = -1;
  absl::Status error;
};

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --prompt-ids: '", part, "' is not an integer token id"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("flag --prompt-ids: no token ids given");
  return ids;
}

// The text of a choice: the ending stop token (EOS or a stop id), reported last in the ids,
// adds no text.
std::string ChoiceText(const Tokenizer& tokenizer, const ChoiceOut& c) {
  std::vector<int32_t> ids = c.ids;
  if (c.finish == FinishReason::kStop && c.stop_token >= 0 && !ids.empty() &&
      ids.back() == c.stop_token) {
    ids.pop_back();
  }
  return tokenizer.Decode(ids);
}

int Fail(const absl::Status& s, int code = 1) {
  std::fprintf(stderr, "bmserve generate: %s\n", std::string(s.message()).c_str());
  return code;
}

}  // namespace

int GenerateCommand(const Args& args) {
  EngineFlagValues ev;
  std::string prompt_ids_flag, prompt;
  int max_tokens = 16, top_k = 0, n = 1, min_tokens = 0, logprobs = -1, prompt_logprobs = -1;
  double temperature = 1.0, top_p = 1.0, min_p = 0.0;
  double presence = 0, frequency = 0, repetition = 1.0;
  int64_t seed = -1;
  bool json = false, ignore_eos = false;
  FlagSet f("generate");
  RegisterEngineFlags(&f, &ev);
  f.String("prompt-ids", &prompt_ids_flag, "prompt as comma-separated token ids, e.g. 1,2,3");
  f.String("prompt", &prompt, "prompt text (encoded with the model's tokenizer)");
  f.Int("max-tokens", &max_tokens, "tokens to generate per choice");
  f.Double("temperature", &temperature, "0 = greedy");
  f.Double("top-p", &top_p, "nucleus sampling mass in (0, 1]");
  f.Int("top-k", &top_k, "keep the k most likely tokens (0 = off)");
  f.Double("min-p", &min_p, "drop tokens below min-p times the top probability");
  f.Double("presence-penalty", &presence, "[-2, 2], over generated tokens");
  f.Double("frequency-penalty", &frequency, "[-2, 2], over generated tokens");
  f.Double("repetition-penalty", &repetition, "> 0, 1 = off");
  f.Int("min-tokens", &min_tokens, "EOS is suppressed before this many tokens");
  f.Int("logprobs", &logprobs, "-1 = none; 0..20 top alternatives per token (JSON only)");
  f.Int("prompt-logprobs", &prompt_logprobs,
        "-1 = none; 0..20: score every prompt token after the first (its logprob, rank and top "
        "alternatives; JSON) and print the prompt's total logprob; with --max-tokens 0 nothing "
        "is generated");
  f.Int64("seed", &seed, "sampling seed (-1 = random)");
  f.Int("n", &n, "independent choices sharing one prompt prefill");
  f.Bool("ignore-eos", &ignore_eos, "keep generating after EOS");
  f.Bool("json", &json, "print one JSON object");
  if (absl::Status s = f.Parse(args); !s.ok()) return Fail(s, 2);
  if (f.help_requested()) {
    std::printf("%s", f.Usage().c_str());
    return 0;
  }
  if (prompt_ids_flag.empty() == prompt.empty()) {
    return Fail(absl::InvalidArgumentError("give exactly one of --prompt-ids or --prompt"), 2);
  }
  if (n < 1) return Fail(absl::InvalidArgumentError("flag --n must be >= 1"), 2);

  EngineOptions options;
  options.max_n = std::max(options.max_n, n);
  absl::StatusOr<OfflineEngine> oe = StartOfflineEngine(ev, n, /*default_slots=*/n, options);
  if (!oe.ok()) return Fail(oe.status());
  Engine& engine = *oe->engine;
  const Tokenizer& tokenizer = *oe->tokenizer;

  GenerateRequest req;
  if (!prompt_ids_flag.empty()) {
    absl::StatusOr<std::vector<int32_t>> ids = ParseIds(prompt_ids_flag);
    if (!ids.ok()) return Fail(ids.status(), 2);
    req.prompt_ids = std::move(*ids);
  } else {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(prompt);
    if (!ids.ok()) return Fail(ids.status());
    req.prompt_ids = std::move(*ids);
  }
  req.n = n;
  SamplingParams& sp = req.sampling;
  sp.max_tokens = max_tokens;
  sp.temperature = static_cast<float>(temperature);
  sp.top_p = static_cast<float>(top_p);
  sp.top_k = top_k;
  sp.min_p = static_cast<float>(min_p);
  sp.presence_penalty = static_cast<float>(presence);
  sp.frequency_penalty = static_cast<float>(frequency);
  sp.repetition_penalty = static_cast<float>(repetition);
  sp.min_tokens = min_tokens;
  sp.logprobs = logprobs;
  req.prompt_logprobs = prompt_logprobs;
  sp.ignore_eos = ignore_eos;
  if (seed >= 0) sp.seed = static_cast<uint64_t>(seed);

  absl::StatusOr<std::shared_ptr<EventChannel>> ch = engine.Submit(req);
  if (!ch.ok()) return Fail(ch.status(), 2);
  std::vector<ChoiceOut> choices(n);
  std::vector<nlohmann::json> choice_logprobs(n, nlohmann::json::array());
  std::vector<TokenLogprob> prompt_scores;  // from the first event that carries them
  int unfinished = n;
  while (unfinished > 0) {
    std::optional<GenerationEvent> e = (*ch)->Pop(std::chrono::milliseconds(1000));
    if (!e.has_value()) continue;
    ChoiceOut& c = choices[e->choice];
    if (prompt_scores.empty() && !e->prompt_logprobs.empty()) prompt_scores = e->prompt_logprobs;
    c.ids.insert(c.ids.end(), e->token_ids.begin(), e->token_ids.end());
    for (const TokenLogprob& lp : e->logprobs) {
      nlohmann::json top = nlohmann::json::array();
      for (const auto& [id, v] : lp.top) top.push_back({{"id", id}, {"logprob", v}});
      choice_logprobs[e->choice].push_back(
          {{"id", lp.token}, {"logprob", lp.logprob}, {"top", top}});
    }
    if (e->finish != FinishReason::kNone) {
      c.finish = e->finish;
      c.stop_token = e->stop_token;
      c.error = e->error;
      --unfinished;
    }
  }
  engine.Stop();

  int rc = 0;
  for (const ChoiceOut& c : choices) {
    if (c.finish == FinishReason::kError) {
      Fail(c.error);
      rc = 1;
    }
  }
  double prompt_logprob_sum = 0;
  for (const TokenLogprob& lp : prompt_scores) prompt_logprob_sum += lp.logprob;
  if (json) {
    nlohmann::json out;
    out["prompt_ids"] = req.prompt_ids;
    if (prompt_logprobs >= 0) {
      // Entry i scores prompt token i (the first has no context: null).
      nlohmann::json scores = nlohmann::json::array({nullptr});
      for (const TokenLogprob& lp : prompt_scores) {
        nlohmann::json top = nlohmann::json::array();
        for (const auto& [id, v] : lp.top) top.push_back({{"id", id}, {"logprob", v}});
        scores.push_back(
            {{"id", lp.token}, {"logprob", lp.logprob}, {"rank", lp.rank}, {"top", top}});
      }
      out["prompt_logprobs"] = std::move(scores);
      out["prompt_logprob_sum"] = prompt_logprob_sum;
    }
    auto choice_json = [&](int i) {
      nlohmann::json j;
      j["generated_ids"] = choices[i].ids;
      j["text"] = ChoiceText(tokenizer, choices[i]);
      j["finish_reason"] = FinishReasonName(choices[i].finish);
      if (choices[i].stop_token >= 0) j["stop_token"] = choices[i].stop_token;
      if (logprobs >= 0) j["logprobs"] = choice_logprobs[i];
      return j;
    };
    if (n == 1) {
      out.update(choice_json(0));
    } else {
      out["choices"] = nlohmann::json::array();
      for (int i = 0; i < n; ++i) {
        nlohmann::json j = choice_json(i);
        j["index"] = i;
        out["choices"].push_back(j);
      }
    }
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("prompt_ids: %s\n", absl::StrJoin(req.prompt_ids, ",").c_str());
    if (prompt_logprobs >= 0) std::printf("prompt_logprob_sum: %.6f\n", prompt_logprob_sum);
    for (int i = 0; i < n; ++i) {
      const ChoiceOut& c = choices[i];
      if (n > 1) std::printf("choice %d:\n", i);
      std::printf("generated_ids: %s\n", absl::StrJoin(c.ids, ",").c_str());
      std::printf("text: %s\n", ChoiceText(tokenizer, c).c_str());
      std::printf("finish_reason: %s%s\n", FinishReasonName(c.finish),
                  c.stop_token >= 0 ? absl::StrCat(" (token ", c.stop_token, ")").c_str() : "");
    }
  }
  return rc;
}

}  // namespace bms
