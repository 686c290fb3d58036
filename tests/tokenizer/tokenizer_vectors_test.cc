// GPT-NeoX-20B tokenizer against the reference vectors: exact ids for every case of
// gpt-neox-20b_tokenizer_test_vectors.json and gpt-neox.txt, decode round trips, edge inputs.
#include <atomic>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tokenizer/test_util.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/unicode.h"

namespace bms {
namespace {

using ::bms::testing::NeoX;
using ::bms::testing::ReadFileOrDie;
using ::bms::testing::SharedAsset;

struct Case {
  std::string text;
  std::vector<int32_t> ids;
  std::vector<std::string> tokens;  // byte-level token strings, as HF prints them
  bool roundtrip_equal = true;
};

const std::vector<Case>& VectorCases() {
  static const std::vector<Case> cases = [] {
    std::vector<Case> out;
    const auto j = nlohmann::json::parse(
        ReadFileOrDie(SharedAsset("gpt-neox-20b_tokenizer_test_vectors.json")));
    for (const auto& c : j["cases"]) {
      out.push_back(Case{c["text"], c["ids"], c["tokens"], c["decode_roundtrip_equal"]});
    }
    return out;
  }();
  return cases;
}

bool HasSpecialText(const std::string& s) {
  return s.find("<|endoftext|>") != std::string::npos || s.find("<|padding|>") != std::string::npos;
}

TEST(TokenizerVectors, FileHasAllCases) { EXPECT_EQ(VectorCases().size(), 168u); }

TEST(TokenizerVectors, EncodeMatchesReferenceIds) {
  const Tokenizer& tok = NeoX();
  for (const Case& c : VectorCases()) {
    // The reference (HF encode) matches special tokens in the text.
    auto ids = tok.Encode(c.text, /*parse_special=*/true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c.ids) << "text: " << c.text;
    if (!HasSpecialText(c.text)) {
      auto plain = tok.Encode(c.text, /*parse_special=*/false);
      ASSERT_TRUE(plain.ok());
      EXPECT_EQ(*plain, c.ids) << "text: " << c.text;
    }
  }
}

TEST(TokenizerVectors, TokenBytesMatchReferenceTokens) {
  const Tokenizer& tok = NeoX();
  for (const Case& c : VectorCases()) {
    ASSERT_EQ(c.ids.size(), c.tokens.size());
    for (size_t k = 0; k < c.ids.size(); ++k) {
      EXPECT_EQ(tok.TokenBytes(c.ids[k]), ByteLevelTokenToBytes(c.tokens[k]))
          << "id " << c.ids[k] << " in " << c.text;
    }
  }
}

TEST(TokenizerVectors, DecodeOfEncodeIsNfcText) {
  const Tokenizer& tok = NeoX();
  int normalized_cases = 0;
  for (const Case& c : VectorCases()) {
    auto ids = tok.Encode(c.text, /*parse_special=*/true);
    ASSERT_TRUE(ids.ok());
    std::string nfc;
    ASSERT_TRUE(unicode::ToNfc(c.text, &nfc).ok());
    EXPECT_EQ(tok.Decode(*ids), nfc) << "text: " << c.text;
    EXPECT_EQ(tok.Decode(*ids) == c.text, c.roundtrip_equal) << "text: " << c.text;
    if (nfc != c.text) ++normalized_cases;
  }
  EXPECT_EQ(normalized_cases, 1);  // the e + U+0301 case
}

TEST(TokenizerVectors, GgmlPromptFile) {
  const Tokenizer& tok = NeoX();
  std::ifstream in(SharedAsset("gpt-neox.txt"));
  ASSERT_TRUE(in.good());
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    const size_t sep = line.rfind(" => ");
    ASSERT_NE(sep, std::string::npos) << line;
    std::vector<int32_t> want;
    std::stringstream ids_text(line.substr(sep + 4));
    for (std::string id; std::getline(ids_text, id, ',');) want.push_back(std::stoi(id));
    const std::string text = line.substr(0, sep);
    auto ids = tok.Encode(text);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*ids, want) << "text: " << text;
    EXPECT_EQ(tok.Decode(*ids), text);
    ++lines;
  }
  EXPECT_EQ(lines, 100);
}

TEST(TokenizerVectors, SpecialTokensAreTextUnlessParsed) {
  const Tokenizer& tok = NeoX();
  const std::string text = "<|endoftext|>";
  auto plain = tok.Encode(text, /*parse_special=*/false);
  ASSERT_TRUE(plain.ok());
  EXPECT_GT(plain->size(), 1u);
  EXPECT_THAT(*plain, ::testing::Not(::testing::Contains(tok.eos_token_id())));
  EXPECT_EQ(tok.Decode(*plain), text);
  auto parsed = tok.Encode(text, /*parse_special=*/true);
  ASSERT_TRUE(parsed.ok());
  EXPECT_THAT(*parsed, ::testing::ElementsAre(tok.eos_token_id()));
  EXPECT_TRUE(tok.IsSpecialToken(tok.eos_token_id()));
  EXPECT_EQ(tok.Decode(*parsed, /*skip_special=*/true), "");
  EXPECT_EQ(tok.Decode(*parsed), text);
}

TEST(TokenizerVectors, VocabFacts) {
  const Tokenizer& tok = NeoX();
  EXPECT_EQ(tok.vocab_size(), 50277);  // SOURCES.md: ids 0..50276
  EXPECT_EQ(tok.eos_token_id(), 0);
  EXPECT_EQ(tok.TokenBytes(50254), std::string(24, ' '));
  EXPECT_EQ(tok.TokenBytes(50277), "");
  EXPECT_EQ(tok.TokenBytes(-1), "");
  EXPECT_EQ(tok.Decode({50300, -5, 70000}), "");  // padded model vocab ids have no text
}

TEST(TokenizerEdges, InvalidUtf8IsInvalidArgument) {
  const Tokenizer& tok = NeoX();
  for (const std::string bad : {"\xff", "abc\xC3", "\xC0\xAF", "a\xED\xA0\x80z", "\x80"}) {
    auto ids = tok.Encode(bad);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(TokenizerEdges, EmptyTextIsNoIds) {
  auto ids = NeoX().Encode("");
  ASSERT_TRUE(ids.ok());
  EXPECT_TRUE(ids->empty());
}

long PeakRssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

TEST(TokenizerEdges, TenMegabytesInBoundedMemory) {
  const Tokenizer& tok = NeoX();
  const std::string block = ReadFileOrDie(SharedAsset("tinyshakespeare/input.txt"));
  ASSERT_GT(block.size(), 1000000u);
  ASSERT_EQ(block.back(), '\n');  // blocks join at "\n" + a letter, which splits the same way
  auto block_ids = tok.Encode(block);
  ASSERT_TRUE(block_ids.ok());
  std::string big;
  const int repeats = 10;
  for (int r = 0; r < repeats; ++r) big += block;
  ASSERT_GE(big.size(), 10u * 1000 * 1000);
  const long rss_before = PeakRssKb();
  auto ids = tok.Encode(big);
  ASSERT_TRUE(ids.ok());
  const long rss_growth_mb = (PeakRssKb() - rss_before) / 1024;
  ASSERT_EQ(ids->size(), block_ids->size() * repeats);
  for (int r = 0; r < repeats; ++r) {
    ASSERT_TRUE(std::equal(block_ids->begin(), block_ids->end(),
                           ids->begin() + r * static_cast<long>(block_ids->size())));
  }
  // The ids themselves take ~12 MB; the word cache is capped. Allow generous slack.
  EXPECT_LT(rss_growth_mb, 128);
}

TEST(TokenizerEdges, LongWordsAreNotQuadratic) {
  const Tokenizer& tok = NeoX();
  // One 200 KB pre-token: the heap merge path. Decoding must reproduce it.
  std::string word(200000, 'a');
  for (size_t k = 0; k < word.size(); k += 7) word[k] = static_cast<char>('a' + k % 26);
  auto ids = tok.Encode(word);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(tok.Decode(*ids), word);
  EXPECT_LT(ids->size(), word.size() / 2);
}

// Random text from a pool of tricky pieces: decode(encode(x)) == NFC(x), with and without
// special-token parsing.
TEST(TokenizerEdges, RandomTextRoundTrips) {
  const Tokenizer& tok = NeoX();
  const std::vector<std::string> pool = {
      "a", "Z", "word", " ", "  ", "    ", "\t", "\n", "\r\n", "\xC2\xA0", "\xE3\x80\x80", "'s",
      "'ll", "'", "''", "3", "42", "\xC2\xBD", "!", "...", "<|endoftext|>", "<|padding|>", "<|",
      "e\xCC\x81", "\xCC\x81", "\xE1\x84\x80\xE1\x85\xA1", "\xE7\x94\x9F\xE6\xB4\xBB",
      "\xF0\x9F\x98\x8A", "\xF0\x9F\x98\xB6\xE2\x80\x8D\xF0\x9F\x8C\xAB\xEF\xB8\x8F",
      "\xE0\xB8\x9B\xE0\xB8\xB5", "\xD0\xBD\xD0\xB5", "_", "\x00", "\x7F", "\xC2\x85"};
  uint32_t state = 7;
  auto rnd = [&] { return state = state * 1664525u + 1013904223u; };
  for (int n = 0; n < 3000; ++n) {
    std::string text;
    const int pieces = static_cast<int>(rnd() % 12);
    for (int k = 0; k < pieces; ++k) text += pool[(rnd() >> 8) % pool.size()];
    std::string nfc;
    ASSERT_TRUE(unicode::ToNfc(text, &nfc).ok());
    for (bool special : {false, true}) {
      auto ids = tok.Encode(text, special);
      ASSERT_TRUE(ids.ok()) << text;
      ASSERT_EQ(tok.Decode(*ids), nfc) << text;
    }
  }
}

TEST(TokenizerThreads, ConcurrentEncodesAgree) {
  const Tokenizer& tok = NeoX();
  const std::vector<Case>& cases = VectorCases();
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (size_t k = t; k < cases.size(); k += 2) {
          auto ids = tok.Encode(cases[k].text, /*parse_special=*/true);
          if (!ids.ok() || *ids != cases[k].ids) ++mismatches;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace bms
