/// \file dispatch_linear.hpp
/// \brief A SlideSparse linear layer that runs, for each M bucket, whichever of its candidate
/// implementations is fastest on this GPU: CUTLASS 2:4 with the fused epilogue, SlideSparse's own
/// sm90 2:4 kernel (also fused), cuSPARSELt 2:4, and optionally a dense fallback on the same
/// pruned weight (for the M where sparse loses).
/// Without a pattern it is a dense layer choosing among its dense forms (the strongest dense
/// baseline: dense CUTLASS, cuBLASLt with fused scales, cuBLASLt with its own epilogue).
///
/// Each candidate is a complete cuda::Linear holding its own copy of the weight (all dense
/// candidates, up to three, share one), so the choice costs memory: memory() reports every copy,
/// the config says which candidates to build, and release_unchosen() frees, once the M buckets a
/// caller will run are chosen, the copies no bucket chose (memory policy: hold every candidate
/// while choosing, then only the winners).
/// prepare(M) times every candidate's whole forward (quant+lift, GEMM, epilogue; L2 evicted
/// before each call, as in a model; candidates round-robin, median of 9 to 63 rounds) on random activations
/// and keeps the fastest for M's bucket; the choice is recorded in the tuning cache with the times of all candidates, so
/// later processes only prepare the winner. forward() then calls the winner alone: no
/// allocation, no synchronization (CUDA-graph capturable once prepared).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "slidesparse/cuda/linear.hpp"

namespace slidesparse::cuda {

struct DispatchConfig {
  /// Compute and activation dtypes, the pattern (none: dense candidates only, whatever the
  /// flags below say) and the K alignment; `backend` and `fast_accumulation` are set per
  /// candidate / passed through.
  LinearConfig layer;
  bool cutlass = true;     ///< CUTLASS candidates, 2:4 and dense (where CUTLASS can run the layer)
  bool cusparselt = true;  ///< cuSPARSELt 2:4 candidate (a second compressed copy when both)
  /// SlideSparse's hand-written sm90a 2:4 kernel (sm90_sparse_gemm.hpp) as a candidate, where it
  /// can run the layer (W8A8, BF16, N % 8 == 0, Hopper): one more compressed copy. Off by default:
  /// on the H100 it is within 0-8 % of the CUTLASS candidate and wins few points
  /// (docs/PERFORMANCE.md), not worth another copy of every sparse weight.
  bool sm90 = false;
  /// A dense copy of the pruned weight, used for the M buckets where every sparse candidate is
  /// slower: run by dense CUTLASS (with `cutlass`) and by cuBLASLt where CUTLASS can run it, else by
  /// cuBLASLt alone; cuBLASLt both with the scales fused and with its own epilogue where it can
  /// fuse them (FP8 without bias). All candidates on the one copy: costs the dense weight's memory.
  bool dense_fallback = false;
};

class DispatchLinear {
 public:
  /// Builds every enabled candidate that can run the layer (with a pattern, at least one sparse
  /// candidate must).
  DispatchLinear(DispatchConfig const& config, LinearWeights const& weights, cudaStream_t stream,
                 io::TuningCache* tuning = nullptr, std::string name = "linear",
                 std::shared_ptr<LinearScratch> scratch = nullptr);
  ~DispatchLinear();
  DispatchLinear(DispatchLinear const&) = delete;
  DispatchLinear& operator=(DispatchLinear const&) = delete;

  /// The M buckets of the choice: powers of two up to 32 (1, 2, 4, 8, 16, 32), then
  /// Linear::m_bucket. Finer than the layers' plan buckets at decode sizes because the best
  /// candidate changes inside Linear's first bucket (1..32): on an H200, Qwen2.5-7B gate_up FP8,
  /// dense CUTLASS beat cuBLASLt at M = 32 (50.1 vs 51.7 µs) and lost at M = 1 (53.4 vs 48.5 µs).
  static std::int64_t m_bucket(std::int64_t m);

  /// Chooses the candidate for M's bucket (timing them, or from the tuning cache) and prepares
  /// it. Allocates and synchronizes.
  void prepare(std::int64_t m, cudaStream_t stream);
  bool is_prepared(std::int64_t m) const noexcept;
  /// y [M, N] = layer(x [M, K]); prepares M's bucket first if needed (not a hot-path call then).
  void forward(void const* x, void* y, std::int64_t m, cudaStream_t stream, std::int64_t ldx = 0);

  /// The buckets of every M in 1..max_m, ascending (1, 2, 4, ..., 32, 64, 96, ..., m_bucket(max_m)).
  static std::vector<std::int64_t> buckets_up_to(std::int64_t max_m);
  /// prepare() for every bucket of buckets_up_to(max_m).
  void prepare_up_to(std::int64_t max_m, cudaStream_t stream);

  /// Frees every candidate that no prepared bucket chose (its weight copy, plans and workspaces)
  /// and returns the device bytes that frees (memory() before minus after). The owner of the
  /// dense copy stays while a dense candidate sharing its weight is chosen. Afterwards a bucket
  /// not yet chosen is chosen among the kept candidates (from the tuning cache where its entry
  /// names a kept one, else by timing them, not recorded: the cache holds choices among the
  /// full set), and force() of a released candidate is an Error saying so. An Error before any
  /// bucket is chosen (it would free every candidate). Synchronizes.
  /// With tolerance > 0 (a fraction: 0.02 = 2 %) it first trades speed for memory, within that
  /// bound: plan_release() moves buckets off candidates whose every win is by less than the
  /// tolerance, so that those go too. Buckets moved are prepared for their new candidate.
  std::size_t release_unchosen(cudaStream_t stream, double tolerance = 0.0);
  /// The candidates release_unchosen() freed, in construction order.
  std::vector<std::string> const& released() const noexcept { return released_; }

  /// One bucket's choice as plan_release() sees it: the chosen candidate and the median times
  /// (ms) of every candidate timed for the bucket (from the timing or the tuning cache; empty for a
  /// forced choice, which is then never moved).
  struct ReleaseBucket {
    std::string chosen;
    std::map<std::string, double> ms;
  };
  /// A candidate's device bytes and the candidate whose weight copy it reads (empty: its own).
  struct ReleaseHolding {
    std::size_t bytes = 0;
    std::string owner;
  };
  /// The memory-aware assignment of buckets to candidates (host only, pure): starting from the
  /// chosen ones, repeatedly drops the held candidate (assigned, or the owner of an assigned one)
  /// whose going frees the most bytes, where each of its buckets can move to another held
  /// candidate timed within `tolerance` of the bucket's fastest time (the fastest such one); stops
  /// when no drop frees anything. Every bucket then runs within (1 + tolerance) x its fastest
  /// time, whatever the order of drops. tolerance 0 returns the choices unchanged; negative or
  /// not finite is an Error. Returns bucket -> candidate.
  static std::map<std::int64_t, std::string> plan_release(std::map<std::int64_t, ReleaseBucket> const& buckets,
                                                          std::map<std::string, ReleaseHolding> const& holdings,
                                                          double tolerance);

  /// Makes `candidate` M's bucket's choice without timing (tests, experiments) and prepares it;
  /// an Error naming the candidates when there is no such one. Not recorded in the tuning cache.
  void force(std::int64_t m, std::string const& candidate, cudaStream_t stream);

  /// The candidate chosen for M's bucket: "cutlass", "sm90", "cusparselt", "dense-cutlass",
  /// "dense-cublaslt", "dense-cublaslt-unfused", or "dense" / "dense-unfused" (cuBLASLt where
  /// CUTLASS cannot run the layer); empty before prepare. And whether the choice came from the
  /// tuning cache.
  std::string choice(std::int64_t m) const;
  bool chosen_from_cache(std::int64_t m) const noexcept;
  /// "choice: GEMM configuration" of M's bucket (Linear::gemm_description of the chosen
  /// candidate, e.g. "dense-cublaslt: cublaslt-130100 (scales fused)"); empty before prepare.
  std::string description(std::int64_t m) const;
  /// The candidates this layer holds (less the released ones), in order of preference on ties.
  std::vector<std::string> candidates() const;
  /// Device memory of every candidate summed (each weight copy once)...
  LinearMemory memory() const noexcept;
  /// ...and per candidate.
  LinearMemory memory_of(std::string const& candidate) const;
  std::int64_t n() const noexcept { return n_; }
  std::string const& name() const noexcept { return name_; }

 private:
  struct Candidate {
    std::string name;
    std::unique_ptr<Linear> layer;
    std::string weight_owner;  ///< the candidate whose dense weight this one reads; empty: its own
  };
  struct Choice {
    Linear* layer = nullptr;
    std::string name;
    bool from_cache = false;
    std::map<std::string, double> ms;  ///< every timed candidate's median (empty: forced, or nothing to time)
  };
  /// The candidates an assignment of buckets holds: the assigned ones and the owners of the
  /// weight copies they read.
  static std::set<std::string> held_by(std::map<std::int64_t, std::string> const& assignment,
                                       std::map<std::string, ReleaseHolding> const& holdings);
  Candidate const* find(std::string const& name) const noexcept;
  Choice const* find_choice(std::int64_t m) const noexcept;  ///< M's bucket's choice, or null

  DispatchConfig config_;
  std::string name_;
  std::int64_t n_, k_;
  io::TuningCache* tuning_;
  std::vector<Candidate> candidates_;
  std::string all_names_;    ///< "a+b+c": every candidate built (the tuning cache key's set)
  std::string key_version_;  ///< the first candidate's backend version, as built (the key's)
  std::vector<std::string> released_;
  std::map<std::int64_t, Choice> choices_;  ///< by M bucket
};

}  // namespace slidesparse::cuda
