#include "slidesparse/io/hf_checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "slidesparse/core/error.hpp"
#include "slidesparse/core/numeric.hpp"

namespace slidesparse::io {
namespace fs = std::filesystem;

nlohmann::json read_json_file(fs::path const& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorKind::kIo, "cannot open {}: {}", path.string(), std::strerror(errno));
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    return nlohmann::json::parse(buffer.str());
  } catch (nlohmann::json::parse_error const& e) {
    fail(ErrorKind::kInvalidInput, "{}: invalid JSON at byte {}: {}", path.string(), e.byte,
         e.what());
  }
}

void write_text_file_atomic(fs::path const& path, std::string const& text) {
  std::random_device rd;
  fs::path const tmp = path.string() + fmt::format(".tmp-{:08x}", rd());
  int const fd = ::open(tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) fail(ErrorKind::kIo, "cannot create {}: {}", tmp.string(), std::strerror(errno));
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t const n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int const err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail(ErrorKind::kIo, "cannot write {}: {}", tmp.string(), std::strerror(err));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    int const err = errno;
    ::unlink(tmp.c_str());
    fail(ErrorKind::kIo, "cannot write {}: {}", path.string(), std::strerror(err));
  }
}

std::uint64_t LogicalTensor::numel() const {
  std::uint64_t n = 1;
  for (auto d : shape) n *= static_cast<std::uint64_t>(d);
  return n;
}

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

void check_shard_name(fs::path const& index_path, std::string const& name) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == ".." ||
      !ends_with(name, ".safetensors")) {
    fail(ErrorKind::kInvalidInput, "{}: shard file name '{}' must be a plain *.safetensors file "
         "name in the model directory", index_path.string(), name);
  }
}

std::vector<std::int64_t> read_shape_tensor(SafetensorsFile const& file, TensorInfo const& info) {
  if ((info.dtype != DType::kI64 && info.dtype != DType::kI32) || info.numel() != 2) {
    fail(ErrorKind::kInvalidInput, "{}: sparse-24-bitmask tensor '{}' must hold the 2 dims of the "
         "dense weight as I64 (got {} with {} elements)", file.path().string(), info.name,
         dtype_name(info.dtype), info.numel());
  }
  auto const bytes = file.bytes(info);
  std::vector<std::int64_t> dims(2);
  for (std::size_t i = 0; i < 2; ++i) {
    dims[i] = info.dtype == DType::kI64 ? load<std::int64_t>(bytes.data() + 8 * i)
                                        : load<std::int32_t>(bytes.data() + 4 * i);
    if (dims[i] <= 0 || dims[i] > (std::int64_t{1} << 32)) {
      fail(ErrorKind::kInvalidInput, "{}: sparse-24-bitmask tensor '{}' has dim {} = {}",
           file.path().string(), info.name, i, dims[i]);
    }
  }
  return dims;
}

}  // namespace

HfCheckpoint HfCheckpoint::open(fs::path const& path) {
  HfCheckpoint ckpt;
  ckpt.root_ = path;
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    ckpt.shard_files_.push_back(path.filename().string());
    ckpt.shards_.push_back(SafetensorsFile::open(path));
  } else if (fs::is_directory(path, ec)) {
    ckpt.is_directory_ = true;
    fs::path const config_path = path / "config.json";
    if (fs::exists(config_path)) {
      ckpt.config_ = read_json_file(config_path);
      if (!ckpt.config_.is_object()) {
        fail(ErrorKind::kInvalidInput, "{}: expected a JSON object", config_path.string());
      }
    }
    fs::path const index_path = path / "model.safetensors.index.json";
    fs::path const single_path = path / "model.safetensors";
    if (fs::exists(index_path)) {
      ckpt.sharded_ = true;
      nlohmann::json const index = read_json_file(index_path);
      if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
        fail(ErrorKind::kInvalidInput, "{}: expected an object with a \"weight_map\" object",
             index_path.string());
      }
      std::map<std::string, std::string> weight_map;
      std::set<std::string> shard_set;
      for (auto const& [tensor, shard] : index["weight_map"].items()) {
        if (!shard.is_string()) {
          fail(ErrorKind::kInvalidInput, "{}: weight_map entry '{}' is not a file name",
               index_path.string(), tensor);
        }
        check_shard_name(index_path, shard.get<std::string>());
        weight_map[tensor] = shard.get<std::string>();
        shard_set.insert(shard.get<std::string>());
      }
      ckpt.shard_files_.assign(shard_set.begin(), shard_set.end());
      for (auto const& shard : ckpt.shard_files_) {
        if (!fs::exists(path / shard)) {
          fail(ErrorKind::kInvalidInput, "{}: shard '{}' is listed but missing from {}",
               index_path.string(), shard, path.string());
        }
        ckpt.shards_.push_back(SafetensorsFile::open(path / shard));
      }
      // The index and the shards must agree exactly, both ways.
      std::set<std::string> seen;
      for (std::size_t s = 0; s < ckpt.shards_.size(); ++s) {
        for (auto const& info : ckpt.shards_[s].tensors()) {
          auto const it = weight_map.find(info.name);
          if (it == weight_map.end() || it->second != ckpt.shard_files_[s]) {
            fail(ErrorKind::kInvalidInput, "{}: tensor '{}' is in shard '{}' but the index {}",
                 index_path.string(), info.name, ckpt.shard_files_[s],
                 it == weight_map.end() ? std::string("does not list it")
                                        : fmt::format("maps it to '{}'", it->second));
          }
          seen.insert(info.name);
        }
      }
      for (auto const& [tensor, shard] : weight_map) {
        if (!seen.count(tensor)) {
          fail(ErrorKind::kInvalidInput, "{}: tensor '{}' is mapped to shard '{}', which does not "
               "contain it", index_path.string(), tensor, shard);
        }
      }
    } else if (fs::exists(single_path)) {
      ckpt.shard_files_.push_back("model.safetensors");
      ckpt.shards_.push_back(SafetensorsFile::open(single_path));
    } else {
      fail(ErrorKind::kInvalidInput, "{}: neither model.safetensors nor "
           "model.safetensors.index.json found", path.string());
    }
  } else {
    fail(ErrorKind::kInvalidInput, "{}: no such file or directory", path.string());
  }

  // compressed-tensors puts sparsity_config inside quantization_config (older files: top level).
  auto sparsity_format = [&](nlohmann::json const& parent) -> std::string {
    if (parent.is_object() && parent.contains("sparsity_config") &&
        parent["sparsity_config"].is_object() && parent["sparsity_config"].contains("format") &&
        parent["sparsity_config"]["format"].is_string()) {
      return parent["sparsity_config"]["format"].get<std::string>();
    }
    return {};
  };
  std::string format = sparsity_format(ckpt.config_);
  if (format.empty() && ckpt.config_.contains("quantization_config")) {
    format = sparsity_format(ckpt.config_["quantization_config"]);
  }
  ckpt.bitmask_sparsity_ = format == "sparse-24-bitmask";
  if (!format.empty() && format != "sparse-24-bitmask" && format != "dense") {
    fail(ErrorKind::kInvalidInput, "{}: sparsity format '{}' is not supported (supported: "
         "sparse-24-bitmask, dense)", ckpt.root_.string(), format);
  }

  // Global name -> (shard, info) map for pairing bitmask triplets across shards.
  std::map<std::string, std::pair<std::size_t, TensorInfo const*>> by_name;
  for (std::size_t s = 0; s < ckpt.shards_.size(); ++s) {
    for (auto const& info : ckpt.shards_[s].tensors()) {
      if (!by_name.emplace(info.name, std::make_pair(s, &info)).second) {
        fail(ErrorKind::kInvalidInput, "{}: tensor '{}' appears in more than one shard",
             ckpt.root_.string(), info.name);
      }
    }
  }
  std::set<std::string> consumed;  // triplet parts folded into a logical tensor
  for (std::size_t s = 0; s < ckpt.shards_.size(); ++s) {
    for (auto const& info : ckpt.shards_[s].tensors()) {
      if (consumed.count(info.name)) continue;
      std::string const& name = info.name;
      // A triplet is keyed on its '.compressed' part.
      if (ends_with(name, ".compressed")) {
        std::string const prefix = name.substr(0, name.size() - std::string_view(".compressed").size());
        auto const bm = by_name.find(prefix + ".bitmask");
        auto const sh = by_name.find(prefix + ".shape");
        if (bm != by_name.end() && sh != by_name.end()) {
          std::string const dense_name = prefix + ".weight";
          if (by_name.count(dense_name)) {
            fail(ErrorKind::kInvalidInput, "{}: both '{}' and a sparse-24-bitmask triplet '{}.*' "
                 "exist", ckpt.root_.string(), dense_name, prefix);
          }
          SafetensorsFile const& shape_file = ckpt.shards_[sh->second.first];
          auto const dims = read_shape_tensor(shape_file, *sh->second.second);
          TensorInfo const& bitmask = *bm->second.second;
          SafetensorsFile const& bitmask_file = ckpt.shards_[bm->second.first];
          std::int64_t const rows = dims[0], cols = dims[1];
          std::int64_t const row_bytes = (cols + 7) / 8;
          if (bitmask.dtype != DType::kU8 || bitmask.shape.size() != 2 ||
              bitmask.shape[0] != rows || bitmask.shape[1] != row_bytes) {
            fail(ErrorKind::kInvalidInput, "{}: '{}' must be U8 [{}, {}] for a [{}, {}] weight",
                 bitmask_file.path().string(), bitmask.name, rows, row_bytes, rows, cols);
          }
          if (!is_weight_dtype(info.dtype) || info.shape.size() != 2) {
            fail(ErrorKind::kInvalidInput, "{}: '{}' must be a 2-D BF16/F16/F32/F8_E4M3/I8 "
                 "tensor (got {} with {} dims)", ckpt.shards_[s].path().string(), name,
                 dtype_name(info.dtype), info.shape.size());
          }
          auto const bits = bitmask_file.bytes(bitmask);
          auto starts = std::make_shared<std::vector<std::uint64_t>>(static_cast<std::size_t>(rows) + 1, 0);
          for (std::int64_t r = 0; r < rows; ++r) {
            std::uint64_t count = 0;
            for (std::int64_t b = 0; b < row_bytes; ++b) {
              auto const byte = std::to_integer<unsigned>(bits[static_cast<std::size_t>(r * row_bytes + b)]);
              int const valid = static_cast<int>(std::min<std::int64_t>(8, cols - 8 * b));
              if (valid < 8 && (byte >> valid) != 0) {
                fail(ErrorKind::kInvalidInput, "{}: '{}' row {} sets bits past column {} (byte "
                     "offset {} in the tensor)", bitmask_file.path().string(), bitmask.name, r,
                     cols, r * row_bytes + b);
              }
              count += static_cast<std::uint64_t>(std::popcount(byte));
            }
            (*starts)[static_cast<std::size_t>(r) + 1] = (*starts)[static_cast<std::size_t>(r)] + count;
          }
          if (starts->back() != info.numel()) {
            fail(ErrorKind::kInvalidInput, "{}: '{}' holds {} values but '{}' marks {} nonzeros",
                 ckpt.shards_[s].path().string(), name, info.numel(), bitmask.name, starts->back());
          }
          LogicalTensor t;
          t.name = dense_name;
          t.dtype = info.dtype;
          t.shape = {rows, cols};
          t.shard = s;
          t.storage = LogicalTensor::Storage::kBitmask24;
          t.compressed = &info;
          t.bitmask = &bitmask;
          t.compressed_shard = s;
          t.bitmask_shard = bm->second.first;
          t.row_starts = std::move(starts);
          ckpt.tensors_.push_back(std::move(t));
          consumed.insert({prefix + ".bitmask", prefix + ".shape"});
          continue;
        }
        if (ckpt.bitmask_sparsity_) {
          fail(ErrorKind::kInvalidInput, "{}: '{}' has no matching '{}.bitmask' and '{}.shape'",
               ckpt.root_.string(), name, prefix, prefix);
        }
      }
      LogicalTensor t;
      t.name = name;
      t.dtype = info.dtype;
      t.shape = info.shape;
      t.shard = s;
      t.plain = &info;
      ckpt.tensors_.push_back(std::move(t));
    }
  }
  // Parts of a triplet may have been emitted as plain tensors before their '.compressed' part
  // was seen (shard order); drop them now.
  std::erase_if(ckpt.tensors_, [&](LogicalTensor const& t) {
    return t.storage == LogicalTensor::Storage::kPlain && consumed.count(t.name);
  });
  return ckpt;
}

LogicalTensor const* HfCheckpoint::find(std::string_view name) const noexcept {
  for (auto const& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::span<std::byte const> HfCheckpoint::plain_bytes(LogicalTensor const& tensor) const {
  if (tensor.storage != LogicalTensor::Storage::kPlain) {
    fail(ErrorKind::kInternal, "tensor '{}' is not stored plainly", tensor.name);
  }
  return shards_.at(tensor.shard).bytes(*tensor.plain);
}

void HfCheckpoint::read(LogicalTensor const& tensor, std::span<std::byte> out) const {
  if (tensor.storage == LogicalTensor::Storage::kPlain) {
    auto const in = plain_bytes(tensor);
    if (out.size() != in.size()) {
      fail(ErrorKind::kInternal, "read of '{}': output size mismatch", tensor.name);
    }
    std::memcpy(out.data(), in.data(), in.size());
  } else {
    read_rows(tensor, 0, tensor.shape[0], out);
  }
}

void HfCheckpoint::read_rows(LogicalTensor const& tensor, std::int64_t row_begin,
                             std::int64_t row_end, std::span<std::byte> out) const {
  if (!tensor.is_matrix() || row_begin < 0 || row_end > tensor.shape[0] || row_begin > row_end) {
    fail(ErrorKind::kInternal, "read_rows of '{}': bad row range", tensor.name);
  }
  std::int64_t const cols = tensor.shape[1];
  std::size_t const elem = dtype_size(tensor.dtype);
  std::size_t const row_bytes = static_cast<std::size_t>(cols) * elem;
  if (out.size() != static_cast<std::size_t>(row_end - row_begin) * row_bytes) {
    fail(ErrorKind::kInternal, "read_rows of '{}': output size mismatch", tensor.name);
  }
  if (tensor.storage == LogicalTensor::Storage::kPlain) {
    auto const bytes = plain_bytes(tensor);
    std::memcpy(out.data(), bytes.data() + static_cast<std::size_t>(row_begin) * row_bytes, out.size());
    return;
  }
  // sparse-24-bitmask: bit c of row r (byte r*ceil(cols/8) + c/8, bit c%8, LSB first) marks a
  // kept value; kept values are stored row-major in `compressed`.
  auto const values = shards_.at(tensor.compressed_shard).bytes(*tensor.compressed);
  auto const bits = shards_.at(tensor.bitmask_shard).bytes(*tensor.bitmask);
  std::size_t const mask_row_bytes = static_cast<std::size_t>((cols + 7) / 8);
  std::memset(out.data(), 0, out.size());
  for (std::int64_t r = row_begin; r < row_end; ++r) {
    std::uint64_t v = (*tensor.row_starts)[static_cast<std::size_t>(r)];
    std::byte* const dst = out.data() + static_cast<std::size_t>(r - row_begin) * row_bytes;
    std::byte const* const mask = bits.data() + static_cast<std::size_t>(r) * mask_row_bytes;
    for (std::int64_t c = 0; c < cols; ++c) {
      if ((std::to_integer<unsigned>(mask[c / 8]) >> (c % 8)) & 1u) {
        std::memcpy(dst + static_cast<std::size_t>(c) * elem, values.data() + v * elem, elem);
        ++v;
      }
    }
  }
}

}  // namespace slidesparse::io
