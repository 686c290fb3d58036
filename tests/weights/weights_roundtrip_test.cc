// Round trips: MakeModel (safetensors single/sharded, torch zip; fp32/bf16/fp16) -> LoadModel
// gives MakeRandomWeights rounded to the dtype; key layout and random-init properties.
#include <cmath>
#include <filesystem>
#include <set>

#include "engine/model_weights.h"
#include "engine/safetensors.h"
#include "gtest/gtest.h"
#include "tests/weights/test_files.h"
#include "tools/checkpoint_writer.h"
#include "tools/make_model.h"

namespace bms {
namespace {

using testing::ScratchDir;

ModelConfig Tiny() { return *ModelConfig::Preset("tiny"); }

// The value a fp32 weight has after being stored as `dtype`.
float Rounded(float v, DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return v;
    case DType::kBF16:
      return BF16ToF32(F32ToBF16(v));
    case DType::kF16:
      return F16ToF32(F32ToF16(v));
  }
  return v;
}

// Every tensor of `got` equals `want` (fp32) rounded to `dtype`, element by element.
void ExpectWeightsEqual(const ModelWeights& want, const ModelWeights& got, DType dtype) {
  TensorMap w = FlattenWeights(want), g = FlattenWeights(got);
  ASSERT_EQ(w.size(), g.size());
  for (const auto& [name, wt] : w) {
    const HostTensor& gt = g.at(name);
    ASSERT_EQ(gt.dtype, dtype) << name;
    ASSERT_EQ(gt.shape, wt.shape) << name;
    std::vector<float> wv = wt.ToF32(), gv = gt.ToF32();
    int mismatches = 0;
    for (size_t i = 0; i < wv.size(); ++i) mismatches += Rounded(wv[i], dtype) != gv[i];
    EXPECT_EQ(mismatches, 0) << name;
  }
}

TEST(WeightsLayout, TinyPresetKeysAndShapes) {
  ModelConfig c = Tiny();  // 4 layers r,8,r,8; d 64, f 128, vocab 512
  std::vector<ExpectedTensor> e = ExpectedTensors(c);
  // embedding + 4 norms + 2 mamba x 9 + 2 moe x (router w,b + 8 experts x 2) + final w,b
  EXPECT_EQ(e.size(), 1u + 4 + 18 + 36 + 2);
  std::map<std::string, std::vector<int64_t>> m;
  long long params = 0;
  for (const auto& t : e) {
    m[t.name] = t.shape;
    long long n = 1;
    for (int64_t s : t.shape) n *= s;
    params += n;
  }
  EXPECT_EQ(params, c.TotalParams());
  using S = std::vector<int64_t>;
  EXPECT_EQ(m.at("embedding.word_embeddings.weight"), (S{512, 64}));
  EXPECT_EQ(m.at("decoder.layers.0.mixer.in_proj.weight"), (S{256, 64}));
  EXPECT_EQ(m.at("decoder.layers.0.mixer.conv1d.weight"), (S{128, 1, 4}));
  EXPECT_EQ(m.at("decoder.layers.2.mixer.x_proj.weight"), (S{4 + 32, 128}));
  EXPECT_EQ(m.at("decoder.layers.2.mixer.dt_proj.weight"), (S{128, 4}));
  EXPECT_EQ(m.at("decoder.layers.2.mixer.A_log"), (S{128, 16}));
  EXPECT_EQ(m.at("decoder.layers.1.mixer.router.weight"), (S{8, 64}));
  EXPECT_EQ(m.at("decoder.layers.3.mixer.local_experts.7.linear_fc1.weight"), (S{256, 64}));
  EXPECT_EQ(m.at("decoder.layers.3.mixer.local_experts.7.linear_fc2.weight"), (S{64, 128}));
  EXPECT_EQ(m.at("decoder.final_layernorm.bias"), (S{64}));
  EXPECT_EQ(m.count("decoder.layers.0.mixer.in_proj.bias"), 0u);
}

TEST(WeightsLayout, DenseLayerAndLinearBiases) {
  nlohmann::json j = Tiny().ToJson();
  j["mamba_moe_layers"] = {"r", "1", "r", "8"};
  j["add_bias_linear"] = true;
  j["swiglu"] = false;
  ModelConfig c = *ModelConfig::FromJson(j);
  std::set<std::string> names;
  for (const auto& t : ExpectedTensors(c)) names.insert(t.name);
  EXPECT_TRUE(names.count("decoder.layers.1.mixer.linear_fc1.weight"));
  EXPECT_TRUE(names.count("decoder.layers.1.mixer.linear_fc2.bias"));
  EXPECT_TRUE(names.count("decoder.layers.0.mixer.in_proj.bias"));
  EXPECT_TRUE(names.count("decoder.layers.0.mixer.out_proj.bias"));
  EXPECT_TRUE(names.count("decoder.layers.3.mixer.local_experts.0.linear_fc1.bias"));
  EXPECT_FALSE(names.count("decoder.layers.1.mixer.router.weight"));

  ScratchDir dir;
  ASSERT_TRUE(MakeModel(c, {.seed = 3}, dir.path()).ok());
  auto loaded = LoadModel(dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->layers[1].kind, LayerKind::kDenseMlp);
  EXPECT_EQ(loaded->layers[1].dense.fc1.shape, (std::vector<int64_t>{128, 64}));  // f, not 2f
  ExpectWeightsEqual(MakeRandomWeights(c, 3), *loaded, DType::kF32);
}

struct RoundTripCase {
  CheckpointFormat format;
  DType dtype;
};

class WeightsRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(WeightsRoundTrip, MakeModelThenLoadModel) {
  ScratchDir dir;
  MakeModelOptions o{.seed = 42, .dtype = GetParam().dtype, .format = GetParam().format};
  absl::Status s = MakeModel(Tiny(), o, dir.path());
  ASSERT_TRUE(s.ok()) << s;
  const char* file =
      o.format == CheckpointFormat::kTorch ? "pytorch_model.bin" : "model.safetensors";
  EXPECT_TRUE(std::filesystem::exists(dir / file));
  auto loaded = LoadModel(dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config.ToJson(), Tiny().ToJson());
  ExpectWeightsEqual(MakeRandomWeights(Tiny(), 42), *loaded, o.dtype);
}

INSTANTIATE_TEST_SUITE_P(
    AllFormatsAndDTypes, WeightsRoundTrip,
    ::testing::Values(RoundTripCase{CheckpointFormat::kSafetensors, DType::kF32},
                      RoundTripCase{CheckpointFormat::kSafetensors, DType::kBF16},
                      RoundTripCase{CheckpointFormat::kSafetensors, DType::kF16},
                      RoundTripCase{CheckpointFormat::kTorch, DType::kF32},
                      RoundTripCase{CheckpointFormat::kTorch, DType::kBF16},
                      RoundTripCase{CheckpointFormat::kTorch, DType::kF16}),
    [](const auto& info) {
      return std::string(info.param.format == CheckpointFormat::kTorch ? "Torch" : "Safetensors") +
             DTypeName(info.param.dtype);
    });

TEST(WeightsRoundTrip, ShardedSafetensors) {
  ScratchDir dir;
  // Tiny fp32: the embedding alone is 131072 bytes, so 100000-byte shards give many shards.
  MakeModelOptions o{.seed = 5, .dtype = DType::kBF16, .shard_bytes = 100000};
  ASSERT_TRUE(MakeModel(Tiny(), o, dir.path()).ok());
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors"));
  ASSERT_TRUE(std::filesystem::exists(dir / "model.safetensors.index.json"));
  int shards = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    std::string name = entry.path().filename();
    if (name.rfind("model-", 0) == 0) {
      ++shards;
      EXPECT_LE(std::filesystem::file_size(entry.path()), 100000u + 16384u) << name;
    }
  }
  // Tiny bf16 is ~0.88 MB of weights.
  EXPECT_GE(shards, 8);
  EXPECT_TRUE(std::filesystem::exists(dir / "model-00001-of-" + [&] {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "%05d", shards);
    return std::string(buf);
  }() + ".safetensors"));
  auto loaded = LoadModel(dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectWeightsEqual(MakeRandomWeights(Tiny(), 5), *loaded, DType::kBF16);
}

TEST(WeightsRoundTrip, WritersAcceptMixedInputDTypes) {
  ScratchDir dir;
  TensorMap m;
  m["a"] = HostTensor::Convert({1.5f, -2.25f, 3.0f}, {3}, DType::kBF16);
  m["b"] = HostTensor::FromF32({0.1f, 0.2f}, {2, 1});
  ASSERT_TRUE(WriteSafetensors(dir / "x.safetensors", m, DType::kF16).ok());
  auto r = ReadSafetensors(dir / "x.safetensors");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->at("a").dtype, DType::kF16);
  EXPECT_EQ(r->at("a").ToF32(), (std::vector<float>{1.5f, -2.25f, 3.0f}));
  EXPECT_EQ(r->at("b").shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(r->at("b").At(1), F16ToF32(F32ToF16(0.2f)));
}

TEST(RandomWeights, DeterministicAndMambaInit) {
  ModelConfig c = Tiny();
  ModelWeights a = MakeRandomWeights(c, 9), b = MakeRandomWeights(c, 9),
               other = MakeRandomWeights(c, 10);
  EXPECT_EQ(a.embedding.ToF32(), b.embedding.ToF32());
  EXPECT_NE(a.embedding.ToF32(), other.embedding.ToF32());
  EXPECT_NE(a.layers[0].mamba.in_proj.ToF32(), a.layers[2].mamba.in_proj.ToF32());
  // MakeRandomTensor is the per-tensor source of the same values.
  HostTensor t = MakeRandomTensor(c, {"decoder.layers.2.mixer.x_proj.weight", {36, 128}}, 9);
  EXPECT_EQ(t.ToF32(), a.layers[2].mamba.x_proj.ToF32());

  const MambaWeights& m = a.layers[0].mamba;
  for (int64_t row = 0; row < 128; ++row) {
    for (int64_t k = 0; k < 16; ++k) {
      ASSERT_FLOAT_EQ(m.A_log.At(row * 16 + k), std::log(static_cast<float>(k + 1)));
    }
  }
  for (float v : m.D.ToF32()) ASSERT_EQ(v, 1.0f);
  for (float v : a.layers[1].norm.ToF32()) ASSERT_EQ(v, 1.0f);
  for (float v : a.final_norm_bias.ToF32()) ASSERT_EQ(v, 0.0f);
  for (float v : m.dt_proj_bias.ToF32()) {
    double dt = std::log1p(std::exp(static_cast<double>(v)));  // softplus
    ASSERT_GE(dt, 1e-3 * 0.999);
    ASSERT_LE(dt, 1e-1 * 1.001);
  }
  for (float v : m.conv_weight.ToF32()) ASSERT_LE(std::fabs(v), 0.5f);  // 1/sqrt(d_conv = 4)

  auto std_of = [](const HostTensor& x) {
    double s = 0, s2 = 0;
    std::vector<float> v = x.ToF32();
    for (float f : v) {
      s += f;
      s2 += static_cast<double>(f) * f;
    }
    double mean = s / v.size();
    return std::sqrt(s2 / v.size() - mean * mean);
  };
  EXPECT_NEAR(std_of(a.embedding), 1.0 / 8.0, 0.01);              // 1/sqrt(d_model = 64)
  EXPECT_NEAR(std_of(m.in_proj), 1.0 / 8.0, 0.01);                // fan_in 64
  EXPECT_NEAR(std_of(m.out_proj), 4.0 / std::sqrt(128.0), 0.03);  // gain 4, fan_in d_inner 128
  EXPECT_NEAR(std_of(a.layers[1].moe.experts[3].fc2), 4.0 / std::sqrt(128.0),
              0.03);  // gain 4, fan_in f
  double router_bias_max = 0;
  for (float v : a.layers[1].moe.router_bias.ToF32())
    router_bias_max = std::max(router_bias_max, std::fabs(double(v)));
  EXPECT_GT(router_bias_max, 0.0);
  EXPECT_LT(router_bias_max, 0.2);
}

TEST(Safetensors, ReadsHandWrittenFileWithMisalignedData) {
  ScratchDir dir;
  // Header of 85 bytes (8 + 85 is odd): the F32 data is misaligned and must be copied.
  std::string header =
      R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"k":"v"}})";
  ASSERT_LT(header.size(), 85u);
  header.resize(85, ' ');
  std::string bytes;
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xFF));
  bytes += header;
  const float values[4] = {1.0f, -2.0f, 0.5f, 1e-3f};
  bytes.append(reinterpret_cast<const char*>(values), sizeof(values));
  testing::WriteFileBytes(dir / "m.safetensors", bytes);
  auto r = ReadSafetensors(dir / "m.safetensors");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);
  const HostTensor& w = r->at("w");
  EXPECT_EQ(w.dtype, DType::kF32);
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.data) % 4, 0u);
  EXPECT_EQ(w.ToF32(), (std::vector<float>{1.0f, -2.0f, 0.5f, 1e-3f}));
}

TEST(Safetensors, TensorsOutliveTheMapHandle) {
  ScratchDir dir;
  ASSERT_TRUE(MakeModel(Tiny(), {.seed = 1}, dir.path()).ok());
  HostTensor emb;
  {
    auto w = LoadModel(dir.path());
    ASSERT_TRUE(w.ok());
    emb = w->embedding;
  }
  // The mapping is kept alive by the tensor's owner alone.
  EXPECT_EQ(emb.ToF32(), MakeRandomWeights(Tiny(), 1).embedding.ToF32());
}

}  // namespace
}  // namespace bms
