#include "base/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace muster::metrics {

void Counter::inc(double v) {
  double cur = v_.load();
  while (!v_.compare_exchange_weak(cur, cur + v)) {
  }
}
double Counter::value() const { return v_.load(); }

void Gauge::add(double v) {
  double cur = v_.load();
  while (!v_.compare_exchange_weak(cur, cur + v)) {
  }
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  auto i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                    bounds_.begin());
  std::lock_guard lock(mu_);
  ++counts_[i];
  sum_ += v;
  ++count_;
}

Histogram::Snapshot Histogram::snapshot() const {
  std::lock_guard lock(mu_);
  Snapshot s;
  s.bounds = bounds_;
  uint64_t run = 0;
  for (auto c : counts_) {
    run += c;
    s.cumulative.push_back(run);
  }
  s.sum = sum_;
  s.count = count_;
  return s;
}

std::vector<double> exponential_buckets(double start, double factor, int count) {
  std::vector<double> b;
  for (int i = 0; i < count; ++i) b.push_back(start * std::pow(factor, i));
  return b;
}

Registry::Family& Registry::family(const std::string& name, const std::string& help,
                                   const char* type) {
  auto& f = families_[name];
  if (f.type.empty()) {
    f.help = help;
    f.type = type;
  }
  return f;
}

Counter& Registry::counter(const std::string& name, const std::string& help,
                           const std::string& labels) {
  std::lock_guard lock(mu_);
  auto& slot = family(name, help, "counter").counters[labels];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& Registry::gauge(const std::string& name, const std::string& help,
                       const std::string& labels) {
  std::lock_guard lock(mu_);
  auto& slot = family(name, help, "gauge").gauges[labels];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}

Histogram& Registry::histogram(const std::string& name, const std::string& help,
                               const std::vector<double>& bounds, const std::string& labels) {
  std::lock_guard lock(mu_);
  auto& slot = family(name, help, "histogram").histograms[labels];
  if (!slot) slot = std::make_unique<Histogram>(bounds);
  return *slot;
}

static std::string num(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.15g", v);
  return buf;
}

static std::string braces(const std::string& labels, const std::string& extra = "") {
  std::string inner = labels;
  if (!extra.empty()) inner = inner.empty() ? extra : inner + "," + extra;
  return inner.empty() ? "" : "{" + inner + "}";
}

std::string Registry::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n# TYPE " + name + " " + f.type + "\n";
    for (const auto& [l, c] : f.counters) out += name + braces(l) + " " + num(c->value()) + "\n";
    for (const auto& [l, g] : f.gauges) out += name + braces(l) + " " + num(g->value()) + "\n";
    for (const auto& [l, h] : f.histograms) {
      auto s = h->snapshot();
      for (std::size_t i = 0; i < s.bounds.size(); ++i)
        out += name + "_bucket" + braces(l, "le=\"" + num(s.bounds[i]) + "\"") + " " +
               std::to_string(s.cumulative[i]) + "\n";
      out += name + "_bucket" + braces(l, "le=\"+Inf\"") + " " + std::to_string(s.count) + "\n";
      out += name + "_sum" + braces(l) + " " + num(s.sum) + "\n";
      out += name + "_count" + braces(l) + " " + std::to_string(s.count) + "\n";
    }
  }
  return out;
}

}  // namespace muster::metrics
