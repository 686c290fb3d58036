// Deterministic random BlackMamba weights (MakeRandomTensor / MakeRandomWeights): Mamba-style
// initialisation with projections scaled by 1/sqrt(fan_in) (residual-branch outputs with a gain),
// so that the layers (not the input embedding) dominate the residual stream and greedy output
// varies.
#include <algorithm>
#include <cmath>
#include <string_view>
#include <thread>

#include "engine/model_weights.h"

namespace bms {
namespace {

// Gain of the projections that write into the residual stream (Mamba out_proj, MLP fc2).
// Every block reads an RMS-normalised input, so this only sets the size of the layers' outputs
// relative to the input embedding (std 1/sqrt(d_model)): with gain 1 the tied head keeps
// predicting the token just fed in (greedy runs like "21 21 21 21"); with 4 the layers dominate
// the residual stream while the logits keep std ~1.
constexpr double kResidualGain = 4.0;

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
  // Fills [out, out + n) with N(0, std^2) values (Box-Muller, both outputs used).
  void Normal(double std, float* out, size_t n) {
    const double kTwoPi = 6.283185307179586;
    for (size_t i = 0; i < n; i += 2) {
      double r = std * std::sqrt(-2.0 * std::log(Uniform()));
      double theta = kTwoPi * Uniform();
      out[i] = static_cast<float>(r * std::cos(theta));
      if (i + 1 < n) out[i + 1] = static_cast<float>(r * std::sin(theta));
    }
  }

 private:
  uint64_t state_;
};

// Fills `v` block by block, each block from its own generator seeded by (seed, block index), so
// the values do not depend on the thread count; large tensors use all hardware threads.
template <typename F>  // F(Rng&, float* begin, size_t n)
void FillRandom(std::vector<float>* v, uint64_t seed, F&& fill) {
  constexpr size_t kBlock = size_t{1} << 16;
  const size_t n_blocks = (v->size() + kBlock - 1) / kBlock;
  auto run = [&](size_t first, size_t step) {
    for (size_t b = first; b < n_blocks; b += step) {
      uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (b + 1));
      Rng rng(SplitMix64(&s));
      size_t begin = b * kBlock;
      fill(rng, v->data() + begin, std::min(kBlock, v->size() - begin));
    }
  };
  size_t n_threads = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), 32);
  n_threads = std::min(n_threads, n_blocks / 4);
  if (n_threads <= 1) {
    run(0, 1);
    return;
  }
  std::vector<std::thread> threads;
  for (size_t t = 0; t < n_threads; ++t) threads.emplace_back(run, t, n_threads);
  for (std::thread& t : threads) t.join();
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

HostTensor MakeRandomTensor(const ModelConfig& config, const ExpectedTensor& spec, uint64_t seed) {
  int64_t numel = 1;
  for (int64_t s : spec.shape) numel *= s;
  std::vector<float> v(static_cast<size_t>(numel));
  uint64_t mix = seed ^ Fnv1a(spec.name);
  const uint64_t tensor_seed = SplitMix64(&mix);
  const std::string_view name = spec.name;
  const int64_t fan_in = spec.shape.size() >= 2 ? spec.shape.back() : 1;
  auto normal = [&](double std) {
    FillRandom(&v, tensor_seed, [std](Rng& rng, float* p, size_t n) { rng.Normal(std, p, n); });
  };

  if (name == "embedding.word_embeddings.weight") {
    // Tied head: logits = layernorm(residual) . E[j]; std 1/sqrt(d) gives logits of std ~1 and
    // keeps the input embedding small next to the layer outputs in the residual stream.
    normal(1.0 / std::sqrt(static_cast<double>(config.d_model)));
  } else if (EndsWith(name, "norm.weight") || EndsWith(name, ".D")) {
    std::fill(v.begin(), v.end(), 1.0f);
  } else if (name == "decoder.final_layernorm.bias") {
    std::fill(v.begin(), v.end(), 0.0f);
  } else if (EndsWith(name, ".A_log")) {
    // [d_inner, d_state]: A = -(1..d_state) per row, as Mamba initialises it.
    const int64_t n = spec.shape.back();
    for (int64_t i = 0; i < numel; ++i) v[i] = std::log(static_cast<float>(i % n + 1));
  } else if (EndsWith(name, "conv1d.weight") || EndsWith(name, "conv1d.bias")) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(config.d_conv));
    FillRandom(&v, tensor_seed, [bound](Rng& rng, float* p, size_t n) {
      for (size_t i = 0; i < n; ++i) p[i] = static_cast<float>((2.0 * rng.Uniform() - 1.0) * bound);
    });
  } else if (EndsWith(name, "dt_proj.bias")) {
    // dt ~ log-uniform in [1e-3, 1e-1]; bias = softplus^-1(dt) = dt + log(-expm1(-dt)).
    FillRandom(&v, tensor_seed, [](Rng& rng, float* p, size_t n) {
      const double lo = std::log(1e-3), hi = std::log(1e-1);
      for (size_t i = 0; i < n; ++i) {
        double dt = std::max(std::exp(lo + (hi - lo) * rng.Uniform()), 1e-4);
        p[i] = static_cast<float>(dt + std::log(-std::expm1(-dt)));
      }
    });
  } else if (EndsWith(name, ".bias")) {
    normal(0.02);  // router bias and (with add_bias_linear) projection biases
  } else {
    // Projections [out, in]: N(0, 1/fan_in); the residual-branch outputs times kResidualGain.
    const bool residual_branch =
        EndsWith(name, "out_proj.weight") || EndsWith(name, "linear_fc2.weight");
    normal((residual_branch ? kResidualGain : 1.0) / std::sqrt(static_cast<double>(fan_in)));
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
