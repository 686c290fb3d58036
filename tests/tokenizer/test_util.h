// Shared helpers for the tokenizer tests: locating BMS_SHARED_DIR assets and loading the
// GPT-NeoX-20B tokenizer once per test binary.
#pragma once

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "tokenizer/tokenizer.h"

namespace bms::testing {

inline std::string SharedAsset(const std::string& name) {
  const char* dir = std::getenv("BMS_SHARED_DIR");
  return std::string(dir ? dir : "../shared") + "/assets/" + name;
}

inline std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// The 20B tokenizer, loaded on first use and shared by the tests of one binary.
inline const Tokenizer& NeoX() {
  static const Tokenizer* tokenizer = [] {
    auto t = Tokenizer::FromFile(SharedAsset("20B_tokenizer.json"));
    if (!t.ok()) {
      ADD_FAILURE() << t.status();
      return Tokenizer::ByteFallback().release();
    }
    return t->release();
  }();
  return *tokenizer;
}

}  // namespace bms::testing
