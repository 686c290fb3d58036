// Unit tests of the OpenAI request parsing (no server): field validation names the field,
// prompt shapes, chat templates, and the response JSON helpers.
#include "server/openai_request.h"

#include <gtest/gtest.h>

#include "server/chat_template.h"
#include "server/openai_response.h"

namespace bms {
namespace {

using nlohmann::json;

class OpenAiRequestTest : public ::testing::Test {
 protected:
  OpenAiRequestTest() : tokenizer_(Tokenizer::ByteFallback()) {
    ctx_.tokenizer = tokenizer_.get();
    ctx_.served_model_name = "m";
    ctx_.vocab_size = 300;
    ctx_.max_sequence_length = 100;
    ctx_.limits.max_prompt_tokens = 10;
    ctx_.limits.max_n = 4;
    ctx_.limits.max_tokens_limit = 1000;
  }
  std::optional<ApiError> Completion(const std::string& body) {
    spec_ = GenerationSpec();
    return ParseCompletionRequest(json::parse(body), ctx_, &spec_);
  }
  std::optional<ApiError> Chat(const std::string& body) {
    spec_ = GenerationSpec();
    return ParseChatRequest(json::parse(body), ctx_, &spec_);
  }
  std::unique_ptr<Tokenizer> tokenizer_;
  ServerContext ctx_;
  GenerationSpec spec_;
};

TEST_F(OpenAiRequestTest, PromptShapes) {
  ASSERT_FALSE(Completion(R"({"prompt": "ab"})"));
  ASSERT_EQ(spec_.prompts.size(), 1u);
  EXPECT_EQ(spec_.prompts[0], (std::vector<int32_t>{'a', 'b'}));  // byte tokens: id = byte
  EXPECT_EQ(spec_.sampling.max_tokens, 16);
  ASSERT_FALSE(Completion(R"({"prompt": ["a", "bc"], "n": 2})"));
  EXPECT_EQ(spec_.prompts.size(), 2u);
  EXPECT_EQ(spec_.n, 2);
  ASSERT_FALSE(Completion(R"({"prompt": [1, 2, 3]})"));
  EXPECT_EQ(spec_.prompts[0], (std::vector<int32_t>{1, 2, 3}));
  ASSERT_FALSE(Completion(R"({"prompt": [[1], [2, 299]]})"));
  EXPECT_EQ(spec_.prompts[1], (std::vector<int32_t>{2, 299}));
  ASSERT_FALSE(Completion(R"({"prompt": ""})"));
  EXPECT_EQ(spec_.prompts[0], (std::vector<int32_t>{tokenizer_->eos_token_id()}));
}

TEST_F(OpenAiRequestTest, ErrorsNameTheField) {
  struct Case {
    const char* body;
    const char* param;
  } cases[] = {
      {R"({"prompt": [300]})", "prompt"},
      {R"({"prompt": [[]]})", "prompt"},
      {R"({"prompt": "01234567890"})", "prompt"},  // 11 tokens > 10
      {R"({"prompt": "a", "max_tokens": -1})", "max_tokens"},
      {R"({"prompt": "a", "max_tokens": 1001})", "max_tokens"},
      {R"({"prompt": "a", "max_tokens": 1.5})", "max_tokens"},
      {R"({"prompt": "a", "max_tokens": 18446744073709551615})", "max_tokens"},
      {R"({"prompt": "a", "temperature": "hot"})", "temperature"},
      {R"({"prompt": "a", "n": 5})", "n"},
      {R"({"prompt": "a", "seed": "x"})", "seed"},
      {R"({"prompt": "a", "min_tokens": 20})", "min_tokens"},
      {R"({"prompt": "a", "stop_token_ids": [1000]})", "stop_token_ids"},
      {R"({"prompt": "a", "logit_bias": {"5": 101}})", "logit_bias"},
      {R"({"prompt": "a", "stream_options": {"include_usage": true}})", "stream_options"},
      {R"({"prompt": "a", "stream": true, "stream_options": {"include_usage": 1}})",
       "stream_options.include_usage"},
      {R"({"prompt": "a", "model": "other"})", "model"},
      {R"({"prompt": "a", "echo": "yes"})", "echo"},
  };
  for (const Case& c : cases) {
    auto e = Completion(c.body);
    ASSERT_TRUE(e) << c.body;
    EXPECT_EQ(e->http_status, 400) << c.body;
    EXPECT_EQ(e->param, c.param) << c.body;
  }
}

TEST_F(OpenAiRequestTest, SamplingFieldsReachTheEngineRequest) {
  ASSERT_FALSE(Completion(
      R"({"prompt": "a", "temperature": 0.5, "top_p": 0.9, "top_k": -1, "min_p": 0.1,
          "presence_penalty": 1, "frequency_penalty": -1, "repetition_penalty": 1.2,
          "logit_bias": {"7": -100}, "seed": 42, "max_tokens": 9, "min_tokens": 2,
          "ignore_eos": true, "stop_token_ids": [3], "stop": "xy", "logprobs": 2,
          "priority": -1, "user": "u"})"));
  const SamplingParams& s = spec_.sampling;
  EXPECT_FLOAT_EQ(s.temperature, 0.5f);
  EXPECT_FLOAT_EQ(s.top_p, 0.9f);
  EXPECT_EQ(s.top_k, 0);
  EXPECT_FLOAT_EQ(s.repetition_penalty, 1.2f);
  ASSERT_EQ(s.logit_bias.size(), 1u);
  EXPECT_EQ(s.logit_bias[0].first, 7);
  EXPECT_EQ(s.seed, 42u);
  EXPECT_EQ(s.max_tokens, 9);
  EXPECT_EQ(s.min_tokens, 2);
  EXPECT_TRUE(s.ignore_eos);
  EXPECT_EQ(s.stop_token_ids, std::vector<int32_t>{3});
  EXPECT_EQ(spec_.stop, std::vector<std::string>{"xy"});
  EXPECT_EQ(spec_.top_logprobs, 2);
  EXPECT_EQ(spec_.priority, -1);
}

TEST_F(OpenAiRequestTest, ChatAppliesTheTemplate) {
  ctx_.limits.max_prompt_tokens = 1000;
  ASSERT_FALSE(Chat(R"({"messages": [{"role": "system", "content": "S"},
                                     {"role": "user", "content": [{"type": "text", "text": "U"}]}],
                        "max_completion_tokens": 5, "logprobs": true, "top_logprobs": 3})"));
  EXPECT_EQ(spec_.prompt_texts[0], "S\n\nUser: U\nAssistant:");
  EXPECT_EQ(spec_.sampling.max_tokens, 5);
  EXPECT_EQ(spec_.top_logprobs, 3);
  ASSERT_FALSE(Chat(R"({"messages": [{"role": "user", "content": "U"}]})"));
  // Default max_tokens: the rest of the context (100 - prompt length).
  EXPECT_EQ(spec_.sampling.max_tokens, 100 - static_cast<int>(spec_.prompts[0].size()));
  EXPECT_EQ(Chat(R"({"messages": []})")->param, "messages");
  EXPECT_EQ(Chat(R"({"messages": [{"role": "bot", "content": "x"}]})")->param, "messages[0].role");
  EXPECT_EQ(Chat(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})")->param,
            "messages[0].content");
}

// Prompt scoring: what the engine is asked to score, and max_tokens 0 only with scoring.
TEST_F(OpenAiRequestTest, PromptScoringFields) {
  ASSERT_FALSE(Completion(R"({"prompt": "ab", "echo": true, "logprobs": 3})"));
  EXPECT_TRUE(spec_.echo_logprobs());
  EXPECT_EQ(spec_.EnginePromptLogprobs(), 3);
  ASSERT_FALSE(
      Completion(R"({"prompt": "ab", "echo": true, "logprobs": 1, "prompt_logprobs": 4})"));
  EXPECT_EQ(spec_.prompt_logprobs, 4);
  EXPECT_EQ(spec_.EnginePromptLogprobs(), 4);  // enough alternatives for both outputs
  ASSERT_FALSE(Completion(R"({"prompt": "ab", "logprobs": 2})"));  // no echo: no scoring
  EXPECT_EQ(spec_.EnginePromptLogprobs(), -1);
  ASSERT_FALSE(Completion(R"({"prompt": "ab", "echo": true})"));
  EXPECT_EQ(spec_.EnginePromptLogprobs(), -1);
  ASSERT_FALSE(Completion(R"({"prompt": "ab", "max_tokens": 0, "prompt_logprobs": 0})"));
  EXPECT_EQ(spec_.sampling.max_tokens, 0);
  ASSERT_FALSE(Completion(R"({"prompt": "ab", "max_tokens": 0, "echo": true, "logprobs": 0})"));
  auto e = Completion(R"({"prompt": "ab", "max_tokens": 0, "echo": true})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "max_tokens");
  e = Completion(R"({"prompt": "ab", "prompt_logprobs": 21})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "prompt_logprobs");
  ctx_.limits.max_prompt_tokens = 1000;  // the chat template is longer than 10 tokens
  ASSERT_FALSE(Chat(R"({"messages": [{"role": "user", "content": "hi"}], "prompt_logprobs": 2})"));
  EXPECT_EQ(spec_.EnginePromptLogprobs(), 2);
  e = Chat(R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "max_tokens");
}

TEST(ChatTemplateTest, ParsesAndValidates) {
  auto t = ChatTemplate::FromJsonText(
      R"({"prefix": "<s>", "user": "[U]{content}[/U]", "generation_prompt": "[A]"})");
  ASSERT_TRUE(t.ok()) << t.status();
  auto text = t->Apply({{"system", "sys"}, {"user", "hi"}, {"assistant", "yo"}});
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "<s>sys\n\n[U]hi[/U]Assistant: yo\n[A]");
  EXPECT_FALSE(ChatTemplate::FromJsonText(R"({"user": "no placeholder"})").ok());
  EXPECT_FALSE(ChatTemplate::FromJsonText(R"({"usr": "{content}"})").ok());
  EXPECT_FALSE(ChatTemplate::FromJsonText(R"([1])").ok());
}

TEST(OpenAiResponseTest, ErrorShapeAndTokenDisplay) {
  ApiError e = BadRequest("bad n", "n");
  json j = ErrorJson(e);
  EXPECT_EQ(j["error"]["message"], "bad n");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "n");
  EXPECT_TRUE(j["error"]["code"].is_null());
  auto tok = Tokenizer::ByteFallback();
  EXPECT_EQ(TokenDisplay(*tok, 'a'), "a");
  EXPECT_EQ(TokenDisplay(*tok, 0xE2), "bytes:\\xe2");
  EXPECT_TRUE(IsValidUtf8("h\xC3\xA9"));
  EXPECT_FALSE(IsValidUtf8("\xC3"));
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));  // a surrogate
}

}  // namespace
}  // namespace bms
