// dump_logits: runs a model directory on the CpuBackend and writes, as JSON, the fp32 logits
// after every prompt position and a greedy continuation ({"logits": [[...]], "greedy": [...]}).
// reference_test.py compares this against the independent PyTorch reference.
//
//   dump_logits --model DIR --prompt-ids 1,2,3 [--max-tokens N] [--chunk K] --out FILE
//
// --chunk K prefills the prompt in chunks of K tokens (0 = one chunk).
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/cpu_backend.h"
#include "engine/model_weights.h"
#include "nlohmann/json.hpp"

namespace {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "dump_logits: %s\n", msg.c_str());
  return 1;
}

int Argmax(const float* row, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i) {
    if (row[i] > row[best]) best = i;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir, prompt_text, out_path;
  int max_tokens = 0, chunk = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") {
      model_dir = v;
    } else if (k == "--prompt-ids") {
      prompt_text = v;
    } else if (k == "--out") {
      out_path = v;
    } else if (k == "--max-tokens" && absl::SimpleAtoi(v, &max_tokens) && max_tokens >= 0) {
    } else if (k == "--chunk" && absl::SimpleAtoi(v, &chunk) && chunk >= 0) {
    } else {
      return Fail("bad argument " + k + " " + v);
    }
  }
  if (model_dir.empty() || prompt_text.empty() || out_path.empty()) {
    return Fail(
        "usage: dump_logits --model DIR --prompt-ids 1,2,3 [--max-tokens N] "
        "[--chunk K] --out FILE");
  }
  std::vector<int32_t> prompt;
  for (absl::string_view p : absl::StrSplit(prompt_text, ',')) {
    int32_t id;
    if (!absl::SimpleAtoi(p, &id)) return Fail("bad --prompt-ids entry '" + std::string(p) + "'");
    prompt.push_back(id);
  }
  auto weights = bms::LoadModel(model_dir);
  if (!weights.ok()) return Fail(std::string(weights.status().message()));
  bms::BackendOptions options;
  options.num_slots = 1;
  auto backend = bms::CpuBackend::Create(*weights, options);
  if (!backend.ok()) return Fail(std::string(backend.status().message()));
  const int V = weights->config.vocab_size;

  std::vector<float> all, step;
  const int n = static_cast<int>(prompt.size());
  const int k = chunk == 0 ? n : chunk;
  for (int t = 0; t < n; t += k) {
    bms::SeqChunk s{.slot = 0,
                    .token_offset = t,
                    .n_tokens = std::min(k, n - t),
                    .first_chunk = t == 0,
                    .logits = bms::LogitsMode::kAll};
    absl::Status st = (*backend)->Forward({prompt, std::span<const bms::SeqChunk>(&s, 1)}, &step);
    if (!st.ok()) return Fail(std::string(st.message()));
    all.insert(all.end(), step.begin(), step.end());
  }
  std::vector<int32_t> greedy;
  std::vector<float> last(all.end() - V, all.end());
  for (int i = 0; i < max_tokens; ++i) {
    greedy.push_back(Argmax(last.data(), V));
    bms::SeqChunk s{.slot = 0,
                    .token_offset = 0,
                    .n_tokens = 1,
                    .first_chunk = false,
                    .logits = bms::LogitsMode::kLast};
    std::vector<int32_t> tok = {greedy.back()};
    absl::Status st = (*backend)->Forward({tok, std::span<const bms::SeqChunk>(&s, 1)}, &last);
    if (!st.ok()) return Fail(std::string(st.message()));
  }

  nlohmann::json j;
  j["greedy"] = greedy;
  nlohmann::json rows = nlohmann::json::array();
  for (int t = 0; t < n; ++t)
    rows.push_back(std::vector<float>(all.begin() + t * V, all.begin() + (t + 1) * V));
  j["logits"] = std::move(rows);
  std::ofstream out(out_path);
  out << j.dump();
  if (!out) return Fail("cannot write " + out_path);
  return 0;
}
