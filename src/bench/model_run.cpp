#include "slidesparse/bench/model_run.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <filesystem>
#include <map>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "slidesparse/bench/runner.hpp"
#include "slidesparse/core/error.hpp"
#include "slidesparse/core/random.hpp"
#include "slidesparse/cuda/check.hpp"
#include "slidesparse/cuda/device_info.hpp"
#include "slidesparse/io/gguf.hpp"
#include "slidesparse/io/tuning_cache.hpp"
#include "slidesparse/runtime/gguf_loader.hpp"
#include "slidesparse/runtime/gpu_model.hpp"
#include "slidesparse/runtime/hf_loader.hpp"
#include "slidesparse/runtime/perplexity.hpp"

namespace slidesparse::bench {
namespace {

using runtime::GpuModel;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

nlohmann::json stats_ms(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  double const median = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  return {{"median_ms", median}, {"min_ms", v.front()}, {"max_ms", v.back()}, {"runs", v.size()}};
}

nlohmann::json breakdown_json(runtime::TimeBreakdown const& b) {
  double const total = b.total_ms();
  auto share = [&](double x) { return total > 0 ? x / total : 0.0; };
  nlohmann::json ops;
  for (auto const& [name, ms] : b.by_operation) ops[name] = ms;
  return {{"linear_ms", b.linear_ms},       {"attention_ms", b.attention_ms}, {"other_ms", b.other_ms},
          {"linear_share", share(b.linear_ms)}, {"attention_share", share(b.attention_ms)},
          {"other_share", share(b.other_ms)}, {"by_operation_ms", ops}};
}

// Builds the model of one variant. Presets generate each layer's random weights on the fly
// (pruned by magnitude for a pattern); files load as float32, then prune.
std::unique_ptr<GpuModel> build_model(ModelRunOptions const& o, std::optional<SparsityPattern> pattern) {
  runtime::GpuModelOptions mo;
  mo.compute_dtype = o.dtype;
  mo.pattern = pattern;
  mo.backend = o.backend;
  mo.dense_fallback = o.dense_fallback;
  mo.attention = o.attention;
  std::string const prefix = "preset:";
  if (o.model.rfind(prefix, 0) == 0) {
    runtime::ModelConfig const c = runtime::ModelConfig::preset(o.model.substr(prefix.size()));
    std::vector<float> const embed =
        runtime::random_values(static_cast<std::size_t>(c.vocab * c.hidden), 0.0f, 0.02f, splitmix64(o.seed));
    std::vector<float> const norm = runtime::random_values(static_cast<std::size_t>(c.hidden), 1.0f, 0.05f, o.seed + 7);
    std::unique_ptr<runtime::CpuLinear> head;
    if (!c.tie_embeddings) {
      head = std::make_unique<runtime::CpuLinear>(
          runtime::random_values(static_cast<std::size_t>(c.vocab * c.hidden), 0.0f, 0.02f, o.seed + 11), c.vocab, c.hidden);
    }
    return std::make_unique<GpuModel>(
        c, embed, norm, head.get(),
        [&](std::int64_t l) {
          auto const t0 = std::chrono::steady_clock::now();
          runtime::LayerWeights w = runtime::random_layer_weights(c, l, o.seed, pattern);
          if (o.progress) {
            o.progress(fmt::format("{}: layer {}/{} (weights generated in {:.2f} s)", c.name, l + 1, c.layers, seconds_since(t0)));
          }
          return w;
        },
        mo, o.tuning);
  }
  std::filesystem::path const path(o.model);
  runtime::ModelWeights w = std::filesystem::is_directory(path)
                                ? runtime::load_hf_weights(path)
                                : runtime::load_gguf_weights(io::GgufFile::open(path));
  if (pattern) runtime::prune_model(w, *pattern);
  return std::make_unique<GpuModel>(w, mo, o.tuning);
}

// Prefill, decode and the profiled pass at one (B, P) on a loaded model.
nlohmann::json measure_point(ModelRunOptions const& o, GpuModel& model, std::int64_t B, std::int64_t P,
                             std::function<void(std::string const&)> const& say) {
  runtime::ModelConfig const& c = model.config();
  std::int64_t const G = o.gen_len;
  // Capacity: the prompt, the generated tokens, and one spare step.
  model.reserve(B, P + G + 1, B * P);
  // Prompts: random token ids (throughput does not depend on the text), one per sequence.
  std::vector<std::vector<int>> prompts(static_cast<std::size_t>(B));
  for (std::int64_t s = 0; s < B; ++s) {
    auto& p = prompts[static_cast<std::size_t>(s)];
    p.resize(static_cast<std::size_t>(P));
    for (std::int64_t t = 0; t < P; ++t) {
      p[static_cast<std::size_t>(t)] =
          static_cast<int>(splitmix64(o.seed ^ (static_cast<std::uint64_t>(s) << 32) ^ static_cast<std::uint64_t>(t)) %
                           static_cast<std::uint64_t>(c.vocab));
    }
  }
  std::vector<runtime::SequenceStep> steps;
  for (std::int64_t s = 0; s < B; ++s) steps.push_back({s, prompts[static_cast<std::size_t>(s)]});
  cudaEvent_t start = nullptr, stop = nullptr;
  SLIDESPARSE_CUDA_CHECK(cudaEventCreate(&start));
  SLIDESPARSE_CUDA_CHECK(cudaEventCreate(&stop));
  auto prefill = [&]() {
    for (std::int64_t s = 0; s < B; ++s) model.reset(s);
    SLIDESPARSE_CUDA_CHECK(cudaEventRecord(start, model.stream()));
    model.forward(steps, false);
    SLIDESPARSE_CUDA_CHECK(cudaEventRecord(stop, model.stream()));
    SLIDESPARSE_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    SLIDESPARSE_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return static_cast<double>(ms);
  };
  double const first_ms = prefill();  // warm-up: plans, tuning (or the tuning cache)
  std::vector<double> prefill_ms;
  for (int r = 0; r < o.repeats; ++r) prefill_ms.push_back(prefill());
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  nlohmann::json prefill_json = stats_ms(prefill_ms);
  double const prefill_median = prefill_json["median_ms"];
  prefill_json["first_call_ms"] = first_ms;
  prefill_json["tokens"] = B * P;
  prefill_json["tokens_per_s"] = static_cast<double>(B * P) / (prefill_median / 1e3);
  say(fmt::format("B={} P={}: prefill {:.2f} ms (median of {}), {:.0f} tokens/s", B, P, prefill_median, o.repeats,
                  prefill_json["tokens_per_s"].get<double>()));

  nlohmann::json decode_json;
  if (G > 0) {
    // Decode right after the last prefill: the sequences hold P tokens and a next token each.
    model.decode_greedy(B, G, o.use_graph);
    double const ms = model.last_decode_ms();
    decode_json = {{"steps", G},
                   {"total_ms", ms},
                   {"ms_per_step", ms / static_cast<double>(G)},
                   {"tokens_per_s", static_cast<double>(B * G) / (ms / 1e3)},
                   {"graph", o.use_graph},
                   {"context", fmt::format("{} .. {}", P, P + G)}};
    say(fmt::format("B={} P={}: decode {:.3f} ms/step, {:.0f} tokens/s", B, P, ms / static_cast<double>(G),
                    decode_json["tokens_per_s"].get<double>()));
  }

  nlohmann::json breakdown;
  if (o.profile) {
    model.set_profiling(true);
    model.clear_breakdown();
    for (std::int64_t s = 0; s < B; ++s) model.reset(s);
    model.forward(steps, false);
    breakdown["prefill"] = breakdown_json(model.breakdown());
    say("prefill profile (ms): " + breakdown["prefill"]["by_operation_ms"].dump());
    if (G > 0) {
      model.clear_breakdown();
      std::int64_t const profiled = std::min<std::int64_t>(G, 16);
      model.decode_greedy(B, profiled, false);
      breakdown["decode"] = breakdown_json(model.breakdown());
      breakdown["decode"]["steps"] = profiled;
      say(fmt::format("decode profile ({} steps, ms): {}", profiled, breakdown["decode"]["by_operation_ms"].dump()));
    }
    model.set_profiling(false);
  }
  runtime::GpuModelMemory const mem = model.memory();
  return {{"batch", B},
          {"prompt_len", P},
          {"prefill", prefill_json},
          {"decode", decode_json},
          {"breakdown", breakdown},
          {"gemms_prefill", model.describe_gemms(B * P)},
          {"attention", model.describe_attention()},
          {"gemms_decode", G > 0 ? model.describe_gemms(B) : ""},
          {"memory", {{"weights_bytes", mem.weights}, {"kv_cache_bytes", mem.kv_cache}, {"activation_bytes", mem.activations}}}};
}

// One model load, then every (B, P) point.
nlohmann::json run_variant(ModelRunOptions const& o, std::optional<SparsityPattern> pattern) {
  std::string const name = pattern ? pattern->to_string() : "dense";
  auto say = [&](std::string const& s) {
    if (o.progress) o.progress(fmt::format("[{}] {}", name, s));
  };
  auto const load_start = std::chrono::steady_clock::now();
  std::unique_ptr<GpuModel> model = build_model(o, pattern);
  double const load_s = seconds_since(load_start);
  say(fmt::format("loaded in {:.1f} s", load_s));
  nlohmann::json variant = {{"variant", name}, {"load_s", load_s}};
  if (o.release_unchosen) {
    // Every M the points run: prefill B x P, decode B (<= B x P), the lm_head's segments.
    std::int64_t max_m = 1;
    for (std::int64_t const B : o.batches) {
      for (std::int64_t const P : o.prompt_lens) max_m = std::max(max_m, B * P);
    }
    std::size_t const before = model->memory().weights;
    auto const t0 = std::chrono::steady_clock::now();
    std::size_t const freed = model->release_unchosen(max_m, o.release_tolerance);
    double const release_s = seconds_since(t0);
    std::size_t const after = model->memory().weights;
    std::map<std::string, int> const holdings = model->dispatch_holdings();
    say(fmt::format("release_unchosen up to M = {}: weights {:.2f} -> {:.2f} GiB ({:.2f} GiB freed in all) in {:.1f} s", max_m,
                    static_cast<double>(before) / (1 << 30), static_cast<double>(after) / (1 << 30),
                    static_cast<double>(freed) / (1 << 30), release_s));
    variant["release_unchosen"] = {{"max_m", max_m},           {"tolerance", o.release_tolerance},
                                   {"weights_bytes_before", before},
                                   {"weights_bytes_after", after}, {"freed_bytes", freed},
                                   {"seconds", release_s},        {"gemms_at_max_m", model->describe_gemms(max_m)},
                                   {"holdings", holdings}};
    for (auto const& [held, count] : holdings) say(fmt::format("  {} x {}", count, held));
  }
  nlohmann::json points = nlohmann::json::array();
  for (std::int64_t const B : o.batches) {
    for (std::int64_t const P : o.prompt_lens) points.push_back(measure_point(o, *model, B, P, say));
  }
  variant["points"] = points;
  return variant;
}

}  // namespace

nlohmann::json run_model(ModelRunOptions const& o) {
  auto positive = [](std::vector<std::int64_t> const& v) {
    return !v.empty() && std::all_of(v.begin(), v.end(), [](std::int64_t x) { return x >= 1; });
  };
  if (!positive(o.batches) || !positive(o.prompt_lens) || o.gen_len < 0 || o.repeats < 1 || o.patterns.empty()) {
    fail(ErrorKind::kUsage, "run: batches, prompt lengths, patterns and repeats must be given and positive, gen length non-negative");
  }
  if (std::string const problem = cuda::query_cuda_environment().problem; !problem.empty()) {
    fail(ErrorKind::kUsage, "run: no usable GPU: {}", problem);
  }
  nlohmann::json result;
  result["environment"] = gpu_environment(o.command);
  result["model"] = o.model;
  result["dtype"] = bench_dtype_name(o.dtype);
  result["batches"] = o.batches;
  result["prompt_lens"] = o.prompt_lens;
  result["gen_len"] = o.gen_len;
  result["seed"] = o.seed;
  result["method"] =
      "prefill: B sequences of P tokens in one step, output length 1, CUDA events around the step, warm-up then "
      "median of repeats; decode: G greedy steps of one token per sequence (CUDA graph per step), events around "
      "all steps; one model load per variant, then every (B, P)";
  result["variants"] = nlohmann::json::array();
  std::vector<std::optional<SparsityPattern>> variants = o.patterns;
  bool const has_dense = std::any_of(variants.begin(), variants.end(), [](auto const& p) { return !p.has_value(); });
  if (o.compare_dense && !has_dense) variants.push_back(std::nullopt);
  for (auto const& p : variants) result["variants"].push_back(run_variant(o, p));
  // Speedups of every sparse variant over dense, point by point.
  nlohmann::json const* dense = nullptr;
  for (auto const& v : result["variants"]) {
    if (v["variant"] == "dense") dense = &v;
  }
  if (dense) {
    nlohmann::json speedups = nlohmann::json::array();
    for (auto const& v : result["variants"]) {
      if (v["variant"] == "dense") continue;
      for (std::size_t i = 0; i < v["points"].size(); ++i) {
        nlohmann::json const& s = v["points"][i];
        nlohmann::json const& d = (*dense)["points"][i];
        nlohmann::json e = {{"variant", v["variant"]}, {"batch", s["batch"]}, {"prompt_len", s["prompt_len"]}};
        e["prefill"] = d["prefill"]["median_ms"].get<double>() / s["prefill"]["median_ms"].get<double>();
        if (o.gen_len > 0) e["decode"] = d["decode"]["total_ms"].get<double>() / s["decode"]["total_ms"].get<double>();
        if (o.profile) {
          // What the linear layers alone gained, and the end-to-end speedup that gain predicts
          // from the dense profile's linear share (Amdahl): the runtime should deliver >= 0.9 of it.
          double const ls = s["breakdown"]["prefill"]["linear_ms"], ld = d["breakdown"]["prefill"]["linear_ms"];
          double const share = d["breakdown"]["prefill"]["linear_share"];
          e["prefill_linear"] = ld / ls;
          e["prefill_expected"] = 1.0 / ((1.0 - share) + share / (ld / ls));
        }
        speedups.push_back(e);
      }
    }
    result["speedup_vs_dense"] = speedups;
  }
  return result;
}

std::string model_run_summary(nlohmann::json const& r) {
  std::string out = fmt::format("{} · {} · generate {}\n", r.value("model", ""), r.value("dtype", ""), r.value("gen_len", 0));
  auto const& env = r["environment"];
  auto field = [&](char const* key) { return env.contains(key) ? env[key].dump() : std::string("?"); };
  out += fmt::format("GPU {} · CUDA runtime {} · cuBLASLt {} · cuSPARSELt {} · CUTLASS {} · {}\n", field("gpu"),
                     field("cuda_runtime"), field("cublaslt"), field("cusparselt"), field("cutlass"), field("date"));
  out += "| variant | B | P | prefill ms | prefill tok/s | decode ms/step | decode tok/s | linear / attention / other (prefill) |\n";
  out += "|---|---:|---:|---:|---:|---:|---:|---|\n";
  for (auto const& v : r["variants"]) {
    for (auto const& p : v["points"]) {
      std::string split = "-";
      if (p["breakdown"].contains("prefill")) {
        auto const& b = p["breakdown"]["prefill"];
        split = fmt::format("{:.0f} % / {:.0f} % / {:.0f} %", 100 * b["linear_share"].get<double>(),
                            100 * b["attention_share"].get<double>(), 100 * b["other_share"].get<double>());
      }
      bool const dec = !p["decode"].is_null();
      out += fmt::format("| {} | {} | {} | {:.2f} | {:.0f} | {} | {} | {} |\n", v["variant"].get<std::string>(),
                         p["batch"].get<std::int64_t>(), p["prompt_len"].get<std::int64_t>(), p["prefill"]["median_ms"].get<double>(),
                         p["prefill"]["tokens_per_s"].get<double>(),
                         dec ? fmt::format("{:.3f}", p["decode"]["ms_per_step"].get<double>()) : "-",
                         dec ? fmt::format("{:.0f}", p["decode"]["tokens_per_s"].get<double>()) : "-", split);
    }
  }
  if (r.contains("speedup_vs_dense")) {
    for (auto const& s : r["speedup_vs_dense"]) {
      out += fmt::format("speedup vs dense: {} B={} P={}: prefill {:.3f}x", s["variant"].get<std::string>(),
                         s["batch"].get<std::int64_t>(), s["prompt_len"].get<std::int64_t>(), s["prefill"].get<double>());
      if (s.contains("decode")) out += fmt::format(", decode {:.3f}x", s["decode"].get<double>());
      if (s.contains("prefill_linear")) {
        out += fmt::format(" (linear layers {:.3f}x; their share predicts {:.3f}x end to end)",
                           s["prefill_linear"].get<double>(), s["prefill_expected"].get<double>());
      }
      out += "\n";
    }
  }
  for (auto const& v : r["variants"]) {
    if (!v["points"].empty()) {
      std::string released;
      if (v.contains("release_unchosen")) {
        auto const& rel = v["release_unchosen"];
        released = fmt::format(" ({:.2f} GiB before release_unchosen up to M = {}, tolerance {}, {:.1f} s)",
                               static_cast<double>(rel["weights_bytes_before"].get<std::size_t>()) / (1 << 30),
                               rel["max_m"].get<std::int64_t>(), rel.value("tolerance", 0.0), rel["seconds"].get<double>());
      }
      out += fmt::format("{}: weights {:.2f} GiB{}, loaded in {:.1f} s; attention: {}\n", v["variant"].get<std::string>(),
                         static_cast<double>(v["points"][0]["memory"]["weights_bytes"].get<std::size_t>()) / (1 << 30),
                         released, v["load_s"].get<double>(), v["points"][0].value("attention", std::string("?")));
    }
  }
  return out;
}

}  // namespace slidesparse::bench
