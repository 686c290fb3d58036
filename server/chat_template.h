// ChatTemplate: turns chat messages into one prompt string. No template engine: a template is a
// small JSON object giving, per role, a pattern in which "{content}" is replaced by the
// message's text, plus the text appended after the last message to cue the assistant's reply:
//
//   {"system":    "{content}\n\n",
//    "user":      "User: {content}\n",
//    "assistant": "Assistant: {content}\n",
//    "generation_prompt": "Assistant:",
//    "prefix": ""}
//
// That is the default (DefaultChatTemplate). Every role pattern must contain "{content}" exactly
// once; "prefix" (optional) starts the prompt. `serve --chat-template FILE` loads such a file.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace bms {

struct ChatMessage {
  std::string role;     // "system", "user" or "assistant"
  std::string content;  // the message text (text parts already joined)
};

struct ChatTemplate {
  std::string prefix;
  std::string system = "{content}\n\n";
  std::string user = "User: {content}\n";
  std::string assistant = "Assistant: {content}\n";
  std::string generation_prompt = "Assistant:";

  // The prompt text for `messages` (roles already validated by the caller; an unknown role is
  // InvalidArgument naming it).
  absl::StatusOr<std::string> Apply(const std::vector<ChatMessage>& messages) const;

  // Parses the JSON format above. InvalidArgument naming the key on any problem.
  static absl::StatusOr<ChatTemplate> FromJsonText(const std::string& text);
  static absl::StatusOr<ChatTemplate> FromFile(const std::string& path);
};

}  // namespace bms
