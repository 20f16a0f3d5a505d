/// \file dispatch_linear.hpp
/// \brief A SlideSparse linear layer that runs, for each M bucket, whichever of its candidate
/// implementations is fastest on this GPU: CUTLASS 2:4 with the fused epilogue, cuSPARSELt 2:4,
/// and optionally a dense fallback on the same pruned weight (for the M where sparse loses).
///
/// Each candidate is a complete cuda::Linear holding its own copy of the weight, so the choice
/// costs memory: memory() reports every copy, and the config says which candidates to keep.
/// prepare(M) times every candidate's whole forward (quant+lift, GEMM, epilogue; L2 evicted
/// before each call, as in a model; candidates round-robin, median of 9) on random activations
/// and keeps the fastest for M's bucket; the choice is recorded in the tuning cache with the times of all candidates, so
/// later processes only prepare the winner. forward() then calls the winner alone: no
/// allocation, no synchronization (CUDA-graph capturable once prepared).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "slidesparse/cuda/linear.hpp"

namespace slidesparse::cuda {

struct DispatchConfig {
  /// Compute and activation dtypes, the pattern (required) and the K alignment; `backend` and
  /// `fast_accumulation` are set per candidate / passed through.
  LinearConfig layer;
  bool cutlass = true;     ///< CUTLASS 2:4 candidate (where it can run the layer)
  bool cusparselt = true;  ///< cuSPARSELt 2:4 candidate (a second compressed copy when both)
  /// A dense copy of the pruned weight (CUTLASS dense where it can run, else cuBLASLt), used for
  /// the M buckets where every sparse candidate is slower. Costs the dense weight's memory.
  bool dense_fallback = false;
  /// With dense_fallback: hold both dense backends (CUTLASS and cuBLASLt, two dense copies), as
  /// neither is fastest at every M; otherwise the dense fallback is CUTLASS where it can run.
  bool dense_both_backends = false;
};

class DispatchLinear {
 public:
  /// Builds every enabled candidate that can run the layer (at least one sparse candidate must).
  DispatchLinear(DispatchConfig const& config, LinearWeights const& weights, cudaStream_t stream,
                 io::TuningCache* tuning = nullptr, std::string name = "linear",
                 std::shared_ptr<LinearScratch> scratch = nullptr);
  ~DispatchLinear();
  DispatchLinear(DispatchLinear const&) = delete;
  DispatchLinear& operator=(DispatchLinear const&) = delete;

  /// Chooses the candidate for M's bucket (timing them, or from the tuning cache) and prepares
  /// it. Allocates and synchronizes.
  void prepare(std::int64_t m, cudaStream_t stream);
  bool is_prepared(std::int64_t m) const noexcept;
  /// y [M, N] = layer(x [M, K]); prepares M's bucket first if needed (not a hot-path call then).
  void forward(void const* x, void* y, std::int64_t m, cudaStream_t stream, std::int64_t ldx = 0);

  /// The candidate chosen for M's bucket: "cutlass", "cusparselt", "dense" (or "dense-cutlass" /
  /// "dense-cublaslt" with dense_both_backends); empty before prepare. And whether the choice
  /// came from the tuning cache.
  std::string choice(std::int64_t m) const;
  bool chosen_from_cache(std::int64_t m) const noexcept;
  /// The candidates this layer holds, in order of preference on ties.
  std::vector<std::string> candidates() const;
  /// Device memory of every candidate summed (each holds its own weight copy)...
  LinearMemory memory() const noexcept;
  /// ...and per candidate.
  LinearMemory memory_of(std::string const& candidate) const;
  std::int64_t n() const noexcept { return n_; }
  std::string const& name() const noexcept { return name_; }

 private:
  struct Candidate {
    std::string name;
    std::unique_ptr<Linear> layer;
  };
  struct Choice {
    Linear* layer = nullptr;
    std::string name;
    bool from_cache = false;
  };
  Candidate const* find(std::string const& name) const noexcept;
  Choice const* find_choice(std::int64_t m) const noexcept;  ///< M's bucket's choice, or null

  DispatchConfig config_;
  std::string name_;
  std::int64_t n_, k_;
  io::TuningCache* tuning_;
  std::vector<Candidate> candidates_;
  std::map<std::int64_t, Choice> choices_;  ///< by M bucket
};

}  // namespace slidesparse::cuda
