// Added-token matching with a byte trie (see added_vocab.h).
#include "tokenizer/added_vocab.h"

#include "tokenizer/unicode.h"
#include "tokenizer/utf8.h"

namespace bms {
namespace {

// Start of the character that ends just before byte offset `i` (> 0) of valid UTF-8.
size_t PrevCharStart(std::string_view s, size_t i) {
  do {
    --i;
  } while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80);
  return i;
}

char32_t CharAt(std::string_view s, size_t i) { return utf8::DecodeValid(s, &i); }

bool IsWordChar(char32_t c) {
  if (c == '_') return true;
  const unicode::CharClass cls = unicode::Classify(c);
  return cls == unicode::CharClass::kLetter || cls == unicode::CharClass::kNumber;
}

}  // namespace

void AddedVocab::Add(const AddedToken& token) {
  if (token.content.empty()) return;
  const int32_t index = static_cast<int32_t>(tokens_.size());
  tokens_.push_back(token);
  const auto* p = reinterpret_cast<const unsigned char*>(token.content.data());
  if (first_[p[0]] < 0) {
    first_[p[0]] = static_cast<int32_t>(nodes_.size());
    nodes_.emplace_back();
  }
  int32_t node = first_[p[0]];
  for (size_t k = 1; k < token.content.size(); ++k) {
    int32_t next = -1;
    for (const auto& [byte, child] : nodes_[node].children) {
      if (byte == p[k]) next = child;
    }
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_[node].children.emplace_back(p[k], next);
      nodes_.emplace_back();
    }
    node = next;
  }
  // A later duplicate of the same content replaces the earlier one.
  nodes_[node].token = index;
}

int32_t AddedVocab::LongestAt(std::string_view text, size_t i, size_t* len) const {
  int32_t node = first_[static_cast<unsigned char>(text[i])];
  int32_t best = -1;
  size_t k = i + 1;
  while (node >= 0) {
    if (nodes_[node].token >= 0) {
      best = nodes_[node].token;
      *len = k - i;
    }
    if (k >= text.size()) break;
    const auto b = static_cast<unsigned char>(text[k]);
    int32_t next = -1;
    for (const auto& [byte, child] : nodes_[node].children) {
      if (byte == b) {
        next = child;
        break;
      }
    }
    node = next;
    ++k;
  }
  return best;
}

bool AddedVocab::FindNext(std::string_view text, size_t from, size_t floor, bool parse_special,
                          Match* match) const {
  if (tokens_.empty()) return false;
  size_t i = from;
  while (i < text.size()) {
    if (first_[static_cast<unsigned char>(text[i])] < 0) {
      ++i;
      continue;
    }
    size_t len = 0;
    const int32_t index = LongestAt(text, i, &len);
    if (index < 0) {
      ++i;
      continue;
    }
    const AddedToken& t = tokens_[index];
    size_t start = i;
    size_t end = i + len;
    if (t.special && !parse_special) {
      i = end;
      continue;
    }
    if (t.single_word) {
      const bool word_before = start > 0 && IsWordChar(CharAt(text, PrevCharStart(text, start)));
      const bool word_after = end < text.size() && IsWordChar(CharAt(text, end));
      if (word_before || word_after) {
        i = end;
        continue;
      }
    }
    if (t.lstrip) {
      while (start > floor) {
        const size_t prev = PrevCharStart(text, start);
        if (prev < floor || !unicode::IsWhiteSpace(CharAt(text, prev))) break;
        start = prev;
      }
    }
    if (t.rstrip) {
      while (end < text.size()) {
        size_t next = end;
        const char32_t c = utf8::DecodeValid(text, &next);
        if (!unicode::IsWhiteSpace(c)) break;
        end = next;
      }
    }
    *match = Match{start, end, t.id};
    return true;
  }
  return false;
}

}  // namespace bms
