// base/metrics.h: Prometheus text-format metrics (counters, gauges,
// histograms, optionally with labels).  A Registry is owned by the program
// (no global state); instruments are thread-safe and cheap to update.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace muster::metrics {

class Counter {
 public:
  void inc(double v = 1);
  // For a counter kept elsewhere and mirrored here (the kernel's CPU time).
  void set(double v) { v_.store(v); }
  double value() const;

 private:
  std::atomic<double> v_{0};
};

class Gauge {
 public:
  void set(double v) { v_.store(v); }
  void add(double v);
  double value() const { return v_.load(); }

 private:
  std::atomic<double> v_{0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  // Cumulative bucket counts (one per bound, then +Inf), sum and count.
  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket, last = +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Exponential buckets: start, start*factor, ... (count bounds).
std::vector<double> exponential_buckets(double start, double factor, int count);

class Registry {
 public:
  // Returns the instrument for name{labels}; creates it (and the family's
  // HELP/TYPE) on first use.  `labels` is the Prometheus label text without
  // braces, e.g. `code="200",method="GET"`, or empty.
  Counter& counter(const std::string& name, const std::string& help,
                   const std::string& labels = "");
  Gauge& gauge(const std::string& name, const std::string& help, const std::string& labels = "");
  Histogram& histogram(const std::string& name, const std::string& help,
                       const std::vector<double>& bounds, const std::string& labels = "");

  // The whole registry in Prometheus text exposition format 0.0.4.
  std::string render() const;

 private:
  struct Family {
    std::string help, type;
    std::map<std::string, std::unique_ptr<Counter>> counters;
    std::map<std::string, std::unique_ptr<Gauge>> gauges;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
  };
  Family& family(const std::string& name, const std::string& help, const char* type);
  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

}  // namespace muster::metrics
