#include "commands.hpp"

#include <memory>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "slidesparse/convert/convert.hpp"
#include "slidesparse/convert/synthetic.hpp"
#include "slidesparse/core/parallel.hpp"
#ifdef SLIDESPARSE_HAVE_CUDA
#include "slidesparse/cuda/cudnn_attention.hpp"
#include "slidesparse/cuda/device_info.hpp"
#endif

namespace slidesparse::cli {
namespace {

// CLI11 validator for the pattern: parse errors become CLI usage errors with our message.
CLI::Validator pattern_validator() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        try {
          SparsityPattern::parse(text);
          return {};
        } catch (Error const& e) {
          return e.what();
        }
      },
      "PATTERN");
}

void add_threads_option(CLI::App* sub, std::shared_ptr<int> threads) {
  sub->add_option("--threads", *threads, "Worker threads (default: all cores)")->check(CLI::PositiveNumber);
}

void apply_threads(int threads) {
  if (threads > 0) set_worker_threads(threads);
}

std::string human_bytes(std::uint64_t bytes) {
  double const mb = static_cast<double>(bytes) / 1e6;
  return mb >= 1000 ? fmt::format("{:.2f} GB", mb / 1000) : fmt::format("{:.1f} MB", mb);
}

}  // namespace

Command register_convert(CLI::App& app) {
  struct Args {
    std::string in, out, pattern = "6:8", prune = "magnitude", importance, quant = "none";
    std::string include, exclude;
    std::int64_t alignment = kDefaultKAlignment;
    bool overwrite = false, no_progress = false;
    int threads = 0;
  };
  auto args = std::make_shared<Args>();
  auto* sub = app.add_subcommand("convert", "Prune (and optionally quantize) a Hugging Face model "
                                 "directory to a (2N-2):2N pattern, written pruned-dense");
  sub->add_option("IN_DIR", args->in, "Model directory (config.json + safetensors)")->required();
  sub->add_option("OUT_DIR", args->out, "Output directory (created; must not exist unless --overwrite)")->required();
  sub->add_option("--pattern", args->pattern, "Pattern, nonzeros:block: 2:4, 4:6, 6:8, ..., 30:32")
      ->check(pattern_validator())->capture_default_str();
  sub->add_option("--prune", args->prune, "magnitude (|w|) or importance (|w| * s_j, Wanda)")
      ->check(CLI::IsMember({"magnitude", "importance"}))->capture_default_str();
  sub->add_option("--importance", args->importance, "safetensors file: one F32 [K] vector per weight, named like the weight");
  sub->add_option("--quant", args->quant, "Weight quantization: none, fp8 (E4M3) or int8, per output channel")
      ->check(CLI::IsMember({"none", "fp8", "int8"}))->capture_default_str();
  sub->add_option("--include", args->include, "Regex of tensor names to prune (default: decoder projection weights)");
  sub->add_option("--exclude", args->exclude, "Regex of tensor names to leave alone");
  sub->add_option("--k-alignment", args->alignment, "K alignment of the lifted layout (recorded)")->capture_default_str();
  sub->add_flag("--overwrite", args->overwrite, "Replace a non-empty OUT_DIR once the new output is complete");
  sub->add_flag("--no-progress", args->no_progress, "No progress bar");
  add_threads_option(sub, std::shared_ptr<int>(args, &args->threads));
  return [args] {
    apply_threads(args->threads);
    convert::ConvertOptions options;
    options.pattern = SparsityPattern::parse(args->pattern);
    options.prune = args->prune == "importance" ? convert::PruneMethod::kImportance
                                                : convert::PruneMethod::kMagnitude;
    options.importance_file = args->importance;
    options.quant = args->quant == "fp8"    ? convert::QuantTarget::kFp8
                    : args->quant == "int8" ? convert::QuantTarget::kInt8
                                            : convert::QuantTarget::kNone;
    options.include = args->include;
    options.exclude = args->exclude;
    options.k_alignment = args->alignment;
    options.overwrite = args->overwrite;
    options.progress = !args->no_progress;
    auto const report = convert::convert_checkpoint(args->in, args->out, options);
    std::int64_t zeroed = 0, elements = 0;
    for (auto const& t : report.tensors) {
      zeroed += t.zeroed;
      elements += t.shape[0] * t.shape[1];
    }
    fmt::print("converted {} weights to {} ({} pruning, quantization {}); {} other tensors copied\n",
               report.tensors.size(), options.pattern.to_string(), args->prune, args->quant,
               report.passed_through);
    fmt::print("pruned {} of {} weight values ({:.2f}%); read {}, wrote {} in {:.2f} s ({:.0f} MB/s)\n",
               zeroed, elements, elements ? 100.0 * static_cast<double>(zeroed) / static_cast<double>(elements) : 0.0,
               human_bytes(report.bytes_read), human_bytes(report.bytes_written), report.seconds,
               static_cast<double>(report.bytes_read) / 1e6 / std::max(report.seconds, 1e-9));
    fmt::print("output: {}\n", args->out);
    return 0;
  };
}

Command register_slide(CLI::App& app) {
  struct Args {
    std::string in, out, pattern = "6:8", include, exclude;
    std::int64_t alignment = kDefaultKAlignment;
    bool no_progress = false;
    int threads = 0;
  };
  auto args = std::make_shared<Args>();
  auto* sub = app.add_subcommand("slide", "Write every selected 2-D weight of a .safetensors file "
                                 "in the slid [N, K'] layout (same dtype)");
  sub->add_option("IN", args->in, "Input .safetensors (weights must already satisfy the pattern)")->required();
  sub->add_option("OUT", args->out, "Output .safetensors")->required();
  sub->add_option("--pattern", args->pattern, "Pattern, nonzeros:block")->check(pattern_validator())->capture_default_str();
  sub->add_option("--include", args->include, "Regex of tensor names to slide (default: every 2-D weight)");
  sub->add_option("--exclude", args->exclude, "Regex of tensor names to pass through");
  sub->add_option("--k-alignment", args->alignment, "K alignment of the lifted layout")->capture_default_str();
  sub->add_flag("--no-progress", args->no_progress, "No progress bar");
  add_threads_option(sub, std::shared_ptr<int>(args, &args->threads));
  return [args] {
    apply_threads(args->threads);
    convert::SlideFileOptions options;
    options.pattern = SparsityPattern::parse(args->pattern);
    options.include = args->include;
    options.exclude = args->exclude;
    options.k_alignment = args->alignment;
    options.progress = !args->no_progress;
    auto const report = convert::slide_file(args->in, args->out, options);
    for (auto const& t : report.tensors) {
      fmt::print("{:<60} {:>6}  [{}, {}]\n", t.name, t.dtype, t.shape[0], t.shape[1]);
    }
    fmt::print("slid {} tensors to {} (K' aligned to {}); {} passed through; wrote {}\n",
               report.tensors.size(), options.pattern.to_string(), options.k_alignment,
               report.passed_through, args->out);
    return 0;
  };
}

Command register_verify(CLI::App& app) {
  struct Args {
    std::string path, pattern, include, exclude;
    int threads = 0;
  };
  auto args = std::make_shared<Args>();
  auto* sub = app.add_subcommand("verify", "Exit 0 iff every selected weight satisfies the pattern "
                                 "and slide/unslide is lossless; else exit 1 and list violations");
  sub->add_option("PATH", args->path, "Model directory or .safetensors file")->required();
  sub->add_option("--pattern", args->pattern, "Pattern (default: the one the checkpoint records)")->check(pattern_validator());
  sub->add_option("--include", args->include, "Regex of tensor names to check (default: recorded tensors, else projection weights)");
  sub->add_option("--exclude", args->exclude, "Regex of tensor names to skip");
  add_threads_option(sub, std::shared_ptr<int>(args, &args->threads));
  return [args] {
    apply_threads(args->threads);
    std::optional<SparsityPattern> pattern;
    if (!args->pattern.empty()) pattern = SparsityPattern::parse(args->pattern);
    auto const report = convert::verify_checkpoint(args->path, pattern, args->include, args->exclude);
    if (report.tensors.empty()) {
      fmt::print(stderr, "slidesparse: error: {}: no tensor selected for verification\n", args->path);
      return 2;
    }
    std::size_t failed = 0;
    for (auto const& t : report.tensors) {
      if (t.ok) continue;
      ++failed;
      fmt::print("FAIL {}: {}\n", t.name, t.problem);
      for (auto const& v : t.check.first) {
        fmt::print("     row {}, block {} (columns {}..{}): {} nonzeros\n", v.row, v.block,
                   v.block * report.pattern.block(), (v.block + 1) * report.pattern.block() - 1, v.nonzeros);
      }
    }
    fmt::print("{}: {} of {} tensors {} {}{}\n", args->path, report.tensors.size() - failed,
               report.tensors.size(), report.slid_layout ? "are valid slid" : "satisfy",
               report.pattern.to_string(), failed ? "" : ", slide/unslide lossless");
    return failed ? 1 : 0;
  };
}

Command register_inspect(CLI::App& app) {
  struct Args {
    std::string path;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  auto* sub = app.add_subcommand("inspect", "Per tensor: dtype, shape, zero fraction, the patterns "
                                 "it satisfies and the sparsest one");
  sub->add_option("PATH", args->path, "Model directory or .safetensors file")->required();
  sub->add_flag("--json", args->json, "Machine-readable output");
  return [args] {
    auto const tensors = convert::inspect_checkpoint(args->path);
    if (args->json) {
      fmt::print("{}\n", convert::inspection_to_json(tensors).dump(2));
      return 0;
    }
    // Columns: the family's first members, then the best pattern overall.
    int const shown[] = {2, 3, 4, 5, 8};
    fmt::print("{:<56} {:>7} {:>14} {:>7} ", "tensor", "dtype", "shape", "zeros");
    for (int n : shown) fmt::print("{:>6}", SparsityPattern::from_half_block(n).to_string());
    fmt::print("  {}\n", "best");
    for (auto const& t : tensors) {
      fmt::print("{:<56} {:>7} {:>14} ", t.name, t.dtype, fmt::format("{}", fmt::join(t.shape, "x")));
      if (!t.profile) {
        fmt::print("{:>7}\n", "-");
        continue;
      }
      fmt::print("{:>6.1f}% ", 100 * t.profile->zero_fraction());
      for (int n : shown) fmt::print("{:>6}", t.profile->satisfies(SparsityPattern::from_half_block(n)) ? "yes" : "-");
      auto const best = t.profile->sparsest();
      fmt::print("  {}{}\n", best ? best->to_string() : "dense",
                 t.storage == "plain" ? "" : " (stored " + t.storage + ")");
    }
    return 0;
  };
}

Command register_synth(CLI::App& app) {
  struct Args {
    std::string out, preset = "tiny";
    std::uint64_t seed = 1;
    int threads = 0;
  };
  auto args = std::make_shared<Args>();
  auto* sub = app.add_subcommand("synth", "Write a synthetic Llama-shaped model directory with random weights");
  sub->add_option("OUT_DIR", args->out, "Output directory")->required();
  sub->add_option("--preset", args->preset, "tiny (< 2 MB) or bench-1gb (~1.2 GB BF16)")->capture_default_str();
  sub->add_option("--seed", args->seed, "Random seed")->capture_default_str();
  add_threads_option(sub, std::shared_ptr<int>(args, &args->threads));
  return [args] {
    apply_threads(args->threads);
    convert::SyntheticSpec spec = convert::synthetic_preset(args->preset);
    spec.seed = args->seed;
    convert::write_synthetic_checkpoint(args->out, spec);
    fmt::print("wrote {} ({} parameters, {}, {} layers) to {}\n", args->preset, spec.parameter_count(),
               dtype_name(spec.dtype), spec.layers, args->out);
    return 0;
  };
}

Command register_info(CLI::App& app) {
  auto* sub = app.add_subcommand("info", "Show the build, CUDA, cuSPARSELt and GPUs this binary sees");
  (void)sub;
  return [] {
    fmt::print("slidesparse {}\n", convert::tool_version());
#ifdef SLIDESPARSE_HAVE_CUDA
    auto const env = cuda::query_cuda_environment();
    fmt::print("CUDA runtime {}.{}, driver supports {}.{}, cuSPARSELt {}.{}.{}, {}\n",
               env.runtime_version / 1000, env.runtime_version % 1000 / 10,
               env.driver_version / 1000, env.driver_version % 1000 / 10,
               env.cusparselt_version / 10000, env.cusparselt_version / 100 % 100,
               env.cusparselt_version % 100, cuda::CudnnAttention::version());
    for (auto const& g : env.gpus) {
      fmt::print("GPU {}: {} (sm_{}{}, {} SMs, {:.1f} GiB)\n", g.index, g.name, g.sm_major, g.sm_minor,
                 g.multiprocessors, static_cast<double>(g.memory_bytes) / (1 << 30));
    }
    if (!env.problem.empty()) fmt::print("{}\n", env.problem);
#else
    fmt::print("built without the CUDA layer (no CUDA toolkit at configure time)\n");
#endif
    return 0;
  };
}

DType model_compute_dtype(std::string const& name, char const* who) {
  if (name == "fp8") return DType::kF8E4M3;
  if (name == "int8") return DType::kI8;
  if (name == "bf16") return DType::kBF16;
  fail(ErrorKind::kUsage, "{}: unknown dtype '{}' (fp8, int8, bf16)", who, name);
}

}  // namespace slidesparse::cli
