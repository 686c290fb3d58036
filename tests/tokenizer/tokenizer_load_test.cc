// Loading tokenizers: HF JSON variants (pair-form merges, added-token flags), unsupported types
// as clear errors, LoadTokenizerForModel's choice of file, and the byte fallback.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tokenizer/test_util.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/tokenizer.h"

namespace bms {
namespace {

using ::bms::testing::NeoX;
using ::bms::testing::ReadFileOrDie;
using ::bms::testing::SharedAsset;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const nlohmann::json& NeoXJson() {
  static const nlohmann::json j =
      nlohmann::json::parse(ReadFileOrDie(SharedAsset("20B_tokenizer.json")));
  return j;
}

std::unique_ptr<Tokenizer> LoadOrDie(const nlohmann::json& j) {
  auto t = Tokenizer::FromJsonText(j.dump());
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : Tokenizer::ByteFallback();
}

std::vector<int32_t> Ids(const Tokenizer& tok, const std::string& text, bool special = false) {
  auto ids = tok.Encode(text, special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

std::vector<int32_t> Concat(std::vector<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(TokenizerLoad, PairFormMergesEncodeTheSame) {
  nlohmann::json j = NeoXJson();
  nlohmann::json pairs = nlohmann::json::array();
  for (const auto& m : j["model"]["merges"]) {
    const std::string s = m;
    const size_t sp = s.find(' ');
    pairs.push_back({s.substr(0, sp), s.substr(sp + 1)});
  }
  j["model"]["merges"] = pairs;
  auto tok = LoadOrDie(j);
  for (const std::string text :
       {"Hello World!", "x    y", "生活的真谛是", "can't won't 1234567890"}) {
    EXPECT_EQ(Ids(*tok, text), Ids(NeoX(), text)) << text;
  }
}

TEST(TokenizerLoad, AddedTokenFlags) {
  nlohmann::json j = NeoXJson();
  const int32_t mask = 50277, word = 50278, rmask = 50279;
  j["added_tokens"].push_back({{"id", mask},
                               {"content", "<mask>"},
                               {"special", true},
                               {"single_word", false},
                               {"lstrip", true},
                               {"rstrip", false},
                               {"normalized", false}});
  j["added_tokens"].push_back({{"id", word},
                               {"content", "zq"},
                               {"special", false},
                               {"single_word", true},
                               {"lstrip", false},
                               {"rstrip", false},
                               {"normalized", true}});
  j["added_tokens"].push_back({{"id", rmask},
                               {"content", "<r>"},
                               {"special", true},
                               {"single_word", false},
                               {"lstrip", false},
                               {"rstrip", true},
                               {"normalized", false}});
  auto tok = LoadOrDie(j);
  EXPECT_EQ(tok->vocab_size(), 50280);
  // lstrip swallows the whitespace before the token.
  EXPECT_EQ(Ids(*tok, "hello  <mask>", true), Concat({Ids(NeoX(), "hello"), {mask}}));
  // rstrip swallows the whitespace after it.
  EXPECT_EQ(Ids(*tok, "<r>  world", true), Concat({{rmask}, Ids(NeoX(), "world")}));
  // Specials are text unless parsed.
  EXPECT_EQ(Ids(*tok, "hello  <mask>", false), Ids(NeoX(), "hello  <mask>"));
  // single_word: only where no word character touches it.
  EXPECT_EQ(Ids(*tok, "zq is", false), Concat({{word}, Ids(NeoX(), " is")}));
  EXPECT_EQ(Ids(*tok, "xzq is", false), Ids(NeoX(), "xzq is"));
  EXPECT_EQ(Ids(*tok, "a zq_", false), Ids(NeoX(), "a zq_"));
  EXPECT_TRUE(tok->IsSpecialToken(mask));
  EXPECT_FALSE(tok->IsSpecialToken(word));
  EXPECT_EQ(tok->Decode({mask, word}), "<mask>zq");
  EXPECT_EQ(tok->Decode({mask, word}, /*skip_special=*/true), "zq");
}

TEST(TokenizerLoad, UnsupportedTypesAreClearErrors) {
  struct Edit {
    std::string pointer;
    nlohmann::json value;
    std::string field;
  };
  const std::vector<Edit> edits = {
      {"/model/type", "WordPiece", "model.type"},
      {"/model/type", "Unigram", "model.type"},
      {"/pre_tokenizer", {{"type", "Metaspace"}}, "pre_tokenizer"},
      {"/pre_tokenizer", nullptr, "pre_tokenizer"},
      {"/normalizer", {{"type", "NFKC"}}, "normalizer"},
      {"/decoder", {{"type", "WordPiece"}}, "decoder"},
      {"/model/continuing_subword_prefix", "##", "model.continuing_subword_prefix"},
      {"/model/byte_fallback", true, "model.byte_fallback"},
      {"/model/merges/5", 17, "model.merges[5]"},
      {"/model/merges/7", "a b c", "model.merges[7]"},
      {"/model/vocab", nlohmann::json::array(), "model.vocab"},
      {"/added_tokens/0/id", "zero", "added_tokens[0]"},
      {"/added_tokens/1/id", 2000000000, "added_tokens[1]"},
      {"/model/vocab/hello", 2000000000, "model.vocab[\"hello\"]"},
  };
  for (const Edit& e : edits) {
    nlohmann::json j = NeoXJson();
    j[nlohmann::json::json_pointer(e.pointer)] = e.value;
    auto t = Tokenizer::FromJsonText(j.dump());
    ASSERT_FALSE(t.ok()) << e.pointer;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << e.pointer;
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(e.field));
  }
  EXPECT_EQ(Tokenizer::FromJsonText("{not json").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Tokenizer::FromJsonText("[1,2]").status().code(), absl::StatusCode::kInvalidArgument);
  auto missing = Tokenizer::FromFile("/nonexistent/tokenizer.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/nonexistent/tokenizer.json"));
}

TEST(TokenizerLoad, LoadTokenizerForModelPicksFlagThenModelDirThenFallback) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("bms_tok_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  // No tokenizer.json: the byte fallback.
  auto t = LoadTokenizerForModel(dir.string(), "");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->name(), "byte-fallback");
  // tokenizer.json in the model folder (a link to the shared asset, not a copy).
  std::filesystem::create_symlink(SharedAsset("20B_tokenizer.json"), dir / "tokenizer.json");
  t = LoadTokenizerForModel(dir.string(), "");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->vocab_size(), 50277);
  // The flag wins, and a bad flag is an error naming the file.
  t = LoadTokenizerForModel(dir.string(), (dir / "missing.json").string());
  EXPECT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("missing.json"));
  std::filesystem::remove_all(dir);
}

TEST(ByteFallback, BytesAndEndOfText) {
  auto tok = Tokenizer::ByteFallback();
  EXPECT_EQ(tok->vocab_size(), 257);
  EXPECT_EQ(tok->eos_token_id(), 256);
  EXPECT_THAT(Ids(*tok, "hé"), ElementsAre('h', 0xC3, 0xA9));
  EXPECT_THAT(Ids(*tok, "a<|endoftext|>", true), ElementsAre('a', 256));
  EXPECT_EQ(Ids(*tok, "a<|endoftext|>", false).size(), 14u);
  EXPECT_EQ(tok->Decode({'h', 0xC3, 0xA9, 256}), "hé<|endoftext|>");
  EXPECT_EQ(tok->Decode({'h', 256}, true), "h");
  EXPECT_EQ(tok->Encode("\xC3").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Ids(*tok, "").empty());
}

// A toy byte-level model with merges learned greedily from a random corpus; the array merge
// path and the heap merge path must agree on every word.
TEST(BpeModel, SmallAndHeapPathsAgree) {
  uint32_t state = 12345;
  auto rnd = [&] { return state = state * 1664525u + 1013904223u; };
  absl::flat_hash_map<std::string, int32_t> vocab;
  for (int b = 0; b < 256; ++b) vocab[std::string(1, static_cast<char>(b))] = b;
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<std::string> tokens = {"a", "b", "c", "d"};
  for (int k = 0; k < 300; ++k) {
    const std::string& x = tokens[rnd() % tokens.size()];
    const std::string& y = tokens[rnd() % tokens.size()];
    if (vocab.contains(x + y) || x.size() + y.size() > 8) continue;
    merges.emplace_back(x, y);
    vocab[x + y] = static_cast<int32_t>(vocab.size());
    tokens.push_back(x + y);
  }
  auto model = BpeModel::Create(vocab, merges, false);
  ASSERT_TRUE(model.ok()) << model.status();
  for (int w = 0; w < 2000; ++w) {
    std::string word(1 + rnd() % 48, 'a');
    for (char& c : word) c = static_cast<char>('a' + rnd() % 4);
    std::vector<int32_t> small, heap;
    model->EncodeWord(word, &small);
    model->EncodeWordWithHeap(word, &heap);
    ASSERT_EQ(small, heap) << word;
    std::string back;
    for (int32_t id : small) back += model->id_to_bytes()[id];
    ASSERT_EQ(back, word);
  }
}

}  // namespace
}  // namespace bms
