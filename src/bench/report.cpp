#include "slidesparse/bench/report.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <tuple>

#include <fmt/format.h>

#include "slidesparse/core/pattern.hpp"

namespace slidesparse::bench {
namespace {

double spread_of(Timing const& t) { return t.median_us > 0 ? (t.max_us - t.min_us) / t.median_us : 0.0; }

double ideal_speedup(std::string const& pattern) { return SparsityPattern::parse(pattern).ideal_speedup(); }

// Key of a comparison without the pattern, to find the 2:4 entry it is measured against.
using BaseKey = std::tuple<std::string, std::string, std::string, std::string, std::int64_t>;

// The backend part of a variant name: "6:8" -> "cusparselt", "6:8-cutlass" -> "cutlass",
// "dense" -> "cublaslt", "dense-unfused" -> "cublaslt-unfused", "dense-cutlass" -> "cutlass".
std::string backend_of(std::string const& variant, std::string const& base) {
  if (variant == base) return base == "dense" ? "cublaslt" : "cusparselt";
  std::string const suffix = variant.substr(std::min(variant.size(), base.size() + 1));
  return base == "dense" && suffix == "unfused" ? "cublaslt-unfused" : suffix;
}

}  // namespace

std::vector<Comparison> compare(std::vector<Measurement> const& measurements) {
  // (model, layer, dtype, mode, pruned_to, m) -> dense / sparse measurement
  using Key = std::tuple<std::string, std::string, std::string, std::string, std::string, std::int64_t>;
  std::map<Key, Measurement const*> dense, sparse, dispatch;
  std::map<std::string, std::vector<std::string>> layers_of;  // model -> layers in first-seen order
  for (Measurement const& x : measurements) {
    if (x.mode != "gemm" && x.mode != "layer") continue;
    Key const key{x.model, x.layer, x.dtype, x.mode, x.pruned_to, x.m};
    if (x.variant.starts_with("dense")) {
      // Several dense variants (e.g. cuBLASLt with fused scales, and with a separate
      // epilogue): the baseline is the fastest of them at each point.
      auto& best = dense[key];
      if (!best || x.time.median_us < best->time.median_us) best = &x;
    } else if (x.variant == x.pruned_to + "-dispatch") {
      dispatch[key] = &x;
      continue;
    } else if (x.variant == x.pruned_to || x.variant.starts_with(x.pruned_to + "-")) {
      // Several SlideSparse variants (e.g. "6:8" on cuSPARSELt, "6:8-cutlass"): a layer
      // dispatches to the fastest, so the sparse time of a point is the fastest of them.
      auto& best = sparse[key];
      if (!best || x.time.median_us < best->time.median_us) best = &x;
    } else {
      continue;
    }
    auto& layers = layers_of[x.model];
    if (std::find(layers.begin(), layers.end(), x.layer) == layers.end()) layers.push_back(x.layer);
  }
  std::vector<Comparison> out;
  // Sums: model, dtype, mode, pattern, m -> (dense, sparse, spread, layer count)
  struct Sum {
    double dense = 0, sparse = 0, spread = 0, dispatch = 0;
    std::size_t layers = 0, dispatched = 0;
  };
  std::map<std::tuple<std::string, std::string, std::string, std::string, std::int64_t>, Sum> sums;
  for (auto const& [key, s] : sparse) {
    auto const it = dense.find(key);
    if (it == dense.end()) continue;
    Measurement const& d = *it->second;
    Comparison c{s->model, s->layer, s->dtype, s->mode, s->pruned_to, s->m, d.time.median_us, s->time.median_us,
                 d.time.median_us / s->time.median_us, std::max(spread_of(d.time), spread_of(s->time)), std::nullopt,
                 d.variant, s->variant, std::nullopt};
    auto const dispatched = dispatch.find(key);
    if (dispatched != dispatch.end()) c.dispatch_us = dispatched->second->time.median_us;
    out.push_back(c);
    Sum& sum = sums[{s->model, s->dtype, s->mode, s->pruned_to, s->m}];
    sum.dense += d.time.median_us;
    sum.sparse += s->time.median_us;
    if (c.dispatch_us) {
      sum.dispatch += *c.dispatch_us;
      ++sum.dispatched;
    }
    sum.spread = std::max(sum.spread, c.spread);
    ++sum.layers;
  }
  for (auto const& [key, sum] : sums) {
    auto const& [model, dtype, mode, pattern, m] = key;
    if (layers_of[model].size() < 2 || sum.layers != layers_of[model].size()) continue;
    out.push_back({model, "sum", dtype, mode, pattern, m, sum.dense, sum.sparse, sum.dense / sum.sparse, sum.spread, std::nullopt, "best per layer",
                   "best per layer", std::nullopt});
    if (sum.dispatched == sum.layers) out.back().dispatch_us = sum.dispatch;
  }
  std::map<BaseKey, double> speedup_24;
  for (Comparison const& c : out) {
    if (c.pattern == "2:4") speedup_24[{c.model, c.layer, c.dtype, c.mode, c.m}] = c.speedup;
  }
  for (Comparison& c : out) {
    auto const it = speedup_24.find({c.model, c.layer, c.dtype, c.mode, c.m});
    if (it != speedup_24.end()) c.efficiency_vs_24 = (c.speedup / it->second) / (ideal_speedup(c.pattern) / 2.0);
  }
  return out;
}

std::optional<std::int64_t> crossover_m(std::vector<Comparison> const& comparisons, std::string const& model,
                                        std::string const& layer, std::string const& dtype,
                                        std::string const& mode, std::string const& pattern) {
  std::vector<std::pair<std::int64_t, double>> points;
  for (Comparison const& c : comparisons) {
    if (c.model == model && c.layer == layer && c.dtype == dtype && c.mode == mode && c.pattern == pattern) {
      points.emplace_back(c.m, c.speedup);
    }
  }
  std::sort(points.begin(), points.end());
  std::optional<std::int64_t> from;
  for (auto it = points.rbegin(); it != points.rend() && it->second > 1.0; ++it) from = it->first;
  return from;
}

nlohmann::json to_json(Report const& report) {
  nlohmann::json doc = {{"environment", report.environment}, {"copy_gbps", report.copy_gbps}};
  doc["measurements"] = nlohmann::json::array();
  for (Measurement const& x : report.measurements) {
    nlohmann::json j = {{"model", x.model},         {"layer", x.layer},       {"n", x.n},
                        {"k", x.k},                 {"k_lifted", x.k_lifted}, {"m", x.m},
                        {"dtype", x.dtype},         {"mode", x.mode},         {"variant", x.variant},
                        {"pruned_to", x.pruned_to}, {"median_us", x.time.median_us},
                        {"min_us", x.time.min_us},  {"max_us", x.time.max_us}};
    if (x.mode == "quant_lift") {
      j["bytes"] = x.bytes;
      j["gbps"] = x.bytes / (x.time.median_us * 1e3);
      if (report.copy_gbps > 0) j["fraction_of_copy"] = j["gbps"].get<double>() / report.copy_gbps;
    }
    doc["measurements"].push_back(j);
  }
  std::vector<Comparison> const comparisons = compare(report.measurements);
  doc["comparisons"] = nlohmann::json::array();
  std::set<std::tuple<std::string, std::string, std::string, std::string, std::string>> groups;
  for (Comparison const& c : comparisons) {
    nlohmann::json j = {{"model", c.model},       {"layer", c.layer},         {"dtype", c.dtype},
                        {"mode", c.mode},         {"pattern", c.pattern},     {"m", c.m},
                        {"dense_us", c.dense_us}, {"sparse_us", c.sparse_us}, {"speedup", c.speedup},
                        {"spread", c.spread},     {"dense_variant", c.dense_variant}, {"sparse_variant", c.sparse_variant}};
    if (c.dispatch_us) j["dispatch_us"] = *c.dispatch_us;
    if (c.efficiency_vs_24) j["efficiency_vs_24"] = *c.efficiency_vs_24;
    doc["comparisons"].push_back(j);
    groups.insert({c.model, c.layer, c.dtype, c.mode, c.pattern});
  }
  doc["crossover_m"] = nlohmann::json::array();
  for (auto const& [model, layer, dtype, mode, pattern] : groups) {
    auto const m = crossover_m(comparisons, model, layer, dtype, mode, pattern);
    doc["crossover_m"].push_back({{"model", model}, {"layer", layer}, {"dtype", dtype}, {"mode", mode},
                                  {"pattern", pattern}, {"m", m ? nlohmann::json(*m) : nlohmann::json(nullptr)}});
  }
  return doc;
}

std::string to_csv(Report const& report) {
  std::string out = "model,layer,n,k,k_lifted,m,dtype,mode,variant,pruned_to,median_us,min_us,max_us,bytes\n";
  for (Measurement const& x : report.measurements) {
    out += fmt::format("{},{},{},{},{},{},{},{},{},{},{:.3f},{:.3f},{:.3f},{:.0f}\n", x.model, x.layer, x.n, x.k,
                       x.k_lifted, x.m, x.dtype, x.mode, x.variant, x.pruned_to, x.time.median_us, x.time.min_us,
                       x.time.max_us, x.bytes);
  }
  return out;
}

std::string to_markdown(Report const& report) {
  std::vector<Comparison> const comparisons = compare(report.measurements);
  std::string out;
  // Group order: model, dtype, mode as first seen.
  std::vector<std::tuple<std::string, std::string, std::string>> groups;
  std::vector<std::string> patterns;
  for (Comparison const& c : comparisons) {
    std::tuple<std::string, std::string, std::string> const g{c.model, c.dtype, c.mode};
    if (std::find(groups.begin(), groups.end(), g) == groups.end()) groups.push_back(g);
    if (std::find(patterns.begin(), patterns.end(), c.pattern) == patterns.end()) patterns.push_back(c.pattern);
  }
  std::sort(patterns.begin(), patterns.end(), [](std::string const& a, std::string const& b) {
    return SparsityPattern::parse(a).half_block() < SparsityPattern::parse(b).half_block();
  });
  for (auto const& [model, dtype, mode] : groups) {
    bool const has_sum = std::any_of(comparisons.begin(), comparisons.end(), [&](Comparison const& c) {
      return c.model == model && c.dtype == dtype && c.mode == mode && c.layer == "sum";
    });
    std::vector<std::string> layers;
    if (has_sum) layers.push_back("sum");
    for (Comparison const& c : comparisons) {
      if (c.model == model && c.dtype == dtype && c.mode == mode && c.layer != "sum" &&
          std::find(layers.begin(), layers.end(), c.layer) == layers.end()) {
        layers.push_back(c.layer);
      }
    }
    for (std::string const& layer : layers) {
      out += fmt::format("\n### {} · {} · {} · {}\n\n", model, dtype,
                         mode == "gemm" ? "GEMM only" : "whole layer (16-bit in -> 16-bit out)",
                         layer == "sum" ? "sum of the layers" : layer);
      out += "Each cell: sparse µs / dense µs of the same pruned weight = speedup (efficiency vs 2:4)";
      out += layer == "sum" ? ".\n\n| M |" : " `sparse/dense backend` (the fastest of each).\n\n| M |";
      for (auto const& p : patterns) out += fmt::format(" {} (ideal {:.2f}×) |", p, ideal_speedup(p));
      out += " spread |\n|---|";
      for (std::size_t i = 0; i <= patterns.size(); ++i) out += "---|";
      out += "\n";
      std::set<std::int64_t> ms;
      for (Comparison const& c : comparisons) {
        if (c.model == model && c.dtype == dtype && c.mode == mode && c.layer == layer) ms.insert(c.m);
      }
      for (std::int64_t const m : ms) {
        out += fmt::format("| {} |", m);
        double spread = 0;
        for (auto const& p : patterns) {
          auto const it = std::find_if(comparisons.begin(), comparisons.end(), [&](Comparison const& c) {
            return c.model == model && c.dtype == dtype && c.mode == mode && c.layer == layer && c.pattern == p && c.m == m;
          });
          if (it == comparisons.end()) {
            out += " – |";
            continue;
          }
          spread = std::max(spread, it->spread);
          out += fmt::format(" {:.1f} / {:.1f} = **{:.2f}×**", it->sparse_us, it->dense_us, it->speedup);
          if (it->efficiency_vs_24 && p != "2:4") out += fmt::format(" ({:.2f})", *it->efficiency_vs_24);
          if (layer != "sum") out += fmt::format(" `{}/{}`", backend_of(it->sparse_variant, p), backend_of(it->dense_variant, "dense"));
          if (it->dispatch_us) out += fmt::format(" · dispatch {:.2f}×", it->dense_us / *it->dispatch_us);
          out += " |";
        }
        out += fmt::format(" {:.0f} % |\n", 100 * spread);
      }
      out += "| crossover M |";
      for (auto const& p : patterns) {
        auto const m = crossover_m(comparisons, model, layer, dtype, mode, p);
        out += m ? fmt::format(" {} |", *m) : std::string(" never |");
      }
      out += " |\n";
    }
  }
  // Quant+lift bandwidth.
  bool header = false;
  for (Measurement const& x : report.measurements) {
    if (x.mode != "quant_lift") continue;
    if (!header) {
      out += fmt::format("\n### quant+lift kernel: bandwidth as a fraction of the measured copy bandwidth ({:.0f} GB/s)\n\n", report.copy_gbps);
      out += "| model | layer | dtype | layout | M | K | K' | µs | GB/s | of copy |\n|---|---|---|---|---|---|---|---|---|---|\n";
      header = true;
    }
    double const gbps = x.bytes / (x.time.median_us * 1e3);
    out += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {:.1f} | {:.0f} | {:.0f} % |\n", x.model, x.layer, x.dtype,
                       x.variant, x.m, x.k, x.k_lifted, x.time.median_us, gbps,
                       report.copy_gbps > 0 ? 100 * gbps / report.copy_gbps : 0.0);
  }
  return out;
}

}  // namespace slidesparse::bench
