/// \file runner.hpp
/// \brief The layer benchmark behind `slidesparse bench` (needs a GPU).
///
/// For every model layer, dtype and pattern: a random weight in the compute dtype (full-range
/// codes, no zeros before pruning), pruned to the pattern by magnitude; a SlideSparse Linear
/// and a dense Linear on the same pruned weight (each on cuSPARSELt / cuBLASLt and, for W8A8 with
/// BF16 activations, on CUTLASS); all tuned (tuning cache) and timed for every M:
///   layer       forward(): quant+lift -> GEMM -> epilogue, 16-bit in and out
///   gemm        the GEMM step alone (on the layer's own lifted activations)
///   quant_lift  the quant+lift step alone (bandwidth, against the measured copy bandwidth)
/// Method: L2 evicted before every timed call (weights and activations cold, as in a model),
/// `warmup` untimed calls, then `repeats` single calls each between CUDA events; median, min,
/// max. Whole-layer variants of one point are timed round-robin (interleaved), so clock and
/// temperature drift cannot favour one of them. No bias (a per-channel add in the epilogue
/// either way).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "slidesparse/bench/presets.hpp"
#include "slidesparse/bench/report.hpp"
#include "slidesparse/core/dtype.hpp"
#include "slidesparse/core/pattern.hpp"

namespace slidesparse::io {
class TuningCache;
}

namespace slidesparse::bench {

struct BenchOptions {
  std::vector<ModelShapes> models;
  std::vector<std::int64_t> ms;
  std::vector<DType> dtypes;  ///< compute dtypes: I8, F8_E4M3, BF16, F16
  std::vector<SparsityPattern> patterns;
  bool gemm = true, layer = true, quant_lift = true;
  /// Also time the CUTLASS backend (W8A8, BF16): variants "<pattern>-cutlass" and "dense-cutlass".
  bool cutlass = true;
  /// Also time SlideSparse's own sm90 2:4 kernel (W8A8, BF16): variant "<pattern>-sm90" (and make
  /// it a candidate of the dispatching layer).
  bool sm90 = false;
  /// Also time the dispatching layer ("<pattern>-dispatch", layer mode): per M the fastest of
  /// its candidates (CUTLASS, cuSPARSELt, dense fallback), as chosen by its own tuning.
  bool dispatch = true;
  int warmup = 3, repeats = 20;
  std::uint64_t seed = 2026;
  io::TuningCache* tuning = nullptr;
  std::string command;  ///< recorded in the report
  std::function<void(std::string const&)> progress;
};

/// Short dtype names used in reports: fp8, int8, bf16, fp16.
std::string bench_dtype_name(DType dtype);

/// GPU name and SM count, CUDA runtime / driver, cuBLASLt, cuSPARSELt and CUTLASS versions,
/// nvidia-smi's clocks and power, the date and `command`: what every GPU figure carries.
nlohmann::json gpu_environment(std::string const& command);

Report run_benchmark(BenchOptions const& options);

}  // namespace slidesparse::bench
