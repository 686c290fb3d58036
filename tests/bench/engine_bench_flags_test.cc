// Unit tests of the engine benchmark's flag parsing and report output
// (bench/engine/engine_bench.h): values, both flag forms, errors naming the flag, the JSON and
// table of a hand-made report. The measurements themselves need a GPU (bench/run_on_device.sh).
#include <string>
#include <vector>

#include "bench/engine/engine_bench.h"
#include "gtest/gtest.h"

namespace bms {
namespace {

absl::Status Parse(const std::vector<std::string>& args, EngineBenchOptions* o, bool* help) {
  return ParseEngineBenchArgs(args, o, help);
}

TEST(EngineBenchFlags, DefaultsCoverTheIssueRows) {
  EngineBenchOptions o;
  EXPECT_EQ(o.presets, (std::vector<std::string>{"blackmamba-2.8b", "blackmamba-1.5b"}));
  EXPECT_EQ(o.batches, (std::vector<int>{1, 8, 32, 64, 128, 256, 1024}));
  EXPECT_EQ(o.bf16_state_batches, (std::vector<int>{1024}));
  EXPECT_EQ(o.prompts, (std::vector<int>{512, 2048, 8192}));
  EXPECT_EQ(o.ttft_prompts, (std::vector<int>{128, 2048}));
  EXPECT_EQ(o.capacity_contexts, (std::vector<int>{1024, 65536}));
  EXPECT_TRUE(o.capacity);
}

TEST(EngineBenchFlags, ParsesBothFormsAndDashes) {
  EngineBenchOptions o;
  bool help = true;
  ASSERT_TRUE(Parse({"--presets=blackmamba-1.5b", "--batches", "2,4", "--bf16-state-batches=",
                     "--prompts=", "--steps=3", "--eager", "--capacity=false",
                     "--gpu_memory_fraction=0.5", "--json=/tmp/x.json", "--prefill-chunk", "512"},
                    &o, &help)
                  .ok());
  EXPECT_FALSE(help);
  EXPECT_EQ(o.presets, std::vector<std::string>{"blackmamba-1.5b"});
  EXPECT_EQ(o.batches, (std::vector<int>{2, 4}));
  EXPECT_TRUE(o.bf16_state_batches.empty());
  EXPECT_TRUE(o.prompts.empty());
  EXPECT_EQ(o.steps, 3);
  EXPECT_TRUE(o.eager);
  EXPECT_FALSE(o.capacity);
  EXPECT_DOUBLE_EQ(o.gpu_memory_fraction, 0.5);
  EXPECT_EQ(o.json_path, "/tmp/x.json");
  EXPECT_EQ(o.prefill_chunk, 512);
  ASSERT_TRUE(Parse({"--help"}, &o, &help).ok());
  EXPECT_TRUE(help);
}

TEST(EngineBenchFlags, ErrorsNameTheFlag) {
  struct Case {
    std::vector<std::string> args;
    std::string needle;
  };
  const Case cases[] = {{{"--bogus=1"}, "--bogus"},
                        {{"--bogus"}, "--bogus"},
                        {{"--batches=1,x"}, "--batches"},
                        {{"--batches=0"}, "--batches"},
                        {{"--steps=0"}, "--steps"},
                        {{"--steps"}, "--steps"},
                        {{"--gpu_memory_fraction=1.5"}, "--gpu_memory_fraction"},
                        {{"--capacity=maybe"}, "--capacity"},
                        {{"--presets="}, "--presets"},
                        {{"stray"}, "stray"}};
  for (const Case& c : cases) {
    EngineBenchOptions o;
    bool help = false;
    const absl::Status s = Parse(c.args, &o, &help);
    EXPECT_FALSE(s.ok()) << c.args[0];
    EXPECT_NE(std::string(s.message()).find(c.needle), std::string::npos) << s.message();
  }
}

TEST(EngineBenchReport, JsonAndTableCarryRowsAndCapacity) {
  EngineBenchReport r;
  r.device = "test device";
  r.copy_bytes_per_s = 3e12;
  r.gemm_flop_per_s = 7e14;
  r.rows.push_back({.preset = "p",
                    .kind = "decode",
                    .mode = "graph",
                    .state = "f32",
                    .size = 64,
                    .ms = 2.0,
                    .tokens_per_s = 32000,
                    .host_us = 50,
                    .floor_ms = 1.0,
                    .ratio = 2.0});
  CapacityResult c;
  c.preset = "p";
  c.slots = 100;
  c.ideal_slots = 125;
  c.contexts = {1024, 65536};
  c.used_bytes = {size_t{1} << 30, size_t{1} << 30};
  r.capacity.push_back(c);
  const nlohmann::json j = r.ToJson();
  ASSERT_EQ(j["rows"].size(), 1u);
  EXPECT_EQ(j["rows"][0]["tokens_per_s"], 32000);
  EXPECT_DOUBLE_EQ(j["rows"][0]["host_share"].get<double>(), 50e-6 / 2e-3);  // 2.5%
  EXPECT_EQ(j["capacity"][0]["slots"], 100);
  EXPECT_EQ(j["capacity"][0]["used_bytes"][1], size_t{1} << 30);
  const std::string t = r.Table();
  EXPECT_NE(t.find("test device"), std::string::npos);
  EXPECT_NE(t.find("   2.5"), std::string::npos);  // host share column, percent
  EXPECT_NE(t.find("100 fp32-state slots"), std::string::npos);
  EXPECT_NE(t.find("flat"), std::string::npos);
  EXPECT_EQ(t.find("NOT flat"), std::string::npos);
}

}  // namespace
}  // namespace bms
