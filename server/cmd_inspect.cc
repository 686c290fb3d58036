// `bmserve inspect`: lists a model directory's checkpoint tensors (name, dtype, shape) and
// validates them against its config.json; prints every problem and exits 1 if there is any.
#include <cstdio>
#include <set>

#include "absl/strings/str_cat.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"
#include "server/commands.h"
#include "server/flags.h"

namespace bms {

int InspectCommand(const Args& args) {
  std::string model_dir;
  bool quiet = false;
  FlagSet flags("inspect");
  flags.String("model", &model_dir, "model directory (config.json + weights)");
  flags.Bool("quiet", &quiet, "print only the summary and problems, not every tensor");
  absl::Status s = flags.Parse(args);
  if (!s.ok()) {
    std::fprintf(stderr, "inspect: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (flags.help_requested()) {
    std::printf("%s", flags.Usage().c_str());
    return 0;
  }
  if (model_dir.empty()) {
    std::fprintf(stderr, "inspect: --model is required\n");
    return 2;
  }

  std::vector<std::string> problems;
  std::string format;
  auto tensors = ReadCheckpointTensors(model_dir, &format);
  if (!tensors.ok()) {
    problems.push_back(std::string(tensors.status().message()));
  } else {
    std::printf("%s: %s, %zu tensors\n", model_dir.c_str(), format.c_str(), tensors->size());
    long long params = 0, bytes = 0;
    for (const auto& [name, t] : *tensors) {
      if (!quiet) {
        std::printf("  %-60s %-5s %s\n", name.c_str(), DTypeName(t.dtype), t.ShapeString().c_str());
      }
      params += t.numel();
      bytes += static_cast<long long>(t.nbytes());
    }
    std::printf("total: %lld params, %lld bytes\n", params, bytes);
  }

  auto config = ModelConfig::FromFile(model_dir + "/config.json");
  if (!config.ok()) {
    problems.push_back(std::string(config.status().message()));
  } else {
    std::printf(
        "config: %d layers (%d mamba, %d moe x %d experts), d_model %d, d_inner %d, "
        "d_state %d, vocab %d, %.1fM params (%.1fM active)\n",
        config->num_layers, config->num_mamba_layers(), config->num_moe_layers(), config->n_experts,
        config->d_model, config->d_inner(), config->d_state, config->vocab_size,
        config->TotalParams() / 1e6, config->ActiveParams() / 1e6);
    if (tensors.ok()) {
      for (std::string& p : CheckTensors(*config, *tensors)) problems.push_back(std::move(p));
      std::set<std::string> expected;
      for (const ExpectedTensor& e : ExpectedTensors(*config)) expected.insert(e.name);
      for (const auto& [name, t] : *tensors) {
        if (!expected.count(name)) {
          std::printf("note: tensor %s is not used by this config\n", name.c_str());
        }
      }
    }
  }
  if (problems.empty()) {
    std::printf("OK: the checkpoint matches config.json\n");
    return 0;
  }
  std::printf("%zu problem%s:\n", problems.size(), problems.size() == 1 ? "" : "s");
  for (const std::string& p : problems) std::printf("  %s\n", p.c_str());
  return 1;
}

}  // namespace bms
