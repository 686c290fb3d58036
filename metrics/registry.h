// Registry: a small Prometheus metrics registry. Metric families (counters, gauges, histograms,
// each with a fixed list of label names) are registered once at start-up; children (one per
// label-value combination) are created on first use and live as long as the registry, so a
// caller may cache the pointer a family hands out and update it lock-free on the hot path.
// Func families compute their samples at scrape time (values the engine already counts,
// process statistics). Render() writes the Prometheus text exposition format 0.0.4.
//
// Thread-safety: every method is thread-safe. Registration and child lookup take a mutex;
// updates of a cached child never do (metrics/metric_types.h).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "metrics/metric_types.h"

namespace bms::metrics {

// The Content-Type of Render()'s output.
inline constexpr char kTextContentType[] = "text/plain; version=0.0.4; charset=utf-8";

enum class MetricType { kCounter, kGauge, kHistogram };
const char* MetricTypeName(MetricType type);  // "counter", "gauge", "histogram"

// One family of metrics sharing a name, help text and label names.
template <typename T>
class Family {
 public:
  // The child for these label values (in the order of the family's label names), created on
  // first use. A wrong number of values is a programmer error: it returns a detached child that
  // is never rendered (so a bug drops samples instead of crashing the server).
  T* WithLabels(const std::vector<std::string>& values);
  // The unlabelled child (for a family with no label names).
  T* Get() { return WithLabels({}); }

  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

 private:
  friend class Registry;
  Family(std::string name, std::vector<std::string> label_names,
         std::function<std::unique_ptr<T>()> make)
      : name_(std::move(name)), label_names_(std::move(label_names)), make_(std::move(make)) {}
  // Calls fn(label_values, child) for every child in label-value order, under the lock.
  template <typename Fn>
  void ForEach(Fn fn) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [values, child] : children_) fn(values, *child);
  }

  const std::string name_;
  const std::vector<std::string> label_names_;
  const std::function<std::unique_ptr<T>()> make_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_;
  std::unique_ptr<T> detached_;
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// A sample produced at scrape time: label values (in label-name order) and the value.
struct FuncSample {
  std::vector<std::string> label_values;
  double value = 0;
};
using SampleFunc = std::function<std::vector<FuncSample>()>;

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registers a family. InvalidArgument for a malformed metric or label name (Prometheus rules:
  // [a-zA-Z_:][a-zA-Z0-9_:]* and [a-zA-Z_][a-zA-Z0-9_]* not starting with "__"; "le" is
  // reserved for histograms), unsorted/non-finite buckets, or a counter whose name does not end
  // in "_total"; AlreadyExists for a name registered before. The family lives as long as the
  // registry.
  absl::StatusOr<CounterFamily*> AddCounter(const std::string& name, const std::string& help,
                                            std::vector<std::string> label_names = {});
  absl::StatusOr<GaugeFamily*> AddGauge(const std::string& name, const std::string& help,
                                        std::vector<std::string> label_names = {});
  absl::StatusOr<HistogramFamily*> AddHistogram(const std::string& name, const std::string& help,
                                                std::vector<std::string> label_names,
                                                std::vector<double> bounds);
  // A counter or gauge family whose samples `fn` produces at every Render(). `fn` runs on the
  // scraping thread without the registry's lock held and must be thread-safe. Samples whose
  // label-value count does not match are dropped.
  absl::Status AddCounterFunc(const std::string& name, const std::string& help,
                              std::vector<std::string> label_names, SampleFunc fn);
  absl::Status AddGaugeFunc(const std::string& name, const std::string& help,
                            std::vector<std::string> label_names, SampleFunc fn);

  // The whole registry in the Prometheus text format 0.0.4, families in registration order,
  // children sorted by label values. Families with no children yet render only HELP and TYPE.
  std::string Render() const;

 private:
  struct Entry {
    std::string name;
    std::string help;
    MetricType type;
    std::vector<std::string> label_names;
    std::unique_ptr<CounterFamily> counter;
    std::unique_ptr<GaugeFamily> gauge;
    std::unique_ptr<HistogramFamily> histogram;
    SampleFunc func;  // set for func families
  };
  absl::Status Validate(const std::string& name, MetricType type,
                        const std::vector<std::string>& label_names) const;  // under mu_
  absl::StatusOr<Entry*> Add(const std::string& name, const std::string& help, MetricType type,
                             std::vector<std::string> label_names);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Entry>> entries_;
};

// ---- implementation of the template ----

template <typename T>
T* Family<T>::WithLabels(const std::vector<std::string>& values) {
  std::lock_guard<std::mutex> lock(mu_);
  if (values.size() != label_names_.size()) {
    if (!detached_) detached_ = make_();
    return detached_.get();
  }
  auto it = children_.find(values);
  if (it == children_.end()) it = children_.emplace(values, make_()).first;
  return it->second.get();
}

}  // namespace bms::metrics
