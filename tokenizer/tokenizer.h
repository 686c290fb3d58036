// Tokenizer: GPT-NeoX-style byte-level BPE loaded from a Hugging Face `tokenizer.json`, plus a
// built-in byte-level fallback (256 byte tokens + <|endoftext|>) for models without one.
// Encoding and decoding are const and thread-safe; frontends call them off the engine thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace bms {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Loads a HF tokenizers JSON file (byte-level BPE only; anything else is InvalidArgument).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJsonText(std::string_view json_text);
  // 256 byte tokens (id = byte value) + <|endoftext|> (id 256).
  static std::unique_ptr<Tokenizer> ByteFallback();

  // InvalidArgument for text that is not valid UTF-8 (or over 1 GiB). parse_special: match
  // special added tokens such as <|endoftext|> in the text (otherwise they are encoded as plain
  // text); non-special added tokens (e.g. GPT-NeoX's space runs) always match.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      bool parse_special = false) const = 0;
  // Ids without token text (e.g. the model's padded vocab) decode to "". Invalid UTF-8 produced
  // by byte tokens becomes U+FFFD. skip_special drops special added tokens.
  virtual std::string Decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;
  // The raw bytes of one token (may be a partial UTF-8 sequence); "" for unknown ids.
  virtual std::string TokenBytes(int32_t id) const = 0;

  // Whether `id` is a special added token (e.g. <|endoftext|>), dropped by skip_special.
  virtual bool IsSpecialToken(int32_t /*id*/) const { return false; }

  virtual int vocab_size() const = 0;        // ids 0 .. vocab_size()-1 have token text
  virtual int32_t eos_token_id() const = 0;  // <|endoftext|>; -1 when the vocab has none
  virtual std::string name() const = 0;      // e.g. the file path or "byte-fallback"
};

// The tokenizer for a model: `tokenizer_flag` (a tokenizer.json path) when non-empty, else
// <model_dir>/tokenizer.json when that file exists, else Tokenizer::ByteFallback(). Errors name
// the file that failed to load.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerForModel(const std::string& model_dir,
                                                                 const std::string& tokenizer_flag);

// Streaming detokenizer for one sequence: feed ids one at a time; each call returns the newly
// completed text (never a partial UTF-8 character). The concatenation of all returns plus
// Flush() equals Tokenizer::Decode(all ids). Not thread-safe.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  std::string Add(int32_t id);
  std::string Flush();  // whatever is held back, with invalid bytes as U+FFFD
  // Bytes held back as the start of a possibly incomplete UTF-8 character (at most 3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;  // bytes of an incomplete UTF-8 sequence
};

// Stop strings over streamed text: holds back any suffix that could start a stop string, so a
// stop string never leaks into the output. Not thread-safe.
class StopStringMatcher {
 public:
  StopStringMatcher(std::vector<std::string> stops, bool include_stop_in_output);
  // Feeds new text; returns the text that is safe to emit now. After a match, stopped() is true,
  // matched() names the stop string, and later calls return "". A stop string matches as soon as
  // it is complete; when several complete at the same point the one starting earliest wins.
  // Empty stop strings are ignored.
  std::string Add(std::string_view text);
  // At the end of generation (no match): the held-back text.
  std::string Flush();
  bool stopped() const { return stopped_; }
  const std::string& matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  bool include_stop_;
  std::string held_;
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace bms
