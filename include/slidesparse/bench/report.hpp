/// \file report.hpp
/// \brief Benchmark measurements and what is derived from them: speedups, efficiency relative
/// to 2:4, crossover M, quant+lift bandwidth; written as JSON, CSV and markdown. Plain C++ (no
/// CUDA), so the arithmetic is tested in CI.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace slidesparse::bench {

struct Timing {
  double median_us = 0, min_us = 0, max_us = 0;
};

/// One timed configuration.
struct Measurement {
  std::string model, layer;
  std::int64_t n = 0, k = 0, k_lifted = 0, m = 0;
  std::string dtype;      ///< fp8, int8, bf16, fp16
  std::string mode;       ///< "gemm" (GEMM step only), "layer" (BF16/F16 in -> out), "quant_lift"
  std::string variant;    ///< "dense..." (dense variants) or the SlideSparse pattern, optionally with a
                          ///< backend suffix ("6:8" = cuSPARSELt, "6:8-cutlass")
  std::string pruned_to;  ///< the pattern the weight obeys; dense runs on the same weight
  Timing time;
  double bytes = 0;       ///< quant_lift: bytes read + written per call
};

/// Sparse against dense on the same weight. layer == "sum": the model's layers summed.
struct Comparison {
  std::string model, layer, dtype, mode, pattern;
  std::int64_t m = 0;
  double dense_us = 0, sparse_us = 0, speedup = 0;
  double spread = 0;  ///< largest (max - min) / median of the timings behind this entry
  /// (speedup / speedup of 2:4) / (ideal speedup / 2): 1 means the pattern keeps all of its
  /// share of what the 2:4 kernel delivers. Absent without a 2:4 entry.
  std::optional<double> efficiency_vs_24;
  std::string dense_variant;   ///< which dense variant was fastest (the baseline)
  std::string sparse_variant;  ///< which SlideSparse variant was fastest ("6:8", "6:8-cutlass")
  /// The dispatching layer's own time ("<pattern>-dispatch": it picks per M among its
  /// candidates, dense fallback included), when measured; not part of the sparse minimum.
  std::optional<double> dispatch_us;
};

/// Every comparison the measurements allow (per layer, and per model summed over its layers
/// where all layers have both timings), for modes gemm and layer. The dense time of a point is
/// the fastest of its dense variants (variant names starting with "dense"), the sparse time the
/// fastest of its SlideSparse variants (the pattern, or the pattern + "-backend"), what a layer
/// that dispatches per M to the fastest sparse backend achieves; "<pattern>-dispatch" rows (the
/// dispatching layer measured itself) go to dispatch_us.
std::vector<Comparison> compare(std::vector<Measurement> const& measurements);

/// Smallest swept M from which sparse is faster than dense at every larger swept M, for one
/// (model, layer, dtype, mode, pattern); nullopt when sparse loses at the largest M.
std::optional<std::int64_t> crossover_m(std::vector<Comparison> const& comparisons, std::string const& model,
                                        std::string const& layer, std::string const& dtype,
                                        std::string const& mode, std::string const& pattern);

struct Report {
  nlohmann::json environment;  ///< GPU, clocks, driver, CUDA, cuBLASLt, cuSPARSELt, command, date
  double copy_gbps = 0;        ///< measured device copy bandwidth (bytes read + written)
  std::vector<Measurement> measurements;
};

nlohmann::json to_json(Report const& report);
std::string to_csv(Report const& report);
/// Sum tables per (model, dtype, mode), per-layer speedups, crossover and efficiency rows,
/// quant+lift bandwidth.
std::string to_markdown(Report const& report);

}  // namespace slidesparse::bench
