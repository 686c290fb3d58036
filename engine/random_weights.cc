// Deterministic random BlackMamba weights (MakeRandomTensor / MakeRandomWeights): Mamba-style
// initialisation with projections scaled by 1/sqrt(fan_in), so that the layers (not the input
// embedding) dominate the residual stream and greedy output varies.
#include <cmath>
#include <string_view>

#include "engine/model_weights.h"

namespace bms {
namespace {

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (char ch : s) h = (h ^ static_cast<uint8_t>(ch)) * 0x100000001B3ull;
  return h;
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  // Uniform in (0, 1): 53 random bits, never 0.
  double Uniform() { return (static_cast<double>(SplitMix64(&state_) >> 11) + 0.5) * 0x1.0p-53; }
  // Fills out with N(0, std^2) values (Box-Muller, both outputs used).
  void Normal(float std, std::vector<float>* out) {
    const double kTwoPi = 6.283185307179586;
    for (size_t i = 0; i < out->size(); i += 2) {
      double r = std * std::sqrt(-2.0 * std::log(Uniform()));
      double theta = kTwoPi * Uniform();
      (*out)[i] = static_cast<float>(r * std::cos(theta));
      if (i + 1 < out->size()) (*out)[i + 1] = static_cast<float>(r * std::sin(theta));
    }
  }

 private:
  uint64_t state_;
};

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

HostTensor MakeRandomTensor(const ModelConfig& config, const ExpectedTensor& spec, uint64_t seed) {
  int64_t numel = 1;
  for (int64_t s : spec.shape) numel *= s;
  std::vector<float> v(static_cast<size_t>(numel));
  uint64_t mix = seed ^ Fnv1a(spec.name);
  Rng rng(SplitMix64(&mix));
  const std::string_view name = spec.name;
  const int64_t fan_in = spec.shape.size() >= 2 ? spec.shape.back() : 1;

  if (name == "embedding.word_embeddings.weight") {
    // Tied head: logits = layernorm(residual) . E[j]; std 1/sqrt(d) gives logits of std ~1 and
    // keeps the input embedding small next to the layer outputs in the residual stream.
    rng.Normal(static_cast<float>(1.0 / std::sqrt(static_cast<double>(config.d_model))), &v);
  } else if (EndsWith(name, "norm.weight") || name == "decoder.final_layernorm.weight" ||
             EndsWith(name, ".D")) {
    std::fill(v.begin(), v.end(), 1.0f);
  } else if (name == "decoder.final_layernorm.bias") {
    std::fill(v.begin(), v.end(), 0.0f);
  } else if (EndsWith(name, ".A_log")) {
    // [d_inner, d_state]: A = -(1..d_state) per row, as Mamba initialises it.
    const int64_t n = spec.shape.back();
    for (int64_t i = 0; i < numel; ++i) v[i] = std::log(static_cast<float>(i % n + 1));
  } else if (EndsWith(name, "conv1d.weight") || EndsWith(name, "conv1d.bias")) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(config.d_conv));
    for (float& x : v) x = static_cast<float>((2.0 * rng.Uniform() - 1.0) * bound);
  } else if (EndsWith(name, "dt_proj.bias")) {
    // dt ~ log-uniform in [1e-3, 1e-1]; bias = softplus^-1(dt) = dt + log(-expm1(-dt)).
    const double lo = std::log(1e-3), hi = std::log(1e-1);
    for (float& x : v) {
      double dt = std::max(std::exp(lo + (hi - lo) * rng.Uniform()), 1e-4);
      x = static_cast<float>(dt + std::log(-std::expm1(-dt)));
    }
  } else if (EndsWith(name, ".bias")) {
    rng.Normal(0.02f, &v);  // router bias and (with add_bias_linear) projection biases
  } else {
    // Projections [out, in]: N(0, 1/fan_in).
    rng.Normal(static_cast<float>(1.0 / std::sqrt(static_cast<double>(fan_in))), &v);
  }
  return HostTensor::FromF32(std::move(v), spec.shape);
}

ModelWeights MakeRandomWeights(const ModelConfig& config, uint64_t seed) {
  TensorMap tensors;
  for (const ExpectedTensor& e : ExpectedTensors(config)) {
    tensors[e.name] = MakeRandomTensor(config, e, seed);
  }
  // Every expected tensor is present with its shape, so binding cannot fail.
  return *BindWeights(config, tensors);
}

}  // namespace bms
