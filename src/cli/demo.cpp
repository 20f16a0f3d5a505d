// `slidesparse demo`: the README's main job on a built-in default. Part 1 builds a small synthetic
// Llama-shaped checkpoint, converts it to 6:8 (BF16 and INT8 W8A8), verifies the pattern and
// the slide/unslide round trip, slides a shard, and checks X * W^T == lift(X) * W'^T exactly in
// integer arithmetic for every linear layer. Part 2 (when setup installed SmolLM2-135M and the
// WikiText data is beside the repository) shows dense vs 2:4 vs the pattern on the real model:
// perplexity, a greedy generation, and the SlideSparse path giving the pruned model's result.
// Part 3 (when a GPU is present): end-to-end throughput of 2:4, the pattern and dense on the GPU
// decoder with Llama-3.2-1B's shapes (`slidesparse run`'s measurement). No files from the user
// are needed.
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>

#include <fmt/format.h>

#include "commands.hpp"
#include "slidesparse/convert/convert.hpp"
#include "slidesparse/convert/synthetic.hpp"
#include "slidesparse/core/lift.hpp"
#include "slidesparse/core/slide.hpp"
#include "slidesparse/io/gguf.hpp"
#include "slidesparse/io/hf_checkpoint.hpp"
#include "slidesparse/runtime/gguf_loader.hpp"
#include "slidesparse/runtime/perplexity.hpp"
#include "slidesparse/runtime/tokenizer.hpp"
#ifdef SLIDESPARSE_HAVE_CUDA
#include "slidesparse/bench/model_run.hpp"
#include "slidesparse/cuda/device_info.hpp"
#include "slidesparse/io/tuning_cache.hpp"
#endif

namespace slidesparse::cli {
namespace fs = std::filesystem;

namespace {

struct ExactnessResult {
  int layers = 0;
  std::int64_t products = 0;
  bool exact = true;
};

// For every INT8 linear weight W [N, K] of the checkpoint: random INT8 activations X [M, K],
// dense X * W^T against slid lift(X) * W'^T, in int64 (exact).
ExactnessResult check_exact_products(fs::path const& dir, SparsityPattern pattern, std::uint64_t seed) {
  io::HfCheckpoint const ckpt = io::HfCheckpoint::open(dir);
  convert::TensorSelection const selection("", "");
  ExactnessResult result;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> dist(-127, 127);
  for (auto const& t : ckpt.tensors()) {
    if (!selection.selects(t, true) || t.dtype != DType::kI8) continue;
    std::int64_t const n = t.shape[0], k = t.shape[1], m = 7;
    auto const w = ckpt.plain_bytes(t);
    ActivationLayout const layout = ActivationLayout::slid(pattern, k);
    std::vector<std::int8_t> x(static_cast<std::size_t>(m * k));
    for (auto& v : x) v = static_cast<std::int8_t>(dist(rng));
    std::vector<std::int8_t> ws(static_cast<std::size_t>(n * layout.k_lifted()));
    std::vector<std::int8_t> xs(static_cast<std::size_t>(m * layout.k_lifted()));
    slide({DType::kI8, n, k, w.data(), t.name}, pattern, layout.shape(),
          {DType::kI8, n, layout.k_lifted(), reinterpret_cast<std::byte*>(ws.data()), t.name});
    lift({DType::kI8, m, k, reinterpret_cast<std::byte const*>(x.data()), "x"}, layout,
         {DType::kI8, m, layout.k_lifted(), reinterpret_cast<std::byte*>(xs.data()), "x'"});
    auto const* wd = reinterpret_cast<std::int8_t const*>(w.data());
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t j = 0; j < n; ++j) {
        std::int64_t dense = 0, sparse = 0;
        for (std::int64_t c = 0; c < k; ++c) dense += std::int64_t{x[static_cast<std::size_t>(i * k + c)]} * wd[j * k + c];
        for (std::int64_t c = 0; c < layout.k_lifted(); ++c) {
          sparse += std::int64_t{xs[static_cast<std::size_t>(i * layout.k_lifted() + c)]} *
                    ws[static_cast<std::size_t>(j * layout.k_lifted() + c)];
        }
        result.exact = result.exact && dense == sparse;
        ++result.products;
      }
    }
    ++result.layers;
  }
  return result;
}

// The repository root when the binary runs from its build folder (build/bin/slidesparse).
fs::path repository_root() {
  std::error_code ec;
  fs::path const exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : exe.parent_path().parent_path().parent_path();
}

// Part 2 of the demo: the real model (SmolLM2-135M) dense, pruned by magnitude to 2:4 and to
// the pattern, and the pattern through the SlideSparse path: perplexity on a short WikiText
// excerpt and a greedy generation, side by side. A couple of minutes on 2 cores.
bool real_model_part(std::string model_arg, std::string text_arg, SparsityPattern pattern) {
  fs::path const root = repository_root();
  fs::path const model_path = model_arg.empty() ? root / ".deps/models/SmolLM2-135M-Instruct.Q4_1.gguf" : fs::path(model_arg);
  fs::path const text_path = text_arg.empty() ? root / "../shared/data/wikitext-2/test.txt" : fs::path(text_arg);
  if (!fs::exists(model_path) || !fs::exists(text_path)) {
    fmt::print("== real model: skipped ({} not found; scripts/setup.sh installs the model, --model/--text "
               "name others)\n", fs::exists(model_path) ? text_path.string() : model_path.string());
    return true;
  }
  io::GgufFile const file = io::GgufFile::open(model_path);
  runtime::BpeTokenizer const tokenizer(runtime::gguf_tokenizer_data(file));
  runtime::ModelWeights const dense = runtime::load_gguf_weights(file);
  std::ifstream in(text_path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::vector<int> ids =
      tokenizer.encode(buffer.str(), {.add_special = false, .missing_byte = runtime::MissingByte::kSkip});
  ids.resize(std::min<std::size_t>(ids.size(), 384));
  std::string const prompt = "The city lies on a wide river that";
  std::vector<int> const prompt_ids = tokenizer.encode(prompt, {.add_special = false});
  fmt::print("== real model: {} ({} layers, hidden {}), WikiText-2 test, first {} tokens, ctx 128, "
             "magnitude pruning of every projection\n",
             model_path.filename().string(), dense.config.layers, dense.config.hidden, ids.size());
  fmt::print("| model | perplexity | vs dense | greedy continuation of \"{}\" |\n|---|---|---|---|\n", prompt);
  struct Variant {
    std::string label;
    std::optional<SparsityPattern> pattern;
    bool slide;
  };
  std::vector<Variant> const variants = {{"dense", std::nullopt, false},
                                         {"2:4", SparsityPattern::parse("2:4"), false},
                                         {pattern.to_string(), pattern, false},
                                         {pattern.to_string() + ", SlideSparse path", pattern, true}};
  double dense_ppl = 0, pattern_ppl = 0, slid_ppl = -1;
  for (Variant const& v : variants) {
    runtime::ModelWeights weights = dense;
    if (v.pattern) runtime::prune_model(weights, *v.pattern);
    if (v.slide) weights.slide_projections(*v.pattern);
    runtime::CpuModel const model(std::move(weights));
    double const ppl = runtime::perplexity(model, ids, {128, 64}).perplexity();
    std::string const text = tokenizer.decode(runtime::greedy_generate(model, prompt_ids, 16, tokenizer.eos()));
    if (v.label == "dense") dense_ppl = ppl;
    if (v.pattern && *v.pattern == pattern) (v.slide ? slid_ppl : pattern_ppl) = ppl;
    std::string escaped;
    for (char const c : text) escaped += c == '\n' ? std::string(" ") : c == '|' ? std::string("\\|") : std::string(1, c);
    fmt::print("| {} | {:.2f} | x{:.2f} | {}... |\n", v.label, ppl, ppl / dense_ppl, escaped);
  }
  bool const lossless = slid_ppl == pattern_ppl;
  fmt::print("== SlideSparse path == pruned model: {} (perplexity equal to the last bit); docs/ACCURACY.md has "
             "the full table (2048 tokens, importance pruning too)\n",
             lossless ? "yes" : "NO");
  return lossless;
}

// Part 3: the GPU decoder's prefill and decode throughput, 2:4 / pattern / dense, FP8.
bool gpu_part(SparsityPattern pattern) {
#ifdef SLIDESPARSE_HAVE_CUDA
  cuda::CudaEnvironment const env = cuda::query_cuda_environment();
  if (!env.problem.empty()) {
    fmt::print("== GPU part skipped: {}\n", env.problem);
    return true;
  }
  fmt::print("== Throughput on the GPU ({}): Llama-3.2-1B shapes with random weights, FP8 W8A8, 2:4 / {} / dense, "
             "8 sequences x 256 prompt tokens, 32 greedy decode steps\n",
             env.gpus.front().name, pattern.to_string());
  io::TuningCache tuning(io::TuningCache::default_path());
  bench::ModelRunOptions o;
  o.model = "preset:llama3.2-1b";
  o.dtype = DType::kF8E4M3;
  o.patterns = {SparsityPattern::parse("2:4"), pattern, std::nullopt};
  o.batches = {8};
  o.prompt_lens = {256};
  o.gen_len = 32;
  o.profile = false;
  o.tuning = &tuning;
  o.command = "slidesparse demo (GPU part)";
  nlohmann::json const result = bench::run_model(o);
  tuning.save();
  fmt::print("{}", bench::model_run_summary(result));
  return true;
#else
  (void)pattern;
  fmt::print("== GPU part skipped: this binary was built without the CUDA layer\n");
  return true;
#endif
}

}  // namespace

Command register_demo(CLI::App& app) {
  struct Args {
    std::string dir, pattern = "6:8", model, text;
    bool keep = false, real_model = true, gpu = true;
  };
  auto args = std::make_shared<Args>();
  auto* sub = app.add_subcommand("demo", "Synthetic model -> 6:8 -> verify -> exact-product check (no files needed)");
  sub->add_option("--dir", args->dir, "Work directory (default: a temporary one, removed afterwards)");
  sub->add_option("--pattern", args->pattern, "Pattern to demonstrate")->capture_default_str();
  sub->add_flag("--keep", args->keep, "Keep the work directory");
  sub->add_option("--model", args->model,
                  "GGUF model for the accuracy part (default: the SmolLM2-135M that scripts/setup.sh installs)");
  sub->add_option("--text", args->text, "Text for the accuracy part (default: ../shared/data/wikitext-2/test.txt)");
  sub->add_flag("!--no-real-model", args->real_model, "Skip the accuracy part on the real model");
  sub->add_flag("!--no-gpu", args->gpu, "Skip the GPU throughput part (which runs only where a GPU is present)");
  return [args] {
    SparsityPattern const pattern = SparsityPattern::parse(args->pattern);
    bool const temporary = args->dir.empty();
    fs::path const dir = temporary ? fs::temp_directory_path() /
                                         fmt::format("slidesparse-demo-{:08x}", std::random_device{}())
                                   : fs::path(args->dir);
    struct Cleanup {
      fs::path dir;
      bool active;
      ~Cleanup() {
        std::error_code ec;
        if (active) fs::remove_all(dir, ec);
      }
    } cleanup{dir, temporary && !args->keep};

    fmt::print("== SlideSparse demo: {} on a synthetic Llama-shaped checkpoint ({})\n",
               pattern.to_string(), dir.string());
    convert::SyntheticSpec const spec = convert::synthetic_preset("tiny");
    convert::write_synthetic_checkpoint(dir / "dense", spec);
    fmt::print("1. synthetic model: {} layers, hidden {}, FFN {}, {} parameters, BF16, 2 shards\n",
               spec.layers, spec.hidden, spec.intermediate, spec.parameter_count());

    convert::ConvertOptions options;
    options.pattern = pattern;
    options.progress = false;
    options.overwrite = true;
    auto const bf16 = convert::convert_checkpoint(dir / "dense", dir / "pruned-bf16", options);
    options.quant = convert::QuantTarget::kInt8;
    auto const int8 = convert::convert_checkpoint(dir / "dense", dir / "pruned-int8", options);
    std::int64_t zeroed = 0, elements = 0;
    for (auto const& t : bf16.tensors) {
      zeroed += t.zeroed;
      elements += t.shape[0] * t.shape[1];
    }
    fmt::print("2. convert --pattern {}: {} linear weights pruned, {:.1f}% of their values zeroed "
               "(ideal {:.1f}%); BF16 and INT8 W8A8 outputs\n", pattern.to_string(),
               bf16.tensors.size(), 100.0 * static_cast<double>(zeroed) / static_cast<double>(elements),
               100.0 * 2 / pattern.block());

    bool ok = true;
    for (char const* name : {"pruned-bf16", "pruned-int8"}) {
      auto const report = convert::verify_checkpoint(dir / name, std::nullopt, "", "");
      fmt::print("3. verify {}: {} of {} tensors satisfy {} and slide/unslide reproduces them: {}\n",
                 name, std::count_if(report.tensors.begin(), report.tensors.end(), [](auto const& t) { return t.ok; }),
                 report.tensors.size(), pattern.to_string(), report.ok() ? "yes" : "NO");
      ok = ok && report.ok();
    }

    io::HfCheckpoint const pruned = io::HfCheckpoint::open(dir / "pruned-int8");
    convert::SlideFileOptions slide_options;
    slide_options.pattern = pattern;
    slide_options.progress = false;
    slide_options.include = convert::kDefaultLinearRegex;
    auto const slid = convert::slide_file(dir / "pruned-int8" / pruned.shard_files()[0],
                                          dir / "slid-shard0.safetensors", slide_options);
    auto const slid_check = convert::verify_checkpoint(dir / "slid-shard0.safetensors", std::nullopt, "", "");
    auto const& first = slid.tensors.front();
    fmt::print("4. slide shard 0: {} tensors to [N, K'] (e.g. {}: K {} -> K' {}); valid 2:4 windows: {}\n",
               slid.tensors.size(), first.name, pruned.find(first.name)->shape[1], first.k_lifted,
               slid_check.ok() ? "yes" : "NO");
    ok = ok && slid_check.ok();

    ExactnessResult const exact = check_exact_products(dir / "pruned-int8", pattern, 2026);
    fmt::print("5. X*W^T == lift(X)*W'^T in integer arithmetic: {} layers, {} dot products, exact: {}\n",
               exact.layers, exact.products, exact.exact ? "yes" : "NO");
    ok = ok && exact.exact && exact.layers > 0;
    fmt::print("== {}: the slid model computes exactly what the pruned model computes; the 2:4 "
               "tensor cores run K' = {:.2f} K, an ideal speedup of {:.2f}x over dense\n",
               ok ? "PASS" : "FAIL", pattern.expansion() / 2, pattern.ideal_speedup());
    if (!temporary || args->keep) fmt::print("files kept in {}\n", dir.string());
    if (ok && args->real_model) ok = real_model_part(args->model, args->text, pattern);
    if (ok && args->gpu) ok = gpu_part(pattern);
    return ok ? 0 : 1;
  };
}

}  // namespace slidesparse::cli
