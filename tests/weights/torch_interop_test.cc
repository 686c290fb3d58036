// Interop with real PyTorch (/usr/bin/python3 with torch): files written by torch.save load
// with equal values, and torch.load reads what WriteTorchCheckpoint writes. Skipped (visibly)
// when torch is not installed.
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "engine/model_weights.h"
#include "engine/torch_checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/weights/test_files.h"
#include "tools/make_model.h"

namespace bms {
namespace {

using ::testing::HasSubstr;
using testing::ReadFileBytes;
using testing::ScratchDir;
using testing::WriteFileBytes;

bool HaveTorch() {
  static const bool have = std::system(BMS_PYTHON3 " -c 'import torch' > /dev/null 2>&1") == 0;
  return have;
}

// Runs a python script (written to dir/script.py) with the given arguments; true on exit 0.
bool RunPython(const ScratchDir& dir, const std::string& script, const std::string& args) {
  WriteFileBytes(dir / "script.py", script);
  std::string cmd = std::string(BMS_PYTHON3) + " " + (dir / "script.py") + " " + args;
  return std::system(cmd.c_str()) == 0;
}

constexpr const char* kTorchSaveScript = R"PY(
import collections, sys, torch
out = sys.argv[1]
g = torch.arange(24, dtype=torch.float32) * 0.25 - 3
sd = collections.OrderedDict()
sd["f32"] = g.reshape(4, 6).clone()
sd["bf16"] = g.reshape(2, 12).to(torch.bfloat16)
sd["f16"] = g.to(torch.float16)
big = torch.arange(40, dtype=torch.float32)
sd["view_offset"] = big[10:30].view(4, 5)  # a view: storage offset 10 in a shared storage
sd["shared"] = big
sd["param"] = torch.nn.Parameter(torch.full((3,), 0.5))
torch.save({"model": sd, "step": 7, "args": {"lr": 0.1, "name": "x", "flags": [True, None]}},
           out + "/wrapped.bin")
torch.save(sd, out + "/bare.bin")
torch.save({"model": {"t": big.view(5, 8).t()}}, out + "/noncontig.bin")
)PY";

void ExpectTorchSaved(const TensorMap& m) {
  ASSERT_EQ(m.size(), 6u);
  const HostTensor& f32 = m.at("f32");
  EXPECT_EQ(f32.dtype, DType::kF32);
  EXPECT_EQ(f32.shape, (std::vector<int64_t>{4, 6}));
  const HostTensor& bf16 = m.at("bf16");
  EXPECT_EQ(bf16.dtype, DType::kBF16);
  EXPECT_EQ(bf16.shape, (std::vector<int64_t>{2, 12}));
  const HostTensor& f16 = m.at("f16");
  EXPECT_EQ(f16.dtype, DType::kF16);
  for (int i = 0; i < 24; ++i) {
    float v = i * 0.25f - 3.0f;  // exactly representable in all three dtypes
    EXPECT_EQ(f32.At(i), v);
    EXPECT_EQ(bf16.At(i), v);
    EXPECT_EQ(f16.At(i), v);
  }
  const HostTensor& view = m.at("view_offset");
  EXPECT_EQ(view.shape, (std::vector<int64_t>{4, 5}));
  for (int i = 0; i < 20; ++i) EXPECT_EQ(view.At(i), 10.0f + i);
  EXPECT_EQ(m.at("shared").At(39), 39.0f);
  EXPECT_EQ(m.at("param").ToF32(), (std::vector<float>{0.5f, 0.5f, 0.5f}));
}

TEST(TorchInterop, ReadsRealTorchSaveFiles) {
  if (!HaveTorch()) GTEST_SKIP() << "SKIPPED: /usr/bin/python3 has no torch";
  ScratchDir dir;
  ASSERT_TRUE(RunPython(dir, kTorchSaveScript, dir.path()));
  auto wrapped = ReadTorchCheckpoint(dir / "wrapped.bin");
  ASSERT_TRUE(wrapped.ok()) << wrapped.status();
  ExpectTorchSaved(*wrapped);
  auto bare = ReadTorchCheckpoint(dir / "bare.bin");
  ASSERT_TRUE(bare.ok()) << bare.status();
  ExpectTorchSaved(*bare);
  auto nc = ReadTorchCheckpoint(dir / "noncontig.bin");
  ASSERT_FALSE(nc.ok());
  EXPECT_THAT(std::string(nc.status().message()),
              HasSubstr("tensor 't': is not contiguous (shape [8, 5])"));
}

// torch.load reads our checkpoint; torch.save re-saves it as bf16 (a genuine torch file of the
// whole model), which LoadModel must read back equal to the random weights rounded to bf16.
constexpr const char* kResaveScript = R"PY(
import collections, sys, torch
src, dst = sys.argv[1], sys.argv[2]
ck = torch.load(src + "/pytorch_model.bin")
sd = ck["model"]
assert isinstance(sd, collections.OrderedDict), type(sd)
emb = sd["embedding.word_embeddings.weight"]
assert emb.dtype == torch.float32 and tuple(emb.shape) == (512, 64), (emb.dtype, emb.shape)
assert torch.equal(sd["decoder.layers.0.mixer.D"], torch.ones(128))
total = sum(float(t.double().sum()) for t in sd.values())
open(dst + "/sum.txt", "w").write(repr(total))
torch.save({"model": collections.OrderedDict((k, v.to(torch.bfloat16)) for k, v in sd.items())},
           dst + "/pytorch_model.bin")
)PY";

TEST(TorchInterop, TorchLoadsOurCheckpointAndWeLoadItsResave) {
  if (!HaveTorch()) GTEST_SKIP() << "SKIPPED: /usr/bin/python3 has no torch";
  ScratchDir src, dst;
  ModelConfig tiny = *ModelConfig::Preset("tiny");
  ASSERT_TRUE(MakeModel(tiny, {.seed = 11, .format = CheckpointFormat::kTorch}, src.path()).ok());
  ASSERT_TRUE(RunPython(dst, kResaveScript, src.path() + " " + dst.path()));

  ModelWeights want = MakeRandomWeights(tiny, 11);
  double total = 0;
  for (const auto& [name, t] : FlattenWeights(want)) {
    for (float v : t.ToF32()) total += v;
  }
  double torch_total = std::stod(ReadFileBytes(dst / "sum.txt"));
  EXPECT_NEAR(torch_total, total, 1e-9 * std::max(1.0, std::fabs(total)));

  std::filesystem::copy_file(src / "config.json", dst / "config.json");
  auto loaded = LoadModel(dst.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  TensorMap w = FlattenWeights(want), g = FlattenWeights(*loaded);
  for (const auto& [name, wt] : w) {
    const HostTensor& gt = g.at(name);
    ASSERT_EQ(gt.dtype, DType::kBF16) << name;
    std::vector<float> wv = wt.ToF32();
    for (size_t i = 0; i < wv.size(); ++i) {
      ASSERT_EQ(gt.At(static_cast<int64_t>(i)), BF16ToF32(F32ToBF16(wv[i]))) << name << " " << i;
    }
  }
}

}  // namespace
}  // namespace bms
