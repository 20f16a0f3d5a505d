// `slidesparse bench`: dense vs SlideSparse linear layers on the GPU, per layer and summed over
// a model's layers, GEMM only and whole layer; JSON + CSV + markdown (see bench/runner.hpp).
#include <charconv>
#include <cstdio>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "commands.hpp"
#include "slidesparse/bench/presets.hpp"
#include "slidesparse/bench/report.hpp"
#include "slidesparse/core/dtype.hpp"
#include "slidesparse/core/error.hpp"
#include "slidesparse/core/pattern.hpp"
#include "slidesparse/io/hf_checkpoint.hpp"
#include "slidesparse/io/tuning_cache.hpp"
#ifdef SLIDESPARSE_HAVE_CUDA
#include "slidesparse/bench/runner.hpp"
#endif

namespace slidesparse::cli {
namespace {

struct BenchArgs {
  std::vector<std::string> models = {"qwen2.5-7b"};
  std::vector<std::string> ms = {"1", "16", "64", "256", "512", "1024", "2048", "4096", "8192", "16384", "32768"};
  std::vector<std::string> dtypes = {"fp8"};
  std::vector<std::string> patterns = {"2:4", "4:6", "6:8", "8:10", "14:16"};
  std::vector<std::string> modes = {"layer", "gemm", "quant_lift"};
  std::vector<std::string> backends = {"library", "cutlass", "dispatch"};
  int warmup = 3;
  int repeats = 20;
  std::uint64_t seed = 2026;
  std::string out = "slidesparse-bench";
  std::string tuning_cache;
  std::string command;
};

DType parse_compute_dtype(std::string const& name) {
  if (name == "fp8") return DType::kF8E4M3;
  if (name == "int8") return DType::kI8;
  if (name == "bf16") return DType::kBF16;
  if (name == "fp16") return DType::kF16;
  fail(ErrorKind::kUsage, "bench: unknown dtype '{}' (fp8, int8, bf16, fp16)", name);
}

std::int64_t parse_m(std::string const& text) {
  std::int64_t v = 0;
  auto const [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || end != text.data() + text.size() || v < 1 || v > (1 << 20)) {
    fail(ErrorKind::kUsage, "bench: M '{}' must be an integer in 1 .. 1048576", text);
  }
  return v;
}

}  // namespace

Command register_bench(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  auto* sub = app.add_subcommand("bench", "Time dense vs SlideSparse linear layers on the GPU (GEMM only and "
                                          "whole layer) and write JSON, CSV and a markdown report");
  sub->add_option("--model", args->models,
                  fmt::format("Models: {}, square:K or shape:NxK (default qwen2.5-7b)",
                              fmt::join(bench::model_preset_names(), ", ")))->delimiter(',');
  sub->add_option("--m", args->ms, "Token counts M to sweep (default 1,16,64,...,32768)")->delimiter(',');
  sub->add_option("--dtype", args->dtypes, "Compute dtypes: fp8, int8, bf16, fp16 (default fp8)")->delimiter(',');
  sub->add_option("--pattern", args->patterns, "Patterns (default 2:4,4:6,6:8,8:10,14:16)")->delimiter(',');
  sub->add_option("--mode", args->modes, "What to time: layer, gemm, quant_lift (default all)")->delimiter(',');
  sub->add_option("--backend", args->backends,
                  "What to time: library (cuSPARSELt / cuBLASLt), cutlass (W8A8 with BF16 only), sm90 (SlideSparse's "
                  "own Hopper 2:4 kernel, W8A8 with BF16 only; not in the default), dispatch "
                  "(the layer that picks the fastest per M, dense fallback included) (default all; each "
                  "point reports the fastest sparse and the fastest dense variant)")->delimiter(',');
  sub->add_option("--warmup", args->warmup, "Untimed calls before timing")->check(CLI::Range(0, 1000));
  sub->add_option("--repeats", args->repeats, "Timed calls per configuration (median, min, max)")->check(CLI::Range(1, 10000));
  sub->add_option("--seed", args->seed, "Seed of the random weights and activations");
  sub->add_option("--out", args->out, "Output prefix: writes PREFIX.json, PREFIX.csv, PREFIX.md");
  sub->add_option("--tuning-cache", args->tuning_cache,
                  "Tuning cache file (default $SLIDESPARSE_TUNING_CACHE or ~/.cache/slidesparse/tuning.json; "
                  "'none': tune in memory only)");
  return [args, &app]() -> int {
    std::vector<bench::ModelShapes> models;
    for (auto const& m : args->models) models.push_back(bench::model_shapes(m));
    std::vector<std::int64_t> ms;
    for (auto const& m : args->ms) ms.push_back(parse_m(m));
    std::vector<DType> dtypes;
    for (auto const& d : args->dtypes) dtypes.push_back(parse_compute_dtype(d));
    std::vector<SparsityPattern> patterns;
    for (auto const& p : args->patterns) patterns.push_back(SparsityPattern::parse(p));
    bool layer = false, gemm = false, quant = false;
    for (auto const& mode : args->modes) {
      if (mode == "layer") layer = true;
      else if (mode == "gemm") gemm = true;
      else if (mode == "quant_lift") quant = true;
      else fail(ErrorKind::kUsage, "bench: unknown mode '{}' (layer, gemm, quant_lift)", mode);
    }
    bool cutlass = false, sm90 = false, dispatch = false;
    for (auto const& b : args->backends) {
      if (b == "cutlass") cutlass = true;
      else if (b == "sm90") sm90 = true;
      else if (b == "dispatch") dispatch = true;
      else if (b != "library") fail(ErrorKind::kUsage, "bench: unknown backend '{}' (library, cutlass, sm90, dispatch)", b);
    }
#ifdef SLIDESPARSE_HAVE_CUDA
    io::TuningCache tuning = io::TuningCache::from_option(args->tuning_cache);
    bench::BenchOptions options;
    options.models = std::move(models);
    options.ms = std::move(ms);
    options.dtypes = std::move(dtypes);
    options.patterns = std::move(patterns);
    options.layer = layer;
    options.gemm = gemm;
    options.quant_lift = quant;
    options.cutlass = cutlass;
    options.sm90 = sm90;
    options.dispatch = dispatch;
    options.warmup = args->warmup;
    options.repeats = args->repeats;
    options.seed = args->seed;
    options.tuning = &tuning;
    options.command = fmt::format("slidesparse bench --model {} --m {} --dtype {} --pattern {} --mode {} --warmup {} "
                                  "--backend {} --repeats {} --seed {}", fmt::join(args->models, ","), fmt::join(args->ms, ","),
                                  fmt::join(args->dtypes, ","), fmt::join(args->patterns, ","),
                                  fmt::join(args->modes, ","), args->warmup, fmt::join(args->backends, ","),
                                  args->repeats, args->seed);
    options.progress = [](std::string const& line) { fmt::print(stderr, "bench: {}\n", line); };
    bench::Report const report = bench::run_benchmark(options);
    tuning.save();
    std::string const markdown = bench::to_markdown(report);
    io::write_text_file_atomic(args->out + ".json", bench::to_json(report).dump(1) + "\n");
    io::write_text_file_atomic(args->out + ".csv", bench::to_csv(report));
    io::write_text_file_atomic(args->out + ".md", markdown);
    fmt::print("{}\nGPU {} · CUDA runtime {} · cuBLASLt {} · cuSPARSELt {} · {}\n{}\n", report.environment.value("command", ""),
               report.environment.value("gpu", "?"), report.environment.value("cuda_runtime", 0),
               report.environment.value("cublaslt", 0), report.environment.value("cusparselt", 0),
               report.environment.value("date", ""), markdown);
    fmt::print("wrote {0}.json, {0}.csv, {0}.md\n", args->out);
    (void)app;
    return 0;
#else
    (void)app;
    (void)layer, (void)gemm, (void)quant;
    fail(ErrorKind::kUsage, "bench: this binary was built without the CUDA layer (no CUDA toolkit at configure time)");
#endif
  };
}

}  // namespace slidesparse::cli
