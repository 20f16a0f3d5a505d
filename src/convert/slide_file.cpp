#include <chrono>
#include <map>

#include "slidesparse/convert/convert.hpp"
#include "slidesparse/convert/progress.hpp"
#include "slidesparse/core/slide.hpp"
#include "slidesparse/io/hf_checkpoint.hpp"

namespace slidesparse::convert {
namespace fs = std::filesystem;

ConvertReport slide_file(fs::path const& in_file, fs::path const& out_file,
                         SlideFileOptions const& options) {
  auto const start = std::chrono::steady_clock::now();
  if (!fs::is_regular_file(in_file)) {
    fail(ErrorKind::kUsage, "slide takes a .safetensors file; {} is not one", in_file.string());
  }
  std::error_code ec;
  if (fs::exists(out_file, ec) && fs::equivalent(in_file, out_file, ec)) {
    fail(ErrorKind::kUsage, "output file is the input file ({})", in_file.string());
  }
  io::HfCheckpoint const ckpt = io::HfCheckpoint::open(in_file);
  TensorSelection const selection(options.include, options.exclude);

  std::map<std::string, LiftedShape> slid;
  nlohmann::json section = {
      {"version", tool_version()},
      {"format", "slid"},
      {"pattern", options.pattern.to_string()},
      {"k_alignment", options.k_alignment},
      {"tensors", nlohmann::json::object()},
  };
  std::vector<io::TensorSpec> specs;
  std::uint64_t total = 0;
  for (auto const& t : ckpt.tensors()) {
    total += t.nbytes();
    if (selection.selects(t, false)) {
      LiftedShape const shape = lifted_shape(options.pattern, t.shape[1], options.k_alignment);
      slid.emplace(t.name, shape);
      section["tensors"][t.name] = {{"k", shape.k}, {"k_lifted", shape.k_lifted}};
      specs.push_back({t.name, t.dtype, {t.shape[0], shape.k_lifted}});
    } else {
      specs.push_back({t.name, t.dtype, t.shape});
    }
  }
  if (slid.empty()) {
    fail(ErrorKind::kUsage, "{}: no 2-D BF16/F16/F32/F8_E4M3/I8 tensor matches the selection",
         in_file.string());
  }
  io::Metadata metadata = ckpt.shard(0).metadata();
  metadata["slidesparse"] = section.dump();
  io::SafetensorsWriter writer(out_file, specs, metadata);
  Progress progress(total, "slide", options.progress);
  ConvertReport report;
  std::vector<std::byte> dense;
  for (auto const& t : ckpt.tensors()) {
    auto const out = writer.bytes(t.name);
    auto const it = slid.find(t.name);
    if (it == slid.end()) {
      ckpt.read(t, out);
      ++report.passed_through;
    } else {
      std::span<std::byte const> in;
      if (t.storage == io::LogicalTensor::Storage::kPlain) {
        in = ckpt.plain_bytes(t);
      } else {
        dense.resize(t.nbytes());
        ckpt.read(t, dense);
        in = dense;
      }
      ConstMatrixView const w{t.dtype, t.shape[0], t.shape[1], in.data(), t.name};
      MatrixView const ws{t.dtype, t.shape[0], it->second.k_lifted, out.data(), t.name};
      slide(w, options.pattern, it->second, ws);
      report.tensors.push_back({t.name, std::string(dtype_name(t.dtype)),
                                std::string(dtype_name(t.dtype)), {t.shape[0], it->second.k_lifted},
                                0, 0, it->second.k_lifted});
    }
    progress.advance(t.nbytes());
  }
  for (std::size_t i = 0; i < writer.size(); ++i) report.bytes_written += writer.bytes(i).size();
  writer.commit();
  progress.finish();
  report.bytes_read = total;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace slidesparse::convert
