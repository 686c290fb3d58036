// IncrementalDecoder and StopStringMatcher: streaming output equals one-shot decoding, invalid
// byte sequences become U+FFFD as Rust's from_utf8_lossy does, and stop strings never leak.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tokenizer/test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace bms {
namespace {

using ::bms::testing::NeoX;
using ::bms::testing::ReadFileOrDie;
using ::bms::testing::SharedAsset;

const std::string kFffd = "\xEF\xBF\xBD";

// Streams ids one at a time; checks every chunk is valid UTF-8; returns the concatenation.
std::string Stream(const Tokenizer& tok, const std::vector<int32_t>& ids,
                   bool skip_special = false) {
  IncrementalDecoder dec(tok, skip_special);
  std::string out;
  for (int32_t id : ids) {
    const std::string chunk = dec.Add(id);
    EXPECT_EQ(utf8::FindInvalid(chunk), std::string_view::npos);
    EXPECT_LE(dec.pending_bytes(), 3u);
    out += chunk;
  }
  out += dec.Flush();
  EXPECT_EQ(dec.pending_bytes(), 0u);
  return out;
}

// The id of the single-byte token for `b` (derived by searching the vocab).
int32_t ByteId(const Tokenizer& tok, unsigned char b) {
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    if (tok.TokenBytes(id) == std::string(1, static_cast<char>(b))) return id;
  }
  return -1;
}

std::vector<int32_t> ByteIds(const Tokenizer& tok, const std::string& bytes) {
  std::vector<int32_t> ids;
  for (unsigned char b : bytes) ids.push_back(ByteId(tok, b));
  return ids;
}

TEST(IncrementalDecoder, EqualsOneShotOnEveryVector) {
  const Tokenizer& tok = NeoX();
  const auto j =
      nlohmann::json::parse(ReadFileOrDie(SharedAsset("gpt-neox-20b_tokenizer_test_vectors.json")));
  int cases = 0;
  for (const auto& c : j["cases"]) {
    const std::vector<int32_t> ids = c["ids"];
    EXPECT_EQ(Stream(tok, ids), tok.Decode(ids)) << c["text"];
    EXPECT_EQ(Stream(tok, ids, true), tok.Decode(ids, true)) << c["text"];
    ++cases;
  }
  EXPECT_EQ(cases, 168);
}

TEST(IncrementalDecoder, EmojiCjkCombiningMarks) {
  const Tokenizer& tok = NeoX();
  for (const std::string text :
       {"🤖🤖 🚀 😶‍🌫️ 👨‍👩‍👧‍👦", "生活的真谛是 我想在apple工作",
        "e\xCC\x81 a\xCC\x8A\xCC\x81 ẹ̄ ᄀ\xE1\x85\xA1", "กาน់តែ ปี ด", "mixed 😊 text 中文 end"}) {
    auto ids = tok.Encode(text);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(Stream(tok, *ids), tok.Decode(*ids)) << text;
  }
}

TEST(IncrementalDecoder, HoldsOnlyIncompleteCharacters) {
  const Tokenizer& tok = NeoX();
  IncrementalDecoder dec(tok);
  // U+1F60A is F0 9F 98 8A: nothing comes out until the last byte.
  const std::vector<int32_t> smile = ByteIds(tok, "\xF0\x9F\x98\x8A");
  EXPECT_EQ(dec.Add(smile[0]), "");
  EXPECT_EQ(dec.Add(smile[1]), "");
  EXPECT_EQ(dec.Add(smile[2]), "");
  EXPECT_EQ(dec.pending_bytes(), 3u);
  EXPECT_EQ(dec.Add(smile[3]), "\xF0\x9F\x98\x8A");
  EXPECT_EQ(dec.pending_bytes(), 0u);
}

TEST(IncrementalDecoder, ImpossibleBytesAreReleasedAtOnce) {
  const Tokenizer& tok = NeoX();
  IncrementalDecoder dec(tok);
  const int32_t a = ByteId(tok, 'a');
  // F0 9F then 'a': the held prefix can no longer complete, so it is one U+FFFD right away.
  dec.Add(ByteId(tok, 0xF0));
  dec.Add(ByteId(tok, 0x9F));
  EXPECT_EQ(dec.Add(a), kFffd + "a");
  // A lone continuation byte can never start a character: released immediately.
  EXPECT_EQ(dec.Add(ByteId(tok, 0x80)), kFffd);
  // E0 80: E0 needs A0..BF next, so E0 is one maximal subpart and 80 another.
  EXPECT_EQ(dec.Add(ByteId(tok, 0xE0)), "");
  EXPECT_EQ(dec.Add(ByteId(tok, 0x80)), kFffd + kFffd);
  EXPECT_EQ(dec.pending_bytes(), 0u);
}

TEST(IncrementalDecoder, InvalidSequencesMatchLossyDecoding) {
  const Tokenizer& tok = NeoX();
  // Expected replacements follow the Unicode "maximal subpart" practice (from_utf8_lossy).
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\xF0\x9F\x98", kFffd},                              // truncated at the end
      {"a\xF0\x9F\x98z", "a" + kFffd + "z"},                // truncated in the middle
      {"\xED\xA0\x80", kFffd + kFffd + kFffd},              // surrogate: ED then A0, 80
      {"\xF4\x90\x80\x80", kFffd + kFffd + kFffd + kFffd},  // above U+10FFFF
      {"\xE2\x82\xAC\x80\xE2\x82", "\xE2\x82\xAC" + kFffd + kFffd},
      {"\xC3\xA9\xC3", "\xC3\xA9" + kFffd},
      {"\xF5\xFF", kFffd + kFffd},
  };
  for (const auto& [bytes, want] : cases) {
    std::vector<int32_t> ids;
    bool all_bytes_have_tokens = true;
    for (unsigned char b : bytes) {
      const int32_t id = ByteId(tok, b);
      all_bytes_have_tokens &= id >= 0;
      ids.push_back(id);
    }
    if (!all_bytes_have_tokens) {
      // F5/FF have no token in this vocab; check the lossy decoder through the byte fallback.
      ids.assign(bytes.begin(), bytes.end());
      for (int32_t& id : ids) id &= 0xFF;
      auto fb = Tokenizer::ByteFallback();
      EXPECT_EQ(fb->Decode(ids), want);
      EXPECT_EQ(Stream(*fb, ids), want);
      continue;
    }
    EXPECT_EQ(tok.Decode(ids), want);
    EXPECT_EQ(Stream(tok, ids), want);
  }
}

TEST(IncrementalDecoder, SkipsSpecialTokensWhenAsked) {
  const Tokenizer& tok = NeoX();
  auto ids = tok.Encode("a<|endoftext|>b", /*parse_special=*/true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(Stream(tok, *ids, /*skip_special=*/true), "ab");
  EXPECT_EQ(Stream(tok, *ids, /*skip_special=*/false), "a<|endoftext|>b");
}

// Feeds `chunks` through a matcher; returns the emitted text (with Flush when not stopped).
std::string Feed(StopStringMatcher* m, const std::vector<std::string>& chunks,
                 const std::vector<std::string>& stops) {
  std::string out;
  for (const std::string& c : chunks) {
    out += m->Add(c);
    if (!m->stopped()) {
      for (const std::string& s : stops) EXPECT_EQ(out.find(s), std::string::npos) << s;
    }
  }
  if (!m->stopped()) out += m->Flush();
  return out;
}

TEST(StopStringMatcher, SpansChunkBoundaries) {
  StopStringMatcher m({"STOP here"}, false);
  EXPECT_EQ(m.Add("hello ST"), "hello ");
  EXPECT_EQ(m.Add("OP he"), "");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.Add("re and more"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.matched(), "STOP here");
  EXPECT_EQ(m.Add("later"), "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopStringMatcher, AtTheVeryStart) {
  StopStringMatcher m({"\n\n"}, false);
  EXPECT_EQ(m.Add("\n"), "");
  EXPECT_EQ(m.Add("\nrest"), "");
  EXPECT_TRUE(m.stopped());
  StopStringMatcher whole({"abc"}, false);
  EXPECT_EQ(whole.Add("abc"), "");
  EXPECT_TRUE(whole.stopped());
}

TEST(StopStringMatcher, ReleasesAFalseStart) {
  StopStringMatcher m({"abc"}, false);
  EXPECT_EQ(m.Add("xab"), "x");
  EXPECT_EQ(m.Add("d"), "abd");
  EXPECT_EQ(m.Add("ab"), "");
  EXPECT_EQ(m.Flush(), "ab");
  EXPECT_FALSE(m.stopped());
}

TEST(StopStringMatcher, OverlappingStopsEarliestWins) {
  {
    // Both complete with the same character: the one starting earlier wins.
    StopStringMatcher m({"b", "ab"}, false);
    EXPECT_EQ(m.Add("xa"), "x");
    EXPECT_EQ(m.Add("b"), "");
    EXPECT_EQ(m.matched(), "ab");
  }
  {
    // "bc" completes before "abcd" could: it stops generation first.
    StopStringMatcher m({"abcd", "bc"}, false);
    EXPECT_EQ(Feed(&m, {"1a", "b", "c", "d"}, {}), "1a");
    EXPECT_EQ(m.matched(), "bc");
  }
  {
    // Self-overlapping stop string: "aab" inside "aaab".
    StopStringMatcher m({"aab"}, false);
    EXPECT_EQ(Feed(&m, {"a", "a", "a", "b"}, {}), "a");
    EXPECT_TRUE(m.stopped());
  }
  {
    // Two occurrences in one chunk: the first one wins.
    StopStringMatcher m({"END", "STOP"}, false);
    EXPECT_EQ(m.Add("one STOP two END"), "one ");
    EXPECT_EQ(m.matched(), "STOP");
  }
}

TEST(StopStringMatcher, IncludeStopInOutput) {
  StopStringMatcher m({"</s>"}, true);
  EXPECT_EQ(Feed(&m, {"answer </", "s> tail"}, {}), "answer </s>");
  EXPECT_EQ(m.matched(), "</s>");
}

TEST(StopStringMatcher, EveryChunkingGivesTheSameResult) {
  const std::string text = "The end is near. ENDING now; the END.";
  const std::vector<std::string> stops = {"END.", "ING n", "near!"};
  StopStringMatcher ref(stops, false);
  const std::string want = ref.Add(text);
  EXPECT_EQ(want, "The end is near. END");
  for (size_t a = 1; a < text.size(); ++a) {
    for (size_t b = a; b < text.size(); ++b) {
      StopStringMatcher m(stops, false);
      const std::string got =
          Feed(&m, {text.substr(0, a), text.substr(a, b - a), text.substr(b)}, stops);
      ASSERT_EQ(got, want) << a << " " << b;
      ASSERT_EQ(m.matched(), "ING n");
    }
  }
}

TEST(StopStringMatcher, NoStopsPassesThrough) {
  StopStringMatcher m({"", ""}, false);
  EXPECT_EQ(m.Add("abc"), "abc");
  EXPECT_EQ(m.Flush(), "");
  EXPECT_FALSE(m.stopped());
}

}  // namespace
}  // namespace bms
