// Streaming helpers: IncrementalDecoder and StopStringMatcher (declared in tokenizer.h).
#include <algorithm>

#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace bms {

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string IncrementalDecoder::Add(int32_t id) {
  if (skip_special_ && tokenizer_.IsSpecialToken(id)) return "";
  pending_ += tokenizer_.TokenBytes(id);
  std::string out;
  // Everything decodes now except a trailing valid-but-incomplete character; bytes that can no
  // longer become valid turn into U+FFFD at once, exactly as the one-shot lossy decode does.
  const size_t held = utf8::AppendLossy(pending_, /*hold_incomplete=*/true, &out);
  pending_.erase(0, pending_.size() - held);
  return out;
}

std::string IncrementalDecoder::Flush() {
  std::string out;
  utf8::AppendLossy(pending_, /*hold_incomplete=*/false, &out);
  pending_.clear();
  return out;
}

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops, bool include_stop_in_output)
    : include_stop_(include_stop_in_output) {
  for (std::string& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

std::string StopStringMatcher::Add(std::string_view text) {
  if (stopped_) return "";
  held_.append(text);
  // held_ had no complete stop string before this call, so any match found is new. The match
  // that completes first wins; on a tie, the one that starts first.
  size_t best_start = std::string::npos, best_end = std::string::npos;
  const std::string* best = nullptr;
  for (const std::string& s : stops_) {
    const size_t start = held_.find(s);
    if (start == std::string::npos) continue;
    const size_t end = start + s.size();
    if (best == nullptr || end < best_end || (end == best_end && start < best_start)) {
      best = &s;
      best_start = start;
      best_end = end;
    }
  }
  if (best != nullptr) {
    stopped_ = true;
    matched_ = *best;
    std::string out = held_.substr(0, include_stop_ ? best_end : best_start);
    held_.clear();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const std::string& s : stops_) {
    for (size_t len = std::min(held_.size(), s.size() - 1); len > keep; --len) {
      if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStringMatcher::Flush() {
  if (stopped_) return "";
  std::string out = std::move(held_);
  held_.clear();
  return out;
}

}  // namespace bms
