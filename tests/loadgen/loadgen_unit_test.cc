// Unit tests of the load generator's pieces: chunked decoding and SSE parsing under every
// split of the input, stream-chunk reading, percentiles and the steady-window token count,
// request bodies, option validation, and the HTTP client against a canned local server and a
// closed port.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/loadgen/http_client.h"
#include "tools/loadgen/load_driver.h"
#include "tools/loadgen/report.h"
#include "tools/loadgen/sse.h"

namespace bms::loadgen {
namespace {

// Feeds `wire` to a fresh decoder in pieces of `step` bytes, keeping unconsumed bytes.
std::string DecodeInSteps(const std::string& wire, size_t step, bool* done) {
  ChunkedDecoder d;
  std::string out, pending;
  for (size_t i = 0; i < wire.size(); i += step) {
    pending += wire.substr(i, step);
    size_t used = 0;
    EXPECT_TRUE(d.Feed(pending, &used, [&](std::string_view p) { out.append(p); }).ok());
    pending.erase(0, used);
  }
  *done = d.done();
  return out;
}

TEST(ChunkedDecoderTest, AnySplitGivesThePayload) {
  const std::string wire = "5\r\nhello\r\n1;ext=1\r\n \r\nB\r\nworld, more\r\n0\r\nX-T: 1\r\n\r\n";
  for (size_t step = 1; step <= wire.size(); ++step) {
    bool done = false;
    EXPECT_EQ(DecodeInSteps(wire, step, &done), "hello world, more") << "step " << step;
    EXPECT_TRUE(done) << "step " << step;
  }
}

TEST(ChunkedDecoderTest, MalformedSizeIsAnError) {
  ChunkedDecoder d;
  size_t used = 0;
  EXPECT_FALSE(d.Feed("zz\r\n", &used, [](std::string_view) {}).ok());
  ChunkedDecoder d2;
  EXPECT_FALSE(d2.Feed("2\r\nabXY", &used, [](std::string_view) {}).ok());
}

TEST(SseParserTest, AnySplitGivesTheEvents) {
  const std::string body =
      ": comment\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\n"
      "data:[DONE]\r\r";
  for (size_t step = 1; step <= body.size(); ++step) {
    std::vector<std::string> events;
    SseParser p([&](const std::string& d) { events.push_back(d); });
    for (size_t i = 0; i < body.size(); i += step) p.Feed(std::string_view(body).substr(i, step));
    ASSERT_EQ(events.size(), 3u) << "step " << step;
    EXPECT_EQ(events[0], "{\"a\":1}");
    EXPECT_EQ(events[1], "line1\nline2");
    EXPECT_EQ(events[2], "[DONE]");
  }
}

TEST(StreamChunkTest, ReadsTextTokensUsageAndErrors) {
  StreamChunk c = ParseStreamChunk(
      R"({"choices":[{"index":0,"text":"ab","logprobs":{"tokens":["a","b"]}}],"usage":null})");
  EXPECT_TRUE(c.content);
  EXPECT_EQ(c.text, "ab");
  EXPECT_EQ(c.tokens, 2);
  EXPECT_EQ(c.usage_completion_tokens, -1);

  c = ParseStreamChunk(R"({"choices":[{"text":"x","logprobs":null}]})");
  EXPECT_TRUE(c.content);
  EXPECT_EQ(c.tokens, -1);

  c = ParseStreamChunk(R"({"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":9}})");
  EXPECT_FALSE(c.content);
  EXPECT_EQ(c.usage_completion_tokens, 9);
  EXPECT_EQ(c.usage_prompt_tokens, 7);

  c = ParseStreamChunk(R"({"error":{"message":"boom","type":"server_error"}})");
  EXPECT_EQ(c.error, "boom");
  EXPECT_TRUE(ParseStreamChunk("[DONE]").done);
  EXPECT_FALSE(ParseStreamChunk("not json").error.empty());
}

TEST(ReportTest, PercentilesInterpolateAndAreOrdered) {
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);  // 1..100, unsorted
  Percentiles p = ComputePercentiles(v);
  EXPECT_EQ(p.count, 100);
  EXPECT_DOUBLE_EQ(p.mean, 50.5);
  EXPECT_DOUBLE_EQ(p.p50, 50.5);   // between ranks 49 and 50 (0-based)
  EXPECT_DOUBLE_EQ(p.p90, 90.1);   // 0.9 * 99 = 89.1 -> 90 + 0.1
  EXPECT_DOUBLE_EQ(p.p99, 99.01);  // 0.99 * 99 = 98.01 -> 99 + 0.01
  EXPECT_DOUBLE_EQ(p.max, 100);
  EXPECT_EQ(ComputePercentiles({}).count, 0);
}

TEST(ReportTest, SummarizeCountsTokensLatenciesAndWindow) {
  // Request A: 4 tokens in 4 one-token chunks at 1.0, 1.1, 1.2, 1.3 (start 0.5).
  RequestRecord a;
  a.ok = true;
  a.start_s = 0.5;
  a.end_s = 1.4;
  a.chunk_s = {1.0, 1.1, 1.2, 1.3};
  a.chunk_tokens = {-1, -1, -1, -1};
  a.streamed_tokens = 4;
  a.usage_completion_tokens = 4;
  a.usage_prompt_tokens = 3;
  // Request B: 6 tokens (usage) in 2 chunks at 2.0 and 3.0 -> 3 tokens each.
  RequestRecord b = a;
  b.start_s = 1.5;
  b.end_s = 3.5;
  b.chunk_s = {2.0, 3.0};
  b.chunk_tokens = {-1, -1};
  b.streamed_tokens = 2;
  b.usage_completion_tokens = 6;
  RequestRecord failed;
  failed.error = "connect: Connection refused";
  failed.end_s = 0.1;

  Summary s = Summarize({a, b, failed}, 1.05, 2.5);
  EXPECT_EQ(s.issued, 3);
  EXPECT_EQ(s.completed, 2);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.errors["connect: Connection refused"], 1);
  EXPECT_EQ(s.output_tokens, 10);
  EXPECT_EQ(s.streamed_tokens, 6);
  EXPECT_EQ(s.prompt_tokens, 6);
  EXPECT_DOUBLE_EQ(s.wall_s, 3.5);
  EXPECT_DOUBLE_EQ(s.output_tokens_per_s, 10 / 3.5);
  // In [1.05, 2.5]: A's chunks at 1.1, 1.2, 1.3 (3 tokens) + B's chunk at 2.0 (3 tokens).
  EXPECT_NEAR(s.steady_output_tokens_per_s, 6 / 1.45, 1e-9);
  EXPECT_NEAR(s.ttft_ms.p50, 500, 1e-9);  // both 500 ms
  EXPECT_EQ(s.itl_ms.count, 4);           // 3 gaps of A + 1 of B
  EXPECT_NEAR(s.itl_ms.max, 1000, 1e-9);
  EXPECT_EQ(s.tpot_ms.count, 2);
  EXPECT_NEAR(s.tpot_ms.max, 200, 1e-9);  // B: 1 s over 5 tokens
  EXPECT_NEAR(s.e2e_ms.max, 2000, 1e-9);
}

TEST(RequestBodyTest, TokenAndTextPrompts) {
  LoadOptions o;
  o.prompt_len = 5;
  o.vocab_size = 10;
  o.max_tokens = 7;
  o.logprobs = true;
  nlohmann::json j = nlohmann::json::parse(BuildRequestBody(o, 3));
  ASSERT_TRUE(j["prompt"].is_array());
  ASSERT_EQ(j["prompt"].size(), 5u);
  for (const auto& t : j["prompt"]) EXPECT_TRUE(t.get<int>() >= 0 && t.get<int>() < 10);
  EXPECT_EQ(j["max_tokens"], 7);
  EXPECT_EQ(j["stream"], true);
  EXPECT_EQ(j["stream_options"]["include_usage"], true);
  EXPECT_EQ(j["ignore_eos"], true);
  EXPECT_EQ(j["logprobs"], 0);
  EXPECT_FALSE(j.contains("model"));
  EXPECT_EQ(BuildRequestBody(o, 3), BuildRequestBody(o, 3));  // deterministic
  EXPECT_NE(BuildRequestBody(o, 3), BuildRequestBody(o, 4));

  o.prompt_kind = "text";
  o.model = "m";
  j = nlohmann::json::parse(BuildRequestBody(o, 0));
  ASSERT_TRUE(j["prompt"].is_string());
  const std::string text = j["prompt"].get<std::string>();
  EXPECT_EQ(std::count(text.begin(), text.end(), ' '), 4);  // 5 words
  EXPECT_EQ(j["model"], "m");

  o.api_key = "k";
  const std::string http = BuildHttpRequest(o, "{}");
  EXPECT_NE(http.find("Authorization: Bearer k\r\n"), std::string::npos);
  EXPECT_NE(http.find("Content-Length: 2\r\n"), std::string::npos);
  EXPECT_TRUE(http.ends_with("\r\n\r\n{}"));
}

TEST(OptionsTest, ValidationNamesTheFlag) {
  LoadOptions o;
  EXPECT_NE(ValidateOptions(o).message().find("--concurrency"), std::string::npos);
  o.concurrency = 2;
  EXPECT_NE(ValidateOptions(o).message().find("--duration"), std::string::npos);
  o.requests = 4;
  EXPECT_TRUE(ValidateOptions(o).ok());
  o.rate = 1;
  EXPECT_FALSE(ValidateOptions(o).ok());
  o.rate = 0;
  o.max_tokens = 0;
  EXPECT_NE(ValidateOptions(o).message().find("--max-tokens"), std::string::npos);
  o.max_tokens = 1;
  o.prompt_kind = "bytes";
  EXPECT_NE(ValidateOptions(o).message().find("--prompt-kind"), std::string::npos);
}

// A listening socket on 127.0.0.1 with an OS-chosen port.
int Listen(int* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  EXPECT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

TEST(HttpConnectionTest, StreamsAChunkedResponseThenAnErrorOnTheSameConnection) {
  int port = 0;
  int lfd = Listen(&port);
  std::thread server([lfd] {
    int c = ::accept(lfd, nullptr, nullptr);
    char buf[4096];
    const char* replies[] = {
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
        "8\r\ndata: 1\n\r\n",
        "7\r\n\ndata: \r\n", "3\r\n2\n\n\r\n0\r\n\r\n",
        "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy!"};
    // First request: the 200 stream in three writes; second: the 429.
    ASSERT_GT(::recv(c, buf, sizeof(buf), 0), 0);
    for (int i = 0; i < 3; ++i) {
      ::send(c, replies[i], std::strlen(replies[i]), MSG_NOSIGNAL);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_GT(::recv(c, buf, sizeof(buf), 0), 0);
    ::send(c, replies[3], std::strlen(replies[3]), MSG_NOSIGNAL);
    ::close(c);
  });
  HttpConnection conn("127.0.0.1", port, 5000);
  HttpResponseHead head;
  std::vector<std::string> events;
  SseParser sse([&](const std::string& d) { events.push_back(d); });
  auto s = conn.Exchange(
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n", [&](const HttpResponseHead& h) { head = h; },
      [&](std::string_view b) { sse.Feed(b); });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.chunked);
  EXPECT_EQ(events, (std::vector<std::string>{"1", "2"}));
  std::string body;
  s = conn.Exchange(
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n", [&](const HttpResponseHead& h) { head = h; },
      [&](std::string_view b) { body.append(b); });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(head.status, 429);
  EXPECT_FALSE(head.keep_alive);
  EXPECT_EQ(body, "busy!");
  server.join();
  ::close(lfd);
}

TEST(HttpConnectionTest, ClosedPortIsUnavailable) {
  int port = 0;
  ::close(Listen(&port));  // nobody listens there now
  HttpConnection conn("127.0.0.1", port, 2000);
  auto s = conn.Exchange(
      "GET / HTTP/1.1\r\n\r\n", [](const HttpResponseHead&) {}, [](std::string_view) {});
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_NE(s.message().find("connect"), std::string_view::npos);
}

}  // namespace
}  // namespace bms::loadgen
