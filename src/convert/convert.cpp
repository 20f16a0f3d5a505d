#include "slidesparse/convert/convert.hpp"

#include <atomic>
#include <chrono>
#include <map>
#include <random>

#include "slidesparse/convert/progress.hpp"
#include "slidesparse/core/parallel.hpp"
#include "slidesparse/core/prune.hpp"
#include "slidesparse/core/quantize.hpp"
#include "slidesparse/io/hf_checkpoint.hpp"

namespace slidesparse::convert {
namespace fs = std::filesystem;

std::string tool_version() { return "0.1.0"; }

namespace {

// Rows handed to one worker at a time: large enough to amortize per-call overhead, small enough
// that a chunk's input and output stay in cache between the prune and quantize steps.
constexpr std::int64_t kChunkBytes = 256 * 1024;

char const* quant_name(QuantTarget q) {
  switch (q) {
    case QuantTarget::kNone: return "none";
    case QuantTarget::kFp8: return "fp8";
    case QuantTarget::kInt8: return "int8";
  }
  return "?";
}

std::string scale_name(std::string const& weight_name) {
  return weight_name.substr(0, weight_name.size() - std::string_view("weight").size()) + "weight_scale";
}

/// The output directory is built next to its final place and renamed over it when complete.
class StagingDirectory {
 public:
  StagingDirectory(fs::path final_dir, bool overwrite) : final_(std::move(final_dir)) {
    std::error_code ec;
    if (fs::exists(final_, ec) && !(fs::is_directory(final_) && fs::is_empty(final_)) && !overwrite) {
      fail(ErrorKind::kUsage, "output {} already exists and is not empty (pass --overwrite to "
           "replace it once the new output is complete)", final_.string());
    }
    fs::path const parent = final_.has_parent_path() ? final_.parent_path() : fs::path(".");
    fs::create_directories(parent, ec);
    std::random_device rd;
    staging_ = parent / fmt::format(".{}.partial-{:08x}", final_.filename().string(), rd());
    if (!fs::create_directory(staging_, ec)) {
      fail(ErrorKind::kIo, "cannot create {}: {}", staging_.string(), ec.message());
    }
  }
  ~StagingDirectory() {
    std::error_code ec;
    if (!committed_) fs::remove_all(staging_, ec);
  }
  fs::path const& path() const { return staging_; }
  void commit() {
    std::error_code ec;
    fs::path old;
    if (fs::exists(final_, ec)) {
      old = staging_.string() + ".old";
      fs::rename(final_, old, ec);
      if (ec) fail(ErrorKind::kIo, "cannot move {} aside: {}", final_.string(), ec.message());
    }
    fs::rename(staging_, final_, ec);
    if (ec) {
      if (!old.empty()) fs::rename(old, final_, ec);
      fail(ErrorKind::kIo, "cannot rename {} to {}: {}", staging_.string(), final_.string(), ec.message());
    }
    committed_ = true;
    if (!old.empty()) fs::remove_all(old, ec);
  }

 private:
  fs::path final_;
  fs::path staging_;
  bool committed_ = false;
};

/// The existing quantization of a selected weight, from its dtype and a `weight_scale` sibling.
struct WeightPlan {
  io::LogicalTensor const* tensor = nullptr;
  DType out_dtype = DType::kBF16;
  bool quantize_here = false;  ///< BF16/F16/F32 -> I8/F8_E4M3 with a new weight_scale
  std::span<float const> importance;
};

}  // namespace

nlohmann::json w8a8_quantization_config(bool fp8) {
  // compressed-tensors W8A8: per-output-channel symmetric static weights, per-token symmetric
  // dynamic activations, every Linear except lm_head.
  char const* const type = fp8 ? "float" : "int";
  return {
      {"quant_method", "compressed-tensors"},
      {"format", fp8 ? "float-quantized" : "int-quantized"},
      {"quantization_status", "compressed"},
      {"ignore", {"lm_head"}},
      {"config_groups",
       {{"group_0",
         {{"targets", {"Linear"}},
          {"weights",
           {{"num_bits", 8}, {"type", type}, {"strategy", "channel"}, {"symmetric", true},
            {"dynamic", false}}},
          {"input_activations",
           {{"num_bits", 8}, {"type", type}, {"strategy", "token"}, {"symmetric", true},
            {"dynamic", true}}}}}}},
  };
}

ConvertReport convert_checkpoint(fs::path const& in_dir, fs::path const& out_dir,
                                 ConvertOptions const& options) {
  auto const start = std::chrono::steady_clock::now();
  lifted_shape(options.pattern, 1, options.k_alignment);  // validates the alignment
  io::HfCheckpoint const ckpt = io::HfCheckpoint::open(in_dir);
  if (!ckpt.is_directory()) {
    fail(ErrorKind::kUsage, "convert takes a model directory; {} is a file (use "
         "'slidesparse slide' for a single .safetensors file)", in_dir.string());
  }
  std::error_code ec;
  if (fs::exists(out_dir, ec) && fs::equivalent(in_dir, out_dir, ec)) {
    fail(ErrorKind::kUsage, "output directory is the input directory ({})", in_dir.string());
  }
  TensorSelection const selection(options.include, options.exclude);

  std::optional<io::SafetensorsFile> importance_file;
  if (options.prune == PruneMethod::kImportance) {
    if (options.importance_file.empty()) {
      fail(ErrorKind::kUsage, "--prune importance needs --importance FILE (one F32 [K] vector per "
           "weight, named like the weight)");
    }
    importance_file = io::SafetensorsFile::open(options.importance_file);
  }

  // Plan every selected weight before writing anything: errors surface before any work.
  std::map<std::string, WeightPlan> plans;
  for (auto const& t : ckpt.tensors()) {
    if (!selection.selects(t, true)) continue;
    WeightPlan plan;
    plan.tensor = &t;
    plan.out_dtype = t.dtype;
    bool const already_quantized = t.dtype == DType::kI8 || t.dtype == DType::kF8E4M3;
    if (already_quantized && !ckpt.find(scale_name(t.name))) {
      fail(ErrorKind::kInvalidInput, "{}: tensor '{}' is {} but has no '{}' (compressed-tensors "
           "W8A8 stores a per-channel scale next to each quantized weight)", in_dir.string(),
           t.name, dtype_name(t.dtype), scale_name(t.name));
    }
    if (options.quant != QuantTarget::kNone) {
      DType const target = options.quant == QuantTarget::kFp8 ? DType::kF8E4M3 : DType::kI8;
      if (already_quantized && t.dtype != target) {
        fail(ErrorKind::kUsage, "tensor '{}' is already quantized to {}; re-quantizing it to {} "
             "would lose accuracy. Run without --quant to keep its quantization", t.name,
             dtype_name(t.dtype), dtype_name(target));
      }
      if (!already_quantized) {
        plan.quantize_here = true;
        plan.out_dtype = target;
        if (ckpt.find(scale_name(t.name))) {
          fail(ErrorKind::kInvalidInput, "tensor '{}' is {} but '{}' already exists", t.name,
               dtype_name(t.dtype), scale_name(t.name));
        }
      }
    }
    if (importance_file) {
      io::TensorInfo const* info = importance_file->find(t.name);
      if (!info || info->dtype != DType::kF32 || info->numel() != static_cast<std::uint64_t>(t.shape[1])) {
        fail(ErrorKind::kInvalidInput, "{}: needs an F32 vector of {} entries named '{}' for the "
             "importance of that weight's input channels{}", options.importance_file.string(),
             t.shape[1], t.name, info ? fmt::format(" (found {} with {} elements)",
                                                     dtype_name(info->dtype), info->numel())
                                      : std::string(" (missing)"));
      }
      auto const bytes = importance_file->bytes(*info);
      if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(float) != 0) {
        fail(ErrorKind::kInvalidInput, "{}: tensor '{}' is not 4-byte aligned in the file",
             options.importance_file.string(), t.name);
      }
      plan.importance = {reinterpret_cast<float const*>(bytes.data()), static_cast<std::size_t>(t.shape[1])};
    }
    plans.emplace(t.name, plan);
  }
  if (plans.empty()) {
    fail(ErrorKind::kUsage, "no tensor of {} matches the selection (include '{}', exclude '{}')",
         in_dir.string(), options.include.empty() ? kDefaultLinearRegex : options.include,
         options.exclude);
  }

  // The record every artifact carries.
  nlohmann::json section = {
      {"version", tool_version()},
      {"format", "pruned-dense"},
      {"pattern", options.pattern.to_string()},
      {"k_alignment", options.k_alignment},
      {"prune", options.prune == PruneMethod::kMagnitude ? "magnitude" : "importance"},
      {"quantization", quant_name(options.quant)},
      {"tensors", nlohmann::json::object()},
  };
  for (auto const& [name, plan] : plans) {
    section["tensors"][name] = {
        {"source_dtype", dtype_name(plan.tensor->dtype)},
        {"dtype", dtype_name(plan.out_dtype)},
        {"k", plan.tensor->shape[1]},
        {"k_lifted", lifted_shape(options.pattern, plan.tensor->shape[1], options.k_alignment).k_lifted},
    };
  }

  StagingDirectory staging(out_dir, options.overwrite);
  ConvertReport report;
  std::uint64_t total_bytes = 0;
  for (auto const& t : ckpt.tensors()) total_bytes += t.nbytes();
  Progress progress(total_bytes, "convert", options.progress);
  nlohmann::json weight_map = nlohmann::json::object();
  std::uint64_t total_size = 0;

  for (std::size_t s = 0; s < ckpt.shard_files().size(); ++s) {
    std::vector<io::TensorSpec> specs;
    for (auto const& t : ckpt.tensors()) {
      if (t.shard != s) continue;
      auto const it = plans.find(t.name);
      specs.push_back({t.name, it == plans.end() ? t.dtype : it->second.out_dtype, t.shape});
      if (it != plans.end() && it->second.quantize_here) {
        specs.push_back({scale_name(t.name), DType::kF32, {t.shape[0], 1}});
      }
    }
    io::Metadata metadata = ckpt.shard(s).metadata();
    metadata["format"] = "pt";
    metadata["slidesparse"] = section.dump();
    io::SafetensorsWriter writer(staging.path() / ckpt.shard_files()[s], specs, metadata);
    for (auto const& t : ckpt.tensors()) {
      if (t.shard != s) continue;
      auto const it = plans.find(t.name);
      std::span<std::byte> const out = writer.bytes(t.name);
      if (it == plans.end()) {
        ckpt.read(t, out);
        ++report.passed_through;
        progress.advance(t.nbytes());
        continue;
      }
      WeightPlan const& plan = it->second;
      std::int64_t const rows = t.shape[0], cols = t.shape[1];
      std::size_t const in_row_bytes = static_cast<std::size_t>(cols) * dtype_size(t.dtype);
      std::size_t const out_row_bytes = static_cast<std::size_t>(cols) * dtype_size(plan.out_dtype);
      std::span<float> scales;
      if (plan.quantize_here) {
        auto const scale_bytes = writer.bytes(scale_name(t.name));
        scales = {reinterpret_cast<float*>(scale_bytes.data()), static_cast<std::size_t>(rows)};
      }
      std::int64_t const chunk_rows = std::max<std::int64_t>(1, kChunkBytes / static_cast<std::int64_t>(in_row_bytes));
      std::int64_t const chunks = (rows + chunk_rows - 1) / chunk_rows;
      std::atomic<std::int64_t> zeroed{0}, blocks_pruned{0};
      parallel_for(chunks, kChunkBytes, [&](std::int64_t chunk_begin, std::int64_t chunk_end) {
        std::vector<std::byte> buffer;
        for (std::int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
          std::int64_t const r0 = chunk * chunk_rows;
          std::int64_t const r1 = std::min(rows, r0 + chunk_rows);
          std::size_t const n = static_cast<std::size_t>(r1 - r0);
          std::byte* work = out.data() + static_cast<std::size_t>(r0) * out_row_bytes;
          if (plan.quantize_here) {
            buffer.resize(n * in_row_bytes);
            work = buffer.data();
          }
          ckpt.read_rows(t, r0, r1, {work, n * in_row_bytes});
          MatrixView const view{t.dtype, r1 - r0, cols, work, t.name, r0};
          PruneStats const stats = prune_in_place(view, options.pattern, plan.importance);
          zeroed += stats.zeroed;
          blocks_pruned += stats.blocks_pruned;
          if (plan.quantize_here) {
            MatrixView const qview{plan.out_dtype, r1 - r0, cols,
                                   out.data() + static_cast<std::size_t>(r0) * out_row_bytes, t.name, r0};
            quantize_weight_per_channel(view, qview, scales.subspan(static_cast<std::size_t>(r0), n));
          }
          progress.advance(n * in_row_bytes);
        }
      });
      report.tensors.push_back({t.name, std::string(dtype_name(t.dtype)),
                                std::string(dtype_name(plan.out_dtype)), t.shape, zeroed.load(),
                                blocks_pruned.load(),
                                lifted_shape(options.pattern, cols, options.k_alignment).k_lifted});
    }
    for (std::size_t i = 0; i < writer.size(); ++i) {
      weight_map[writer.spec(i).name] = ckpt.shard_files()[s];
      total_size += writer.bytes(i).size();
    }
    writer.commit();
  }
  progress.finish();

  if (ckpt.is_sharded()) {
    nlohmann::json index = io::read_json_file(in_dir / "model.safetensors.index.json");
    index["metadata"]["total_size"] = total_size;
    index["weight_map"] = weight_map;
    io::write_text_file_atomic(staging.path() / "model.safetensors.index.json", index.dump(2) + "\n");
  }

  // config.json: the source config plus our section; the quantization config where we quantized;
  // no sparsity_config any more (every tensor is written dense).
  nlohmann::json config = ckpt.config();
  config["slidesparse"] = section;
  if (config.contains("quantization_config") && config["quantization_config"].is_object()) {
    config["quantization_config"].erase("sparsity_config");
  }
  config.erase("sparsity_config");
  if (options.quant != QuantTarget::kNone &&
      std::any_of(plans.begin(), plans.end(), [](auto const& p) { return p.second.quantize_here; })) {
    config["quantization_config"] = w8a8_quantization_config(options.quant == QuantTarget::kFp8);
  }
  io::write_text_file_atomic(staging.path() / "config.json", config.dump(2) + "\n");

  // Everything else of the model directory (tokenizer, generation config, ...) comes along.
  for (auto const& entry : fs::directory_iterator(in_dir)) {
    std::string const name = entry.path().filename().string();
    if (!entry.is_regular_file() || name == "config.json" || name == "model.safetensors.index.json" ||
        name.ends_with(".safetensors")) {
      continue;
    }
    fs::copy_file(entry.path(), staging.path() / name, ec);
    if (ec) fail(ErrorKind::kIo, "cannot copy {}: {}", entry.path().string(), ec.message());
  }
  staging.commit();

  report.bytes_read = total_bytes;
  report.bytes_written = total_size;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace slidesparse::convert
