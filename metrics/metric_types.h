// Metric value types for the bmserve metrics registry (metrics/registry.h): Counter, Gauge and
// Histogram. These are the hot-path objects: every update is a handful of relaxed atomic
// operations, no lock and no allocation, so the engine thread and the network threads can
// update them per token. All methods are thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

namespace bms::metrics {

// A monotonically increasing value (Prometheus "counter").
class Counter {
 public:
  // Adds `v`. Negative or NaN values are ignored: a counter never goes down.
  void Increment(double v = 1.0) {
    if (!(v > 0)) return;
    value_.fetch_add(v, std::memory_order_relaxed);
  }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that can go up and down (Prometheus "gauge").
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Increment(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }
  void Decrement(double v = 1.0) { value_.fetch_sub(v, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A histogram with fixed bucket upper bounds (Prometheus "histogram"). Bucket i counts the
// observations v with bounds[i-1] < v <= bounds[i]; one extra bucket holds v > bounds.back()
// (the "+Inf" bucket). Counts are stored per bucket and made cumulative when rendered.
class Histogram {
 public:
  // `bounds` must be finite and strictly increasing (Registry validates it before construction).
  explicit Histogram(std::vector<double> bounds);

  // Records one observation. NaN is ignored (it would poison the sum forever).
  void Observe(double v);

  struct Snapshot {
    std::vector<double> bounds;               // [n_buckets] finite upper bounds
    std::vector<uint64_t> cumulative_counts;  // [n_buckets + 1]; the last one is +Inf == count
    double sum = 0;
    uint64_t count = 0;
  };
  // A consistent-enough view for rendering: count is derived from the bucket counts, so the
  // +Inf bucket always equals _count even while other threads observe concurrently.
  Snapshot Read() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  std::vector<std::atomic<uint64_t>> counts_;  // [n_buckets + 1]
  std::atomic<double> sum_{0.0};
};

// Bucket helpers.
// `count` bounds starting at `start`, each `factor` times the previous one (start > 0, factor > 1).
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// `count` bounds starting at `start`, each `width` more than the previous one (width > 0).
std::vector<double> LinearBuckets(double start, double width, int count);

}  // namespace bms::metrics
