// BpeTokenizer: the Tokenizer for HF byte-level BPE JSON files (GPT-2 / GPT-NeoX family):
// raw-text added tokens -> NFC -> normalized added tokens -> GPT-2 pre-tokenizer -> BPE, and the
// ByteLevel decoder. Built by Tokenizer::FromJsonText (tokenizer_json.cc). Encode/Decode are
// const and thread-safe; a word cache is shared by callers (see Encode).
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "tokenizer/added_vocab.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/tokenizer.h"

namespace bms {

struct BpeTokenizerOptions {
  bool nfc = false;               // normalizer NFC
  bool add_prefix_space = false;  // ByteLevel pre-tokenizer option
  bool use_regex = true;          // ByteLevel pre-tokenizer: split with the GPT-2 pattern
};

class BpeTokenizer final : public Tokenizer {
 public:
  // `added`: every added token (content already normalized where `normalized` is set).
  BpeTokenizer(std::string name, BpeModel model, const std::vector<AddedToken>& added,
               BpeTokenizerOptions options);

  // Uses the shared word cache when it is free (try-lock) and encodes without it otherwise, so
  // concurrent callers never wait on each other.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool parse_special = false) const override;
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  std::string TokenBytes(int32_t id) const override;
  bool IsSpecialToken(int32_t id) const override;
  int vocab_size() const override { return static_cast<int>(id_to_bytes_.size()); }
  int32_t eos_token_id() const override { return eos_id_; }
  std::string name() const override { return name_; }

 private:
  using WordCache = absl::flat_hash_map<std::string, std::vector<int32_t>>;
  // A piece of raw text between raw-stage added tokens.
  absl::Status EncodeSegment(std::string_view segment, bool parse_special, WordCache* cache,
                             std::vector<int32_t>* ids) const;
  // Normalized text without added tokens: pre-tokenize and BPE each word.
  void EncodePlain(std::string_view text, WordCache* cache, std::vector<int32_t>* ids) const;
  void EncodeWord(std::string_view word, WordCache* cache, std::vector<int32_t>* ids) const;

  std::string name_;
  BpeModel model_;
  BpeTokenizerOptions options_;
  AddedVocab raw_added_;         // matched on the raw text (normalized == false)
  AddedVocab normalized_added_;  // matched after normalization
  std::vector<std::string> id_to_bytes_;
  std::vector<bool> special_;
  int32_t eos_id_ = -1;

  mutable std::mutex cache_mu_;
  mutable WordCache cache_;  // guarded by cache_mu_
};

}  // namespace bms
