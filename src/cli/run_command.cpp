// `slidesparse run`: end-to-end prefill and decode throughput of the GPU decoder (see
// bench/model_run.hpp), one dtype and pattern, optionally beside dense; JSON + a table.
#include <charconv>
#include <chrono>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "commands.hpp"
#include "slidesparse/core/dtype.hpp"
#include "slidesparse/core/error.hpp"
#include "slidesparse/core/pattern.hpp"
#include "slidesparse/io/hf_checkpoint.hpp"
#include "slidesparse/io/tuning_cache.hpp"
#include "slidesparse/runtime/model_config.hpp"
#ifdef SLIDESPARSE_HAVE_CUDA
#include "slidesparse/bench/model_run.hpp"
#endif

namespace slidesparse::cli {
namespace {

struct RunArgs {
  std::string model = "preset:qwen2.5-7b";
  std::vector<std::string> patterns = {"6:8"};
  std::string dtype = "fp8";
  std::string compare;
  std::string backend = "auto";
  std::string attention = "auto";
  std::vector<std::int64_t> batches = {8};
  std::vector<std::int64_t> prompt_lens = {512};
  std::int64_t gen_len = 128;
  int repeats = 3;
  bool no_profile = false;
  bool no_graph = false;
  bool dense_fallback = false;
  bool release_unchosen = false;
  double release_tolerance = 0.0;
  std::uint64_t seed = 2026;
  std::string json;
  std::string tuning_cache;
};

}  // namespace

Command register_run(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  auto* sub = app.add_subcommand("run", "End-to-end prefill and decode throughput of a Llama / Qwen2 model on the GPU, "
                                        "dense or SlideSparse (prints tokens/s, writes JSON)");
  sub->add_option("--model", args->model,
                  "preset:NAME (random weights with the real shapes: llama3.2-1b, llama3.2-3b, llama3.1-8b, "
                  "qwen2.5-7b, qwen2.5-14b, tiny-llama, tiny-qwen2), a Hugging Face directory or a .gguf file "
                  "(default preset:qwen2.5-7b)");
  sub->add_option("--pattern", args->patterns,
                  "dense, or patterns the projections are pruned to by magnitude, comma-separated: one model load "
                  "each (default 6:8)")->delimiter(',');
  sub->add_option("--dtype", args->dtype, "fp8, int8 or bf16 (W8A8 for fp8/int8; default fp8)");
  sub->add_option("--compare", args->compare, "'dense': also run the dense model of the same dtype and report the speedup");
  sub->add_option("--backend", args->backend, "GEMM backend for the projections: auto, library, cutlass or sm90 (SlideSparse's own Hopper 2:4 kernel for "
                  "sparse projections; dense ones then run as with auto) (default auto)");
  sub->add_option("--attention", args->attention,
                  "Attention of prefill steps: auto (cuDNN's fused attention for prompts of >= 64 tokens where it "
                  "can run), own (the own kernel) or cudnn; decode always runs the own kernel (default auto)");
  sub->add_option("--batch", args->batches, "Sequences B, comma-separated for a sweep (default 8)")
      ->delimiter(',')->check(CLI::Range(1, 4096));
  sub->add_option("--prompt-len", args->prompt_lens,
                  "Prompt tokens P per sequence, comma-separated; prefill M = B*P for every (B, P) (default 512)")
      ->delimiter(',')->check(CLI::Range(1, 1 << 20));
  sub->add_option("--gen-len", args->gen_len, "Greedy decode steps G (default 128; 0: prefill only)")->check(CLI::Range(0, 1 << 20));
  sub->add_option("--repeats", args->repeats, "Timed prefill steps (median, min, max; default 3)")->check(CLI::Range(1, 1000));
  sub->add_flag("--no-profile", args->no_profile, "Skip the profiled pass (time split into linear / attention / other)");
  sub->add_flag("--no-graph", args->no_graph, "Decode without CUDA graphs");
  sub->add_flag("--dense-fallback", args->dense_fallback,
                "SlideSparse projections also keep a dense copy of the pruned weight and run, per M bucket, the "
                "fastest of the sparse backends and dense (never slower than dense; costs the dense weights' memory, and "
                "with --backend auto a second sparse copy: CUTLASS and cuSPARSELt); dense W8A8 models (--compare dense "
                "included) choose per M bucket among their dense backends (CUTLASS, cuBLASLt with fused or separate "
                "scales), so that the comparison is against the best dense");
  sub->add_flag("--release-unchosen", args->release_unchosen,
                "With --dense-fallback: after loading, choose every projection's backend for each M bucket up to the "
                "largest B*P (timed once per projection shape, or from the tuning cache), then free the weight copies no "
                "bucket chose; reports the weight memory before and after");
  sub->add_option("--release-tolerance", args->release_tolerance,
                  "With --release-unchosen: also free the copies whose every win is by less than this fraction of the "
                  "bucket's time (e.g. 0.02: each M bucket then runs within 2 % of its fastest; default 0)");
  sub->add_option("--seed", args->seed, "Seed of the preset weights and of the prompts");
  sub->add_option("--json", args->json, "Write the result as JSON to this file");
  sub->add_option("--tuning-cache", args->tuning_cache,
                  "Tuning cache file (default $SLIDESPARSE_TUNING_CACHE or ~/.cache/slidesparse/tuning.json; "
                  "'none': tune in memory only)");
  return [args]() -> int {
    DType const dtype = model_compute_dtype(args->dtype, "run");
    std::vector<std::optional<SparsityPattern>> patterns;
    for (std::string const& p : args->patterns) {
      patterns.push_back(p == "dense" ? std::nullopt : std::optional(SparsityPattern::parse(p)));
    }
    if (!args->compare.empty() && args->compare != "dense") {
      fail(ErrorKind::kUsage, "run: --compare takes 'dense', not '{}'", args->compare);
    }
    if (args->backend != "auto" && args->backend != "library" && args->backend != "cutlass" && args->backend != "sm90") {
      fail(ErrorKind::kUsage, "run: unknown backend '{}' (auto, library, cutlass, sm90)", args->backend);
    }
    if (args->release_unchosen && !args->dense_fallback) {
      fail(ErrorKind::kUsage, "run: --release-unchosen frees the candidates --dense-fallback builds; give both");
    }
    if (args->release_tolerance != 0 && !args->release_unchosen) {
      fail(ErrorKind::kUsage, "run: --release-tolerance applies to --release-unchosen; give both");
    }
    if (!std::isfinite(args->release_tolerance) || args->release_tolerance < 0 || args->release_tolerance >= 1) {
      fail(ErrorKind::kUsage, "run: --release-tolerance {} must be a fraction in [0, 1) (0.02 = 2 %)", args->release_tolerance);
    }
    if (args->attention != "auto" && args->attention != "own" && args->attention != "cudnn") {
      fail(ErrorKind::kUsage, "run: unknown attention '{}' (auto, own, cudnn)", args->attention);
    }
    // The model must exist before the GPU is asked for (a typo is a usage error on any machine).
    if (args->model.rfind("preset:", 0) == 0) {
      (void)runtime::ModelConfig::preset(args->model.substr(7));
    } else if (!std::filesystem::exists(args->model)) {
      fail(ErrorKind::kUsage, "run: model '{}' is neither preset:NAME nor an existing directory or .gguf file", args->model);
    }
#ifdef SLIDESPARSE_HAVE_CUDA
    bench::ModelRunOptions o;
    o.model = args->model;
    o.dtype = dtype;
    o.patterns = patterns;
    o.compare_dense = !args->compare.empty();
    if (args->backend == "auto") o.backend = cuda::GemmBackend::kAuto;
    else if (args->backend == "library") o.backend = cuda::GemmBackend::kLibrary;
    else if (args->backend == "sm90") o.backend = cuda::GemmBackend::kSm90Sparse;
    else o.backend = cuda::GemmBackend::kCutlass;
    o.attention = args->attention == "own"     ? runtime::AttentionBackend::kOwn
                  : args->attention == "cudnn" ? runtime::AttentionBackend::kCudnn
                                               : runtime::AttentionBackend::kAuto;
    o.batches = args->batches;
    o.prompt_lens = args->prompt_lens;
    o.gen_len = args->gen_len;
    o.repeats = args->repeats;
    o.profile = !args->no_profile;
    o.use_graph = !args->no_graph;
    o.dense_fallback = args->dense_fallback;
    o.release_unchosen = args->release_unchosen;
    o.release_tolerance = args->release_tolerance;
    o.seed = args->seed;
    io::TuningCache tuning = io::TuningCache::from_option(args->tuning_cache);
    o.tuning = &tuning;
    o.command = fmt::format("slidesparse run --model {} --pattern {} --dtype {}{} --backend {} --attention {} --batch {} "
                            "--prompt-len {} --gen-len {} --repeats {} --seed {}{}{}{}{}{}",
                            args->model, fmt::join(args->patterns, ","), args->dtype, o.compare_dense ? " --compare dense" : "",
                            args->backend, args->attention, fmt::join(args->batches, ","), fmt::join(args->prompt_lens, ","), args->gen_len,
                            args->repeats, args->seed,
                            args->no_profile ? " --no-profile" : "", args->no_graph ? " --no-graph" : "",
                            args->dense_fallback ? " --dense-fallback" : "",
                            args->release_unchosen ? " --release-unchosen" : "",
                            args->release_tolerance != 0 ? fmt::format(" --release-tolerance {}", args->release_tolerance) : "");
    auto const started = std::chrono::steady_clock::now();
    o.progress = [started](std::string const& line) {
      double const s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      fmt::print(stderr, "run: [{:7.1f} s] {}\n", s, line);
    };
    nlohmann::json const result = bench::run_model(o);
    tuning.save();
    fmt::print("{}\n{}", o.command, bench::model_run_summary(result));
    if (!args->json.empty()) {
      io::write_text_file_atomic(args->json, result.dump(1) + "\n");
      fmt::print("wrote {}\n", args->json);
    }
    return 0;
#else
    (void)dtype;
    (void)patterns;
    fail(ErrorKind::kUsage, "run: this binary was built without the CUDA layer (no CUDA toolkit at configure time)");
#endif
  };
}

}  // namespace slidesparse::cli
