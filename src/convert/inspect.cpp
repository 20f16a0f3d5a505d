#include "slidesparse/convert/convert.hpp"
#include "slidesparse/io/hf_checkpoint.hpp"

namespace slidesparse::convert {

std::vector<TensorInspection> inspect_checkpoint(std::filesystem::path const& path) {
  io::HfCheckpoint const ckpt = io::HfCheckpoint::open(path);
  std::vector<TensorInspection> out;
  std::vector<std::byte> buffer;
  for (auto const& t : ckpt.tensors()) {
    TensorInspection entry;
    entry.name = t.name;
    entry.dtype = std::string(dtype_name(t.dtype));
    entry.shape = t.shape;
    entry.storage = t.storage == io::LogicalTensor::Storage::kPlain ? "plain" : "sparse-24-bitmask";
    // Column vectors ([N, 1] scales) satisfy every pattern trivially; profiling them says nothing.
    if (t.is_matrix() && t.shape[1] >= 4 && is_weight_dtype(t.dtype)) {
      std::byte const* data = nullptr;
      if (t.storage == io::LogicalTensor::Storage::kPlain) {
        data = ckpt.plain_bytes(t).data();
      } else {
        buffer.resize(t.nbytes());
        ckpt.read(t, buffer);
        data = buffer.data();
      }
      entry.profile = profile_sparsity({t.dtype, t.shape[0], t.shape[1], data, t.name});
    }
    out.push_back(std::move(entry));
  }
  return out;
}

nlohmann::json inspection_to_json(std::vector<TensorInspection> const& tensors) {
  nlohmann::json list = nlohmann::json::array();
  for (auto const& t : tensors) {
    nlohmann::json entry = {{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape},
                            {"storage", t.storage}};
    if (t.profile) {
      entry["zero_fraction"] = t.profile->zero_fraction();
      nlohmann::json satisfies = nlohmann::json::object();
      for (int n = SparsityPattern::kMinN; n <= SparsityPattern::kMaxN; ++n) {
        auto const p = SparsityPattern::from_half_block(n);
        satisfies[p.to_string()] = t.profile->satisfies(p);
      }
      entry["satisfies"] = satisfies;
      auto const best = t.profile->sparsest();
      entry["best_pattern"] = best ? nlohmann::json(best->to_string()) : nlohmann::json(nullptr);
    }
    list.push_back(std::move(entry));
  }
  return {{"tensors", list}};
}

}  // namespace slidesparse::convert
