// Server-sent events for the load generator: an incremental parser that turns the decoded
// body of a `text/event-stream` response into events (their joined `data:` lines), and the
// reading of one OpenAI streaming completion chunk (text, token count, usage, error).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace bms::loadgen {

// Feed body bytes in any split; each complete event (ended by a blank line) with at least one
// `data` field is passed to the callback as its data lines joined by '\n'. Comment lines
// (':') and other fields are ignored; "\r\n", "\n" and "\r" line ends are accepted.
// Not thread-safe.
class SseParser {
 public:
  using OnEvent = std::function<void(const std::string& data)>;
  explicit SseParser(OnEvent on_event) : on_event_(std::move(on_event)) {}
  void Feed(std::string_view bytes);

 private:
  void Line(std::string_view line);
  OnEvent on_event_;
  std::string line_;
  std::string data_;
  bool has_data_ = false;
  bool skip_lf_ = false;  // the previous byte was '\r'
};

// What one `data:` payload of an OpenAI completion stream says.
struct StreamChunk {
  bool done = false;     // "[DONE]"
  bool content = false;  // some choice carries text or token logprobs
  int64_t tokens = -1;   // tokens in this chunk when the chunk says (logprobs), else -1
  std::string text;      // the choices' text, concatenated
  int64_t usage_completion_tokens = -1;  // from a "usage" object, -1 when absent
  int64_t usage_prompt_tokens = -1;
  std::string error;  // non-empty: an error object, or a payload that is not JSON
};

StreamChunk ParseStreamChunk(const std::string& data);

}  // namespace bms::loadgen
