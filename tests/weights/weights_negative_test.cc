// Malformed checkpoints: each gives a clear error (asserted by substring), never a crash.
#include <filesystem>

#include "engine/model_weights.h"
#include "engine/safetensors.h"
#include "engine/torch_checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/weights/test_files.h"
#include "tools/checkpoint_writer.h"
#include "tools/make_model.h"

namespace bms {
namespace {

using ::testing::HasSubstr;
using namespace std::string_literals;
using testing::ReadFileBytes;
using testing::ScratchDir;
using testing::WriteFileBytes;

ModelConfig Tiny() { return *ModelConfig::Preset("tiny"); }

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// A safetensors file with the given header JSON and `data_bytes` zero bytes of data.
std::string SafetensorsBytes(const std::string& header, size_t data_bytes) {
  std::string b;
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xFF));
  return b + header + std::string(data_bytes, '\0');
}

TEST(WeightsErrors, TruncatedSafetensors) {
  ScratchDir dir;
  ASSERT_TRUE(MakeModel(Tiny(), {}, dir.path()).ok());
  std::string path = dir / "model.safetensors";
  std::string bytes = ReadFileBytes(path);
  WriteFileBytes(path, bytes.substr(0, bytes.size() - 1000));
  auto r = LoadModel(dir.path());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Message(r.status()), HasSubstr("run past the data area"));
  EXPECT_THAT(Message(r.status()), HasSubstr("truncated"));

  WriteFileBytes(path, bytes.substr(0, 5));
  EXPECT_THAT(Message(ReadSafetensors(path).status()), HasSubstr("truncated"));
  WriteFileBytes(path, bytes.substr(0, 100));  // header cut in the middle
  EXPECT_THAT(Message(ReadSafetensors(path).status()), HasSubstr("exceeds the file size"));
}

TEST(WeightsErrors, TruncatedTorchCheckpointAnywhere) {
  ScratchDir dir;
  ASSERT_TRUE(MakeModel(Tiny(), {.format = CheckpointFormat::kTorch}, dir.path()).ok());
  std::string path = dir / "pytorch_model.bin";
  std::string bytes = ReadFileBytes(path);
  auto r = ReadTorchCheckpoint(path);
  ASSERT_TRUE(r.ok()) << r.status();
  // Cut at many points: each is an error, never a crash (run under ASan for the full check).
  for (size_t cut : {size_t{0}, size_t{10}, size_t{100}, bytes.size() / 3, bytes.size() / 2,
                     bytes.size() - 23, bytes.size() - 1}) {
    WriteFileBytes(path, bytes.substr(0, cut));
    auto t = ReadTorchCheckpoint(path);
    EXPECT_FALSE(t.ok()) << "cut at " << cut;
  }
  WriteFileBytes(path, bytes.substr(0, bytes.size() / 2));
  EXPECT_THAT(Message(ReadTorchCheckpoint(path).status()),
              HasSubstr("no zip end-of-central-directory record (truncated"));
}

TEST(WeightsErrors, CorruptByteFlipsNeverCrash) {
  ScratchDir dir;
  ASSERT_TRUE(MakeModel(Tiny(), {.format = CheckpointFormat::kTorch}, dir.path()).ok());
  std::string path = dir / "pytorch_model.bin";
  const std::string bytes = ReadFileBytes(path);
  // Flip bytes in the pickle (start of the file) and in the central directory (its end).
  int failures = 0;
  for (size_t pos = 64; pos < 64 + 400; pos += 7) {
    std::string b = bytes;
    b[pos] = static_cast<char>(b[pos] ^ 0x5A);
    WriteFileBytes(path, b);
    failures += !ReadTorchCheckpoint(path).ok();
  }
  for (size_t back = 1; back < 600; back += 5) {
    std::string b = bytes;
    b[b.size() - back] = static_cast<char>(b[b.size() - back] ^ 0xA5);
    WriteFileBytes(path, b);
    failures += !ReadTorchCheckpoint(path).ok();
  }
  EXPECT_GT(failures, 0);
}

TEST(WeightsErrors, WrongShapeAndMissingTensorReportedTogether) {
  ScratchDir dir;
  ModelWeights w = MakeRandomWeights(Tiny(), 1);
  TensorMap m = FlattenWeights(w);
  m.erase("decoder.layers.2.mixer.D");
  m.erase("decoder.final_layernorm.bias");
  m["decoder.layers.0.mixer.in_proj.weight"] =
      HostTensor::FromF32(std::vector<float>(64 * 64), {64, 64});
  ASSERT_TRUE(WriteSafetensors(dir / "model.safetensors", m, DType::kF32).ok());
  WriteFileBytes(dir / "config.json", Tiny().ToJson().dump());
  auto r = LoadModel(dir.path());
  ASSERT_FALSE(r.ok());
  std::string msg = Message(r.status());
  EXPECT_THAT(msg, HasSubstr("3 problems"));
  EXPECT_THAT(msg, HasSubstr("missing tensor decoder.layers.2.mixer.D [128]"));
  EXPECT_THAT(msg, HasSubstr("missing tensor decoder.final_layernorm.bias [64]"));
  EXPECT_THAT(msg, HasSubstr("tensor decoder.layers.0.mixer.in_proj.weight has shape [64, 64], "
                             "expected [256, 64]"));
}

TEST(WeightsErrors, BadConfigJson) {
  ScratchDir dir;
  ASSERT_TRUE(MakeModel(Tiny(), {}, dir.path()).ok());
  WriteFileBytes(dir / "config.json", "{\"num_layers\": 4,");
  auto r = LoadModel(dir.path());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Message(r.status()), HasSubstr("config.json: not valid JSON"));
}

TEST(WeightsErrors, BadSafetensorsHeaderJson) {
  ScratchDir dir;
  WriteFileBytes(dir / "a.safetensors", SafetensorsBytes("{\"w\": {\"dtype\": ", 16));
  EXPECT_THAT(Message(ReadSafetensors(dir / "a.safetensors").status()),
              HasSubstr("header is not valid JSON"));
  WriteFileBytes(dir / "b.safetensors", SafetensorsBytes("[1, 2]", 0));
  EXPECT_THAT(Message(ReadSafetensors(dir / "b.safetensors").status()),
              HasSubstr("header JSON must be an object"));
  WriteFileBytes(dir / "c.safetensors",
                 SafetensorsBytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8));
  EXPECT_THAT(Message(ReadSafetensors(dir / "c.safetensors").status()),
              HasSubstr("tensor 'w': 'data_offsets' must be [begin, end]"));
}

TEST(WeightsErrors, UnsupportedDType) {
  ScratchDir dir;
  WriteFileBytes(
      dir / "a.safetensors",
      SafetensorsBytes(R"({"pos_ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})", 16));
  EXPECT_THAT(Message(ReadSafetensors(dir / "a.safetensors").status()),
              HasSubstr("tensor 'pos_ids': unsupported dtype 'I64' (supported: F32, BF16, F16)"));
  WriteFileBytes(dir / "b.safetensors",
                 SafetensorsBytes(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8));
  EXPECT_THAT(Message(ReadSafetensors(dir / "b.safetensors").status()),
              HasSubstr("tensor 'w': unsupported dtype 'F64'"));
}

TEST(WeightsErrors, CorruptSafetensorsOffsets) {
  ScratchDir dir;
  std::string p = dir / "x.safetensors";
  WriteFileBytes(
      p,
      SafetensorsBytes(
          R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
          16));
  EXPECT_THAT(Message(ReadSafetensors(p).status()), HasSubstr("tensors 'a' and 'b' overlap"));
  WriteFileBytes(
      p, SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})", 16));
  EXPECT_THAT(Message(ReadSafetensors(p).status()),
              HasSubstr("data_offsets span 12 bytes but shape [4] of F32 needs 16"));
  WriteFileBytes(
      p, SafetensorsBytes(R"({"a":{"dtype":"BF16","shape":[4],"data_offsets":[1000000,1000008]}})",
                          16));
  EXPECT_THAT(Message(ReadSafetensors(p).status()), HasSubstr("run past the data area of 16"));
  WriteFileBytes(
      p, SafetensorsBytes(R"({"a":{"dtype":"F16","shape":[-4],"data_offsets":[0,8]}})", 16));
  EXPECT_THAT(Message(ReadSafetensors(p).status()), HasSubstr("non-negative integers"));
  WriteFileBytes(
      p, SafetensorsBytes(
             R"({"a":{"dtype":"F16","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 16));
  EXPECT_THAT(Message(ReadSafetensors(p).status()), HasSubstr("shape too large"));
}

TEST(WeightsErrors, ShardIndexProblems) {
  ScratchDir dir;
  ASSERT_TRUE(MakeModel(Tiny(), {.shard_bytes = 200000}, dir.path()).ok());
  std::string index = ReadFileBytes(dir / "model.safetensors.index.json");
  nlohmann::json j = nlohmann::json::parse(index);
  j["weight_map"]["decoder.final_layernorm.bias"] = "../model-00001-of-00009.safetensors";
  WriteFileBytes(dir / "model.safetensors.index.json", j.dump());
  EXPECT_THAT(Message(LoadModel(dir.path()).status()), HasSubstr("must be a plain file name"));
  j["weight_map"]["decoder.final_layernorm.bias"] =
      j["weight_map"]["embedding.word_embeddings.weight"];
  j["weight_map"]["not.in.any.shard"] = j["weight_map"]["embedding.word_embeddings.weight"];
  WriteFileBytes(dir / "model.safetensors.index.json", j.dump());
  EXPECT_THAT(Message(LoadModel(dir.path()).status()),
              HasSubstr("lacks tensors listed in weight_map: decoder.final_layernorm.bias, "
                        "not.in.any.shard"));
  WriteFileBytes(dir / "model.safetensors.index.json", "{\"weight_map\": 3}");
  EXPECT_THAT(Message(LoadModel(dir.path()).status()), HasSubstr("missing object 'weight_map'"));
}

TEST(WeightsErrors, NoWeightsInDirectory) {
  ScratchDir dir;
  WriteFileBytes(dir / "config.json", Tiny().ToJson().dump());
  EXPECT_THAT(Message(LoadModel(dir.path()).status()), HasSubstr("no weights found"));
  EXPECT_EQ(LoadModel(dir / "nope").status().code(), absl::StatusCode::kNotFound);
}

// A minimal torch-style archive whose data.pkl is `pickle`.
std::string ArchiveWithPickle(const ScratchDir& dir, const std::string& pickle) {
  std::string path = dir / "pytorch_model.bin";
  EXPECT_TRUE(
      WriteStoredZip(path, {{"archive/data.pkl", pickle}, {"archive/version", "3\n"}}).ok());
  return path;
}

TEST(WeightsErrors, PickleWithForeignGlobalIsRejectedNotRun) {
  ScratchDir dir;
  std::string marker = dir / "pwned";
  // {"model": os.system("touch <marker>")} in protocol 2.
  std::string cmd = "touch " + marker;
  std::string pkl = "\x80\x02}X\x05\x00\x00\x00model"s;
  pkl += "cos\nsystem\nX";
  for (int i = 0; i < 4; ++i) pkl.push_back(static_cast<char>((cmd.size() >> (8 * i)) & 0xFF));
  pkl += cmd + "\x85Rs.";
  auto r = ReadTorchCheckpoint(ArchiveWithPickle(dir, pkl));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Message(r.status()), HasSubstr("pickle GLOBAL 'os system' is not allowed"));
  EXPECT_FALSE(std::filesystem::exists(marker));

  // torch.storage._load_from_bytes (which would unpickle arbitrary bytes) is not allowed either.
  r = ReadTorchCheckpoint(ArchiveWithPickle(dir,
                                            "\x80\x02"
                                            "ctorch.storage\n_load_from_bytes\n."));
  EXPECT_THAT(Message(r.status()),
              HasSubstr("pickle GLOBAL 'torch.storage _load_from_bytes' is not allowed"));
  // Protocol-4 STACK_GLOBAL goes through the same whitelist.
  r = ReadTorchCheckpoint(
      ArchiveWithPickle(dir, "\x80\x04\x8c\x08"s + "builtins" + "\x8c\x04" + "eval" + "\x93."));
  EXPECT_THAT(Message(r.status()), HasSubstr("pickle GLOBAL 'builtins eval' is not allowed"));
}

TEST(WeightsErrors, MalformedPickles) {
  ScratchDir dir;
  EXPECT_THAT(Message(ReadTorchCheckpoint(ArchiveWithPickle(dir, "\x80\x02}X\x05\x00"s)).status()),
              HasSubstr("truncated"));
  EXPECT_THAT(Message(ReadTorchCheckpoint(ArchiveWithPickle(dir, "\x80\x02}0.")).status()),
              HasSubstr("unsupported pickle opcode 0x30"));
  EXPECT_THAT(Message(ReadTorchCheckpoint(ArchiveWithPickle(dir, "\x80\x02s.")).status()),
              HasSubstr("stack underflow"));
  EXPECT_THAT(Message(ReadTorchCheckpoint(ArchiveWithPickle(dir, "\x80\x02h\x07.")).status()),
              HasSubstr("memo key 7 missing"));
  EXPECT_THAT(Message(ReadTorchCheckpoint(ArchiveWithPickle(dir, "\x80\x02K\x01.")).status()),
              HasSubstr("not a dict of tensors"));
}

// data.pkl of {"model": {"w": <tensor>}} with every integer as an 8-byte LONG1.
std::string TensorPickle(const std::string& storage_type, int64_t storage_numel, int64_t offset,
                         const std::vector<int64_t>& shape, const std::vector<int64_t>& stride) {
  auto num = [](int64_t v) {
    std::string b = "\x8a\x08"s;
    for (int i = 0; i < 8; ++i)
      b.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xFF));
    return b;
  };
  auto str = [](const std::string& v) {
    std::string b = "X";
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<char>((v.size() >> (8 * i)) & 0xFF));
    return b + v;
  };
  std::string p = "\x80\x02}"s + str("model") + "}" + str("w");
  p += "ctorch._utils\n_rebuild_tensor_v2\n((" + str("storage") + "ctorch\n" + storage_type + "\n";
  p += str("0") + str("cpu") + num(storage_numel) + "tQ" + num(offset) + "(";
  for (int64_t v : shape) p += num(v);
  p += "t(";
  for (int64_t v : stride) p += num(v);
  p += "t\x89"
       "ccollections\nOrderedDict\n)RtRss.";
  return p;
}

TEST(WeightsErrors, BadTensorViewsInPickle) {
  ScratchDir dir;
  std::string path = dir / "pytorch_model.bin";
  std::string storage;  // 16 floats 0..15
  for (int i = 0; i < 16; ++i) {
    float f = static_cast<float>(i);
    storage.append(reinterpret_cast<const char*>(&f), 4);
  }
  auto read = [&](const std::string& pkl) {
    EXPECT_TRUE(WriteStoredZip(path, {{"a/data.pkl", pkl}, {"a/data/0", storage}}).ok());
    return ReadTorchCheckpoint(path);
  };
  auto ok = read(TensorPickle("FloatStorage", 16, 4, {3, 4}, {4, 1}));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->at("w").shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(ok->at("w").At(0), 4.0f);  // storage offset 4
  EXPECT_EQ(ok->at("w").At(11), 15.0f);
  EXPECT_THAT(Message(read(TensorPickle("FloatStorage", int64_t{1} << 62, 0, {4}, {1})).status()),
              HasSubstr("(truncated)"));
  EXPECT_THAT(Message(read(TensorPickle("FloatStorage", 16, 8, {3, 4}, {4, 1})).status()),
              HasSubstr("storage offset 8 + 12 elements exceed its storage of 16"));
  EXPECT_THAT(Message(read(TensorPickle("FloatStorage", 16, -1, {4}, {1})).status()),
              HasSubstr("storage offset -1"));
  EXPECT_THAT(Message(read(TensorPickle("FloatStorage", 16, 0, {4, 4}, {1, 4})).status()),
              HasSubstr("tensor 'w': is not contiguous"));
  EXPECT_THAT(Message(read(TensorPickle("LongStorage", 8, 0, {8}, {1})).status()),
              HasSubstr("pickle GLOBAL 'torch LongStorage' is not allowed"));
  EXPECT_THAT(Message(read(TensorPickle("FloatStorage", 16, 0, {4, -4}, {1, 1})).status()),
              HasSubstr("bad shape"));
}

TEST(WeightsErrors, CompressedZipEntry) {
  ScratchDir dir;
  ASSERT_TRUE(MakeModel(Tiny(), {.format = CheckpointFormat::kTorch}, dir.path()).ok());
  std::string path = dir / "pytorch_model.bin";
  std::string b = ReadFileBytes(path);
  // Mark the central directory entry of data.pkl as deflated (method 8).
  size_t cd = b.find(std::string("PK\x01\x02", 4));
  ASSERT_NE(cd, std::string::npos);
  ASSERT_EQ(b.substr(cd + 46, 16), "archive/data.pkl");
  b[cd + 10] = 8;
  WriteFileBytes(path, b);
  auto r = LoadModel(dir.path());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Message(r.status()),
              HasSubstr("zip entry 'archive/data.pkl' is compressed (method 8); only stored"));
}

TEST(WeightsErrors, MakeModelRefusesToMixLayouts) {
  ScratchDir dir;
  ASSERT_TRUE(MakeModel(Tiny(), {}, dir.path()).ok());
  absl::Status s = MakeModel(Tiny(), {.format = CheckpointFormat::kTorch}, dir.path());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(s), HasSubstr("already holds model.safetensors"));
  EXPECT_THAT(Message(ParseDType("fp8").status()), HasSubstr("unknown dtype 'fp8'"));
  EXPECT_THAT(Message(ParseCheckpointFormat("gguf").status()),
              HasSubstr("unknown checkpoint format"));
}

}  // namespace
}  // namespace bms
