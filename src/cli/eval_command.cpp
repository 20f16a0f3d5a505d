// `slidesparse eval ppl`: perplexity of a GGUF llama model (CPU reference backend) on a text
// file, dense or with the projections pruned to a pattern; JSON result, progress on stderr.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <unistd.h>

#include <fmt/format.h>

#include "commands.hpp"
#include "slidesparse/core/error.hpp"
#include "slidesparse/core/parallel.hpp"
#include "slidesparse/io/gguf.hpp"
#include "slidesparse/io/hf_checkpoint.hpp"
#include "slidesparse/runtime/gguf_loader.hpp"
#include "slidesparse/runtime/hf_loader.hpp"
#include "slidesparse/runtime/perplexity.hpp"
#ifdef SLIDESPARSE_HAVE_CUDA
#include "slidesparse/cuda/device_info.hpp"
#include "slidesparse/runtime/gpu_model.hpp"
#endif

namespace slidesparse::cli {
namespace {

struct EvalArgs {
  std::string model;
  std::string text;
  std::string pattern = "dense";
  std::string prune = "magnitude";
  std::string calibration_text;
  std::int64_t calibration_tokens = 512;
  double dampening = 0.01;
  std::string calibration = "one-pass";
  std::int64_t tokens = 4096;
  std::int64_t context = 512;
  std::int64_t stride = 256;
  std::string json;
  int threads = 0;
  bool slide = false;
  std::string device = "cpu";
  std::string dtype = "bf16";
};

std::string read_text(std::string const& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorKind::kIo, "cannot read text file {}", path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The tokenizer of a model: `tokenizer_gguf` when given, else the model's own (its GGUF
// metadata, or a Hugging Face directory's tokenizer.json). `who` names the command in errors.
runtime::TokenizerData model_tokenizer(std::string const& model, io::GgufFile const* model_file,
                                       std::string const& tokenizer_gguf, char const* who, char const* other_remedy = "") {
  if (!tokenizer_gguf.empty()) return runtime::gguf_tokenizer_data(io::GgufFile::open(tokenizer_gguf));
  if (model_file) return runtime::gguf_tokenizer_data(*model_file);
  if (std::filesystem::exists(std::filesystem::path(model) / "tokenizer.json")) return runtime::load_hf_tokenizer(model);
  fail(ErrorKind::kUsage, "{}: {} has no tokenizer.json: give --tokenizer FILE.gguf of the same model{}", who, model,
       other_remedy);
}

}  // namespace

Command register_eval(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  auto* eval = app.add_subcommand("eval", "Evaluate a model on the CPU reference backend");
  eval->require_subcommand(1);
  auto* ppl = eval->add_subcommand("ppl", "Perplexity with sliding context windows (dense or pruned to a pattern)");
  ppl->add_option("--model", args->model, "A llama-architecture GGUF file (e.g. .deps/models/SmolLM2-135M-Instruct.Q4_1.gguf)")
      ->required();
  ppl->add_option("--text", args->text, "Text file (e.g. ../shared/data/wikitext-2/test.txt)")->required();
  ppl->add_option("--pattern", args->pattern, "dense, or prune the projections by magnitude to a pattern (6:8, 2:4, ...)");
  ppl->add_option("--prune", args->prune,
                  "magnitude; importance (Wanda: |w| * ||x||_2 from a calibration pass); or sparsegpt (second-order "
                  "pruning with error compensation against the calibration inputs' Gram matrices; changes the kept "
                  "weights too)")
      ->check(CLI::IsMember({"magnitude", "importance", "sparsegpt"}));
  ppl->add_option("--calibration-text", args->calibration_text,
                  "Text for the calibration pass of --prune importance|sparsegpt (e.g. ../shared/data/wikitext-2/valid.txt)");
  ppl->add_option("--calibration-tokens", args->calibration_tokens, "Calibration tokens (windows of --ctx)")
      ->check(CLI::Range(1, 100000000));
  ppl->add_option("--calibration", args->calibration,
                  "one-pass (default: every site's statistics from one pass of the dense model) or sequential (layer "
                  "by layer and input site by site, each calibrated on the model as pruned so far, as the SparseGPT "
                  "and Wanda papers do; ~1.5x the time, no better on SmolLM2-135M: docs/ACCURACY.md)")
      ->check(CLI::IsMember({"sequential", "one-pass"}));
  ppl->add_option("--dampening", args->dampening,
                  "sparsegpt: added to the Gram matrix's diagonal, relative to its mean (default 0.01)")
      ->check(CLI::Range(0.0, 1e6));
  ppl->add_option("--tokens", args->tokens, "Tokens of the text to evaluate (from its start)")->check(CLI::Range(2, 100000000));
  ppl->add_option("--ctx", args->context, "Context tokens per window")->check(CLI::Range(2, 1000000));
  ppl->add_option("--stride", args->stride, "Window step (<= ctx)")->check(CLI::Range(1, 1000000));
  ppl->add_option("--json", args->json, "Write the result as JSON to this file");
  ppl->add_option("--threads", args->threads, "Worker threads (default: all cores)");
  ppl->add_option("--device", args->device,
                  "cpu (float32 reference) or gpu (the GPU decoder: BF16 activations, --dtype projections; with "
                  "--slide the pruned projections run as SlideSparse layers, without as dense layers)");
  ppl->add_option("--dtype", args->dtype, "Projections on the GPU: bf16, fp8 or int8 (W8A8)");
  ppl->add_flag("--slide", args->slide,
                "Run the pruned projections through the SlideSparse path (slid W', lifted x); its logits equal "
                "the dense path's bit for bit (needs --pattern)");
  return [args, ppl]() -> int {
    if (!ppl->parsed()) return 2;
    if (args->threads > 0) set_worker_threads(args->threads);
    auto const start = std::chrono::steady_clock::now();
    io::GgufFile const file = io::GgufFile::open(args->model);
    runtime::BpeTokenizer const tokenizer(runtime::gguf_tokenizer_data(file));
    runtime::ModelWeights weights = runtime::load_gguf_weights(file);
    runtime::EncodeOptions const encode{.add_special = false, .missing_byte = runtime::MissingByte::kSkip};
    bool const importance = args->pattern != "dense" && args->prune == "importance";
    bool const second_order = args->pattern != "dense" && args->prune == "sparsegpt";
    bool const calibrated = importance || second_order;
    if (args->slide && args->pattern == "dense") fail(ErrorKind::kUsage, "eval ppl: --slide needs --pattern");
    bool const gpu = args->device == "gpu";
    if (!gpu && args->device != "cpu") fail(ErrorKind::kUsage, "eval ppl: --device must be cpu or gpu, not '{}'", args->device);
    DType const gpu_dtype = model_compute_dtype(args->dtype, "eval ppl");
    if (!gpu && args->dtype != "bf16") fail(ErrorKind::kUsage, "eval ppl: --dtype applies to --device gpu");
    if (calibrated && args->calibration_text.empty()) {
      fail(ErrorKind::kUsage, "eval ppl: --prune {} needs --calibration-text (e.g. the validation split)", args->prune);
    }
    bool const tty = ::isatty(STDERR_FILENO) != 0;
    if (args->pattern != "dense") {
      SparsityPattern const pattern = SparsityPattern::parse(args->pattern);
      if (calibrated) {
        std::vector<int> calib = tokenizer.encode(read_text(args->calibration_text), encode);
        if (static_cast<std::int64_t>(calib.size()) > args->calibration_tokens) {
          calib.resize(static_cast<std::size_t>(args->calibration_tokens));
        }
        if (args->calibration == "sequential") {
          runtime::prune_model_sequential(
              weights, pattern, second_order ? runtime::SequentialCriterion::kSecondOrder : runtime::SequentialCriterion::kImportance,
              calib, args->context, args->dampening, [&](std::int64_t done, std::int64_t total) {
                if (tty) fmt::print(stderr, "\reval ppl: pruning layer {}/{}", done, total);
              });
          if (tty) fmt::print(stderr, "\n");
        } else {
          runtime::CpuModel const dense(weights);
          runtime::ActivationStats const stats = runtime::calibrate(dense, calib, args->context, second_order);
          if (second_order) {
            runtime::prune_model_second_order(weights, pattern, stats, args->dampening);
          } else {
            runtime::prune_model(weights, pattern, &stats);
          }
        }
      } else {
        runtime::prune_model(weights, pattern);
      }
      if (args->slide && !gpu) weights.slide_projections(pattern);
    }
    std::vector<int> ids = tokenizer.encode(read_text(args->text), encode);
    if (static_cast<std::int64_t>(ids.size()) > args->tokens) ids.resize(static_cast<std::size_t>(args->tokens));
    auto const progress = [&](std::int64_t done, std::int64_t total) {
      if (tty) fmt::print(stderr, "\reval ppl: window {}/{}", done, total);
    };
    runtime::PerplexityOptions const windows{args->context, std::min(args->stride, args->context)};
    runtime::PerplexityResult r;
    if (gpu) {
#ifdef SLIDESPARSE_HAVE_CUDA
      if (std::string const problem = cuda::query_cuda_environment().problem; !problem.empty()) {
        fail(ErrorKind::kUsage, "eval ppl: no usable GPU: {}", problem);
      }
      runtime::GpuModelOptions options;
      options.compute_dtype = gpu_dtype;
      if (args->slide) options.pattern = SparsityPattern::parse(args->pattern);
      runtime::GpuModel model(weights, options);
      model.reserve(1, args->context, args->context);
      r = runtime::perplexity([&](std::span<int const> window) { return model.sequence_logits(window); },
                              model.config().vocab, ids, windows, progress);
#else
      (void)gpu_dtype;
      fail(ErrorKind::kUsage, "eval ppl: this binary was built without the CUDA layer");
#endif
    } else {
      runtime::CpuModel const model(std::move(weights));
      r = runtime::perplexity(model, ids, windows, progress);
    }
    if (tty) fmt::print(stderr, "\n");
    double const seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    nlohmann::json const result = {
        {"model", args->model},     {"text", args->text},          {"pattern", args->pattern},
        {"prune", args->pattern == "dense" ? "none" : args->prune},  {"tokens", ids.size()},
        {"calibration_text", calibrated ? args->calibration_text : ""},
        {"calibration_tokens", calibrated ? args->calibration_tokens : 0},
        {"calibration", calibrated ? args->calibration : ""},
        {"dampening", second_order ? args->dampening : 0.0},
        {"context", args->context}, {"stride", std::min(args->stride, args->context)},
        {"path", args->slide ? "slidesparse" : "dense"}, {"device", args->device},
        {"dtype", gpu ? args->dtype : "f32"},
        {"scored", r.scored},       {"perplexity", r.perplexity()},
        {"first_half_perplexity", r.first_half_perplexity()},       {"second_half_perplexity", r.second_half_perplexity()},
        {"seconds", seconds},       {"threads", worker_threads()}};
    fmt::print("{} {}{}{}: perplexity {:.3f} over {} tokens (halves {:.3f} / {:.3f}), ctx {}, {:.1f} s\n", args->model,
               args->pattern, calibrated ? " (" + args->prune + ")" : std::string(), args->slide ? " (SlideSparse path)" : "", r.perplexity(), r.scored, r.first_half_perplexity(), r.second_half_perplexity(), args->context,
               seconds);
    if (!args->json.empty()) io::write_text_file_atomic(args->json, result.dump(1) + "\n");
    return 0;
  };
}

Command register_calibrate(CLI::App& app) {
  struct CalibrateArgs {
    std::string model, text, token_ids, tokenizer, out;
    std::int64_t tokens = 512;
    std::int64_t context = 512;
  };
  auto args = std::make_shared<CalibrateArgs>();
  auto* sub = app.add_subcommand("calibrate", "Run a model over calibration text on the CPU and write the per-input-channel "
                                              "activation norms that convert --prune importance uses (Wanda)");
  sub->add_option("--model", args->model, "A llama-architecture GGUF file or a Hugging Face Llama / Qwen2 directory")->required();
  sub->add_option("--text", args->text, "Calibration text (e.g. ../shared/data/wikitext-2/valid.txt)");
  sub->add_option("--token-ids", args->token_ids, "Calibration token ids instead of text: a file of whitespace-separated integers");
  sub->add_option("--tokenizer", args->tokenizer,
                  "GGUF file whose tokenizer encodes --text (default: the model's own: GGUF metadata or the "
                  "directory's tokenizer.json)");
  sub->add_option("--tokens", args->tokens, "Calibration tokens (from the start of the text)")->check(CLI::Range(1, 100000000));
  sub->add_option("--ctx", args->context, "Tokens per window")->check(CLI::Range(1, 1000000));
  sub->add_option("--out", args->out, "Output safetensors file (one F32 [K] vector per projection weight)")->required();
  return [args]() -> int {
    if (args->text.empty() == args->token_ids.empty()) {
      fail(ErrorKind::kUsage, "calibrate: give exactly one of --text and --token-ids");
    }
    bool const gguf = !std::filesystem::is_directory(args->model);
    std::optional<io::GgufFile> model_file;
    if (gguf) model_file.emplace(io::GgufFile::open(args->model));
    runtime::ModelWeights weights = gguf ? runtime::load_gguf_weights(*model_file) : runtime::load_hf_weights(args->model);
    std::vector<int> ids;
    if (!args->token_ids.empty()) {
      std::istringstream in(read_text(args->token_ids));
      std::string word;
      for (std::size_t i = 0; in >> word; ++i) {
        int v = 0;
        auto const [end, ec] = std::from_chars(word.data(), word.data() + word.size(), v);
        if (ec != std::errc{} || end != word.data() + word.size() || v < 0 || v >= weights.config.vocab) {
          fail(ErrorKind::kInvalidInput, "calibrate: {}: entry {} ('{}') is not a token id in 0..{}", args->token_ids, i, word,
               weights.config.vocab - 1);
        }
        ids.push_back(v);
      }
    } else {
      runtime::TokenizerData data =
          model_tokenizer(args->model, model_file ? &*model_file : nullptr, args->tokenizer, "calibrate",
                          " (or --token-ids FILE)");
      runtime::BpeTokenizer const tokenizer(std::move(data));
      ids = tokenizer.encode(read_text(args->text), {.add_special = false, .missing_byte = runtime::MissingByte::kSkip});
    }
    if (static_cast<std::int64_t>(ids.size()) > args->tokens) ids.resize(static_cast<std::size_t>(args->tokens));
    if (ids.empty()) fail(ErrorKind::kInvalidInput, "calibrate: no calibration tokens");
    auto const start = std::chrono::steady_clock::now();
    runtime::ModelConfig const config = weights.config;
    runtime::CpuModel const model(std::move(weights));
    runtime::ActivationStats const stats = runtime::calibrate(model, ids, args->context);
    runtime::write_importance(stats, config, args->out,
                              {{"model", args->model},
                               {"calibration_source", args->text.empty() ? args->token_ids : args->text},
                               {"context", std::to_string(args->context)}});
    double const seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("calibrate: {} tokens through {} ({} layers) in {:.1f} s; wrote {} ({} vectors)\n", stats.tokens, args->model,
               config.layers, seconds, args->out, 7 * config.layers);
    return 0;
  };
}

Command register_generate(CLI::App& app) {
  struct GenerateArgs {
    std::string model, prompt, tokenizer, pattern = "dense", json, device = "cpu", dtype = "bf16";
    std::int64_t tokens = 32;
    bool compare = false, slide = false;
  };
  auto args = std::make_shared<GenerateArgs>();
  auto* sub = app.add_subcommand("generate", "Greedy text generation with a Llama / Qwen2 model on the CPU reference backend "
                                             "or the GPU, dense or pruned (magnitude) to a pattern");
  sub->add_option("--model", args->model,
                  "A llama-architecture GGUF file (e.g. .deps/models/SmolLM2-135M-Instruct.Q4_1.gguf) or a Hugging Face "
                  "Llama / Qwen2 directory (with tokenizer.json, or give --tokenizer)")
      ->required();
  sub->add_option("--tokenizer", args->tokenizer, "GGUF file whose tokenizer to use (default: the model's own)");
  sub->add_option("--prompt", args->prompt, "Prompt text (continued as is; no chat template)")->required();
  sub->add_option("--pattern", args->pattern, "dense, or prune the projections by magnitude to a pattern (6:8, ...)");
  sub->add_option("--tokens", args->tokens, "New tokens at most (stops early at the end-of-text token)")
      ->check(CLI::Range(1, 4096));
  sub->add_flag("--compare", args->compare, "With --pattern: also generate with the dense model, side by side");
  sub->add_flag("--slide", args->slide, "Run the pruned projections through the SlideSparse path (same tokens)");
  sub->add_option("--device", args->device,
                  "cpu (float32 reference) or gpu (the GPU decoder: BF16 activations, --dtype projections, decode "
                  "steps as CUDA graphs)");
  sub->add_option("--dtype", args->dtype, "Projections on the GPU: bf16, fp8 or int8 (W8A8)");
  sub->add_option("--json", args->json, "Write the prompt and the generations as JSON to this file");
  return [args, sub]() -> int {
    if (!sub->parsed()) return 2;
    if ((args->compare || args->slide) && args->pattern == "dense") {
      fail(ErrorKind::kUsage, "generate: --compare and --slide need --pattern");
    }
    bool const gpu = args->device == "gpu";
    if (!gpu && args->device != "cpu") fail(ErrorKind::kUsage, "generate: --device must be cpu or gpu, not '{}'", args->device);
    DType const gpu_dtype = model_compute_dtype(args->dtype, "generate");
    if (!gpu && args->dtype != "bf16") fail(ErrorKind::kUsage, "generate: --dtype applies to --device gpu");
    bool const gguf = !std::filesystem::is_directory(args->model);
    std::optional<io::GgufFile> model_file;
    if (gguf) model_file.emplace(io::GgufFile::open(args->model));
    runtime::BpeTokenizer const tokenizer(
        model_tokenizer(args->model, model_file ? &*model_file : nullptr, args->tokenizer, "generate"));
    runtime::ModelWeights const loaded = gguf ? runtime::load_gguf_weights(*model_file) : runtime::load_hf_weights(args->model);
    std::vector<int> const prompt =
        tokenizer.encode(args->prompt, {.add_special = false, .missing_byte = runtime::MissingByte::kSkip});
    if (prompt.empty()) fail(ErrorKind::kUsage, "generate: the prompt encodes to no tokens");
#ifdef SLIDESPARSE_HAVE_CUDA
    if (gpu) {
      if (std::string const problem = cuda::query_cuda_environment().problem; !problem.empty()) {
        fail(ErrorKind::kUsage, "generate: no usable GPU: {}", problem);
      }
    }
#else
    (void)gpu_dtype;
    if (gpu) fail(ErrorKind::kUsage, "generate: this binary was built without the CUDA layer");
#endif
    nlohmann::json result = {{"model", args->model}, {"prompt", args->prompt}, {"device", args->device},
                             {"dtype", gpu ? args->dtype : "f32"}, {"generations", nlohmann::json::array()}};
    std::vector<std::string> variants;
    if (args->pattern == "dense" || args->compare) variants.push_back("dense");
    if (args->pattern != "dense") variants.push_back(args->pattern);
    for (std::string const& variant : variants) {
      runtime::ModelWeights weights = loaded;
      std::optional<SparsityPattern> pattern;
      if (variant != "dense") {
        pattern = SparsityPattern::parse(variant);
        runtime::prune_model(weights, *pattern);
      }
      std::vector<int> ids;
      std::chrono::steady_clock::time_point start;  // generation time, after the model is built
      if (gpu) {
#ifdef SLIDESPARSE_HAVE_CUDA
        // Prefill leaves the first new token as the slot's next token; each decode step appends
        // the pending token and chooses the next: after s steps tokens(0) = prompt + new[0 .. s-1]
        // and next_token(0) = new[s]. Decode runs in chunks (one graph capture each) so that an
        // end-of-text token stops it early, as on the CPU.
        runtime::GpuModelOptions options;
        options.compute_dtype = gpu_dtype;
        if (args->slide) options.pattern = pattern;
        runtime::GpuModel model(weights, options);
        auto const p = static_cast<std::int64_t>(prompt.size());
        model.reserve(1, p + args->tokens, p);
        start = std::chrono::steady_clock::now();
        std::vector<runtime::SequenceStep> const step = {{0, prompt}};
        model.forward(step, false);
        std::optional<int> const eos = tokenizer.eos();
        constexpr std::int64_t kChunk = 32;
        while (true) {
          std::vector<int> const cache = model.tokens(0);
          ids.assign(cache.begin() + p, cache.end());
          ids.push_back(model.next_token(0));
          auto const stop = eos ? std::find(ids.begin(), ids.end(), *eos) : ids.end();
          if (stop != ids.end()) {
            ids.erase(stop, ids.end());
            break;
          }
          auto const made = static_cast<std::int64_t>(ids.size());
          if (made >= args->tokens) break;
          model.decode_greedy(1, std::min(kChunk, args->tokens - made), true);
        }
#endif
      } else {
        if (args->slide) weights.slide_projections(*pattern);
        runtime::CpuModel const model(std::move(weights));
        start = std::chrono::steady_clock::now();
        ids = runtime::greedy_generate(model, prompt, args->tokens, tokenizer.eos());
      }
      double const seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::string const text = tokenizer.decode(ids);
      std::string const label = variant == "dense" ? "dense" : variant + " (magnitude" + (args->slide ? ", SlideSparse path)" : ")");
      fmt::print("[{}] {}{}\n", label, args->prompt, text);
      result["generations"].push_back({{"variant", label}, {"text", text}, {"tokens", ids}, {"seconds", seconds}});
    }
    if (!args->json.empty()) io::write_text_file_atomic(args->json, result.dump(1) + "\n");
    return 0;
  };
}

}  // namespace slidesparse::cli
