// Byte-level BPE tokenizer: encode and decode (see bpe_tokenizer.h).
#include "tokenizer/bpe_tokenizer.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer/utf8.h"

namespace bms {
namespace {

constexpr size_t kMaxEncodeBytes = size_t{1} << 30;  // ICU's int32 lengths bound the input
constexpr size_t kMaxCachedWord = 64;                // bytes
constexpr size_t kCacheCapacity = size_t{1} << 16;   // words; the cache is cleared when full

}  // namespace

BpeTokenizer::BpeTokenizer(std::string name, BpeModel model, const std::vector<AddedToken>& added,
                           BpeTokenizerOptions options)
    : name_(std::move(name)), model_(std::move(model)), options_(options) {
  id_to_bytes_ = model_.id_to_bytes();
  int32_t max_id = static_cast<int32_t>(id_to_bytes_.size()) - 1;
  for (const AddedToken& t : added) max_id = std::max(max_id, t.id);
  id_to_bytes_.resize(static_cast<size_t>(max_id + 1));
  special_.assign(id_to_bytes_.size(), false);
  for (const AddedToken& t : added) {
    (t.normalized ? normalized_added_ : raw_added_).Add(t);
    id_to_bytes_[t.id] = ByteLevelTokenToBytes(t.content);
    special_[t.id] = t.special;
    if (t.content == "<|endoftext|>") eos_id_ = t.id;
  }
  if (eos_id_ < 0) {
    auto it = model_.vocab().find("<|endoftext|>");
    if (it != model_.vocab().end()) eos_id_ = it->second;
  }
}

absl::StatusOr<std::vector<int32_t>> BpeTokenizer::Encode(std::string_view text,
                                                          bool parse_special) const {
  if (text.size() > kMaxEncodeBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("text: ", text.size(), " bytes is over the limit of ", kMaxEncodeBytes));
  }
  if (const size_t bad = utf8::FindInvalid(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("text: invalid UTF-8 at byte offset ", bad));
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 1);
  std::unique_lock<std::mutex> lock(cache_mu_, std::try_to_lock);
  WordCache* cache = lock.owns_lock() ? &cache_ : nullptr;
  size_t pos = 0;
  AddedVocab::Match m;
  while (raw_added_.FindNext(text, pos, pos, parse_special, &m)) {
    if (m.start > pos) {
      absl::Status s = EncodeSegment(text.substr(pos, m.start - pos), parse_special, cache, &ids);
      if (!s.ok()) return s;
    }
    ids.push_back(m.id);
    pos = m.end;
  }
  if (pos < text.size()) {
    absl::Status s = EncodeSegment(text.substr(pos), parse_special, cache, &ids);
    if (!s.ok()) return s;
  }
  return ids;
}

absl::Status BpeTokenizer::EncodeSegment(std::string_view segment, bool parse_special,
                                         WordCache* cache, std::vector<int32_t>* ids) const {
  std::string normalized;
  if (options_.nfc && !unicode::TriviallyNfc(segment)) {
    absl::Status s = unicode::ToNfc(segment, &normalized);
    if (!s.ok()) return s;
    segment = normalized;
  }
  size_t pos = 0;
  AddedVocab::Match m;
  while (normalized_added_.FindNext(segment, pos, pos, parse_special, &m)) {
    if (m.start > pos) EncodePlain(segment.substr(pos, m.start - pos), cache, ids);
    ids->push_back(m.id);
    pos = m.end;
  }
  if (pos < segment.size()) EncodePlain(segment.substr(pos), cache, ids);
  return absl::OkStatus();
}

void BpeTokenizer::EncodePlain(std::string_view text, WordCache* cache,
                               std::vector<int32_t>* ids) const {
  std::string prefixed;
  if (options_.add_prefix_space && text[0] != ' ') {
    prefixed.reserve(text.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(text);
    text = prefixed;
  }
  if (!options_.use_regex) {
    EncodeWord(text, cache, ids);
    return;
  }
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = NextGpt2PreToken(text, pos);
    EncodeWord(text.substr(pos, end - pos), cache, ids);
    pos = end;
  }
}

void BpeTokenizer::EncodeWord(std::string_view word, WordCache* cache,
                              std::vector<int32_t>* ids) const {
  if (cache == nullptr || word.size() > kMaxCachedWord || word.size() == 1) {
    model_.EncodeWord(word, ids);
    return;
  }
  if (auto it = cache->find(absl::string_view(word.data(), word.size())); it != cache->end()) {
    ids->insert(ids->end(), it->second.begin(), it->second.end());
    return;
  }
  const size_t first = ids->size();
  model_.EncodeWord(word, ids);
  if (cache->size() >= kCacheCapacity) cache->clear();
  cache->emplace(word, std::vector<int32_t>(ids->begin() + first, ids->end()));
}

std::string BpeTokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= id_to_bytes_.size()) continue;
    if (skip_special && special_[id]) continue;
    bytes += id_to_bytes_[id];
  }
  std::string out;
  out.reserve(bytes.size());
  utf8::AppendLossy(bytes, /*hold_incomplete=*/false, &out);
  return out;
}

std::string BpeTokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_bytes_.size()) return "";
  return id_to_bytes_[id];
}

bool BpeTokenizer::IsSpecialToken(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < special_.size() && special_[id];
}

}  // namespace bms
