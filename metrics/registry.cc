#include "metrics/registry.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "metrics/text_format.h"

namespace bms::metrics {

const char* MetricTypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

absl::Status Registry::Validate(const std::string& name, MetricType type,
                                const std::vector<std::string>& label_names) const {
  if (!IsValidMetricName(name)) {
    return absl::InvalidArgumentError(absl::StrCat("metric name '", name, "' is not valid"));
  }
  if (type == MetricType::kCounter &&
      (name.size() < 6 || name.compare(name.size() - 6, 6, "_total") != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("counter '", name, "' must end in _total"));
  }
  for (size_t i = 0; i < label_names.size(); ++i) {
    const std::string& l = label_names[i];
    if (!IsValidLabelName(l)) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric '", name, "': label name '", l, "' is not valid"));
    }
    if (type == MetricType::kHistogram && l == "le") {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram '", name, "': label name 'le' is reserved"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (label_names[j] == l) {
        return absl::InvalidArgumentError(
            absl::StrCat("metric '", name, "': label name '", l, "' repeats"));
      }
    }
  }
  // Names a histogram family renders must not collide with another family either.
  auto clashes = [&](const std::string& a, MetricType ta, const std::string& b, MetricType tb) {
    if (a == b) return true;
    if (ta == MetricType::kHistogram) {
      for (const char* s : {"_bucket", "_sum", "_count"}) {
        if (absl::StrCat(a, s) == b) return true;
      }
    }
    if (tb == MetricType::kHistogram) {
      for (const char* s : {"_bucket", "_sum", "_count"}) {
        if (absl::StrCat(b, s) == a) return true;
      }
    }
    return false;
  };
  for (const auto& e : entries_) {
    if (clashes(name, type, e->name, e->type)) {
      return absl::AlreadyExistsError(
          absl::StrCat("metric '", name, "' clashes with the registered '", e->name, "'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Registry::Entry*> Registry::Add(const std::string& name, const std::string& help,
                                               MetricType type,
                                               std::vector<std::string> label_names) {
  if (auto s = Validate(name, type, label_names); !s.ok()) return s;
  auto e = std::make_unique<Entry>();
  e->name = name;
  e->help = help;
  e->type = type;
  e->label_names = std::move(label_names);
  entries_.push_back(std::move(e));
  return entries_.back().get();
}

absl::StatusOr<CounterFamily*> Registry::AddCounter(const std::string& name,
                                                    const std::string& help,
                                                    std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  auto e = Add(name, help, MetricType::kCounter, std::move(label_names));
  if (!e.ok()) return e.status();
  (*e)->counter.reset(
      new CounterFamily(name, (*e)->label_names, [] { return std::make_unique<Counter>(); }));
  return (*e)->counter.get();
}

absl::StatusOr<GaugeFamily*> Registry::AddGauge(const std::string& name, const std::string& help,
                                                std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  auto e = Add(name, help, MetricType::kGauge, std::move(label_names));
  if (!e.ok()) return e.status();
  (*e)->gauge.reset(
      new GaugeFamily(name, (*e)->label_names, [] { return std::make_unique<Gauge>(); }));
  return (*e)->gauge.get();
}

absl::StatusOr<HistogramFamily*> Registry::AddHistogram(const std::string& name,
                                                        const std::string& help,
                                                        std::vector<std::string> label_names,
                                                        std::vector<double> bounds) {
  if (bounds.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("histogram '", name, "': no buckets"));
  }
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "histogram '", name, "': bucket bounds must be finite and strictly increasing"));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto e = Add(name, help, MetricType::kHistogram, std::move(label_names));
  if (!e.ok()) return e.status();
  (*e)->histogram.reset(new HistogramFamily(
      name, (*e)->label_names, [bounds] { return std::make_unique<Histogram>(bounds); }));
  return (*e)->histogram.get();
}

absl::Status Registry::AddCounterFunc(const std::string& name, const std::string& help,
                                      std::vector<std::string> label_names, SampleFunc fn) {
  std::lock_guard<std::mutex> lock(mu_);
  auto e = Add(name, help, MetricType::kCounter, std::move(label_names));
  if (!e.ok()) return e.status();
  (*e)->func = std::move(fn);
  return absl::OkStatus();
}

absl::Status Registry::AddGaugeFunc(const std::string& name, const std::string& help,
                                    std::vector<std::string> label_names, SampleFunc fn) {
  std::lock_guard<std::mutex> lock(mu_);
  auto e = Add(name, help, MetricType::kGauge, std::move(label_names));
  if (!e.ok()) return e.status();
  (*e)->func = std::move(fn);
  return absl::OkStatus();
}

namespace {

void AppendSample(std::string* out, const std::string& name, const std::string& labels,
                  double value) {
  absl::StrAppend(out, name, labels, " ", FormatValue(value), "\n");
}

}  // namespace

std::string Registry::Render() const {
  // Entries are never removed, so pointers taken under the lock stay valid; sample functions
  // run without it (they may be slow, e.g. reading /proc).
  std::vector<const Entry*> entries;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : entries_) entries.push_back(e.get());
  }
  std::string out;
  for (const Entry* e : entries) {
    absl::StrAppend(&out, "# HELP ", e->name, " ", EscapeHelp(e->help), "\n# TYPE ", e->name, " ",
                    MetricTypeName(e->type), "\n");
    if (e->func) {
      std::vector<FuncSample> samples = e->func();
      std::sort(samples.begin(), samples.end(), [](const FuncSample& a, const FuncSample& b) {
        return a.label_values < b.label_values;
      });
      for (const FuncSample& s : samples) {
        if (s.label_values.size() != e->label_names.size()) continue;
        AppendSample(&out, e->name, FormatLabels(e->label_names, s.label_values), s.value);
      }
    } else if (e->counter) {
      e->counter->ForEach([&](const std::vector<std::string>& values, const Counter& c) {
        AppendSample(&out, e->name, FormatLabels(e->label_names, values), c.Value());
      });
    } else if (e->gauge) {
      e->gauge->ForEach([&](const std::vector<std::string>& values, const Gauge& g) {
        AppendSample(&out, e->name, FormatLabels(e->label_names, values), g.Value());
      });
    } else if (e->histogram) {
      e->histogram->ForEach([&](const std::vector<std::string>& values, const Histogram& h) {
        const Histogram::Snapshot s = h.Read();
        const std::string bucket = e->name + "_bucket";
        for (size_t i = 0; i < s.bounds.size(); ++i) {
          AppendSample(&out, bucket,
                       FormatLabels(e->label_names, values, {"le", FormatValue(s.bounds[i])}),
                       static_cast<double>(s.cumulative_counts[i]));
        }
        AppendSample(&out, bucket, FormatLabels(e->label_names, values, {"le", "+Inf"}),
                     static_cast<double>(s.count));
        const std::string labels = FormatLabels(e->label_names, values);
        AppendSample(&out, e->name + "_sum", labels, s.sum);
        AppendSample(&out, e->name + "_count", labels, static_cast<double>(s.count));
      });
    }
  }
  return out;
}

}  // namespace bms::metrics
