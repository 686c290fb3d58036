// libFuzzer target: chat templating. The input is a template JSON, a 0x00 byte, then messages
// separated by 0x01 (first byte of each: role selector). Loading a hostile template and applying
// it to any messages must give a string or an error, never a crash.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "server/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  size_t cut = in.find('\0');
  bms::ChatTemplate tmpl;
  std::string rest = in;
  if (cut != std::string::npos) {
    auto t = bms::ChatTemplate::FromJsonText(in.substr(0, cut));
    if (t.ok()) tmpl = *t;
    rest = in.substr(cut + 1);
  }
  static const char* kRoles[] = {"system", "user", "assistant", "tool"};
  std::vector<bms::ChatMessage> messages;
  size_t start = 0;
  while (start <= rest.size() && messages.size() < 64) {
    size_t end = rest.find('\x01', start);
    if (end == std::string::npos) end = rest.size();
    std::string part = rest.substr(start, end - start);
    bms::ChatMessage m;
    m.role = kRoles[part.empty() ? 1 : static_cast<unsigned char>(part[0]) % 4];
    m.content = part.empty() ? "" : part.substr(1);
    messages.push_back(std::move(m));
    start = end + 1;
  }
  auto out = tmpl.Apply(messages);
  (void)out;
  return 0;
}
