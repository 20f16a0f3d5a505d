/// \file hf_checkpoint.hpp
/// \brief Hugging Face model directories: config.json, single or sharded safetensors, and the
/// compressed-tensors conventions (W8A8 `weight` + `weight_scale`, legacy sparse-24-bitmask).
///
/// The checkpoint is presented as a list of *logical* tensors: what a dense engine would load.
/// A sparse-24-bitmask triplet `<p>.shape`, `<p>.compressed`, `<p>.bitmask` appears as the one
/// dense tensor `<p>.weight`, decoded on read; everything else is the stored tensor itself.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "slidesparse/io/safetensors.hpp"

namespace slidesparse::io {

struct LogicalTensor {
  enum class Storage {
    kPlain,      ///< stored as is
    kBitmask24,  ///< compressed-tensors sparse-24-bitmask triplet, decoded on read
  };
  std::string name;
  DType dtype = DType::kU8;
  std::vector<std::int64_t> shape;
  std::size_t shard = 0;  ///< index into HfCheckpoint::shard_files()
  Storage storage = Storage::kPlain;
  TensorInfo const* plain = nullptr;  ///< kPlain: the stored tensor
  TensorInfo const* compressed = nullptr;  ///< kBitmask24: kept values, row-major
  TensorInfo const* bitmask = nullptr;     ///< kBitmask24: U8 [rows, ceil(cols/8)], LSB first
  std::size_t compressed_shard = 0;        ///< kBitmask24: shards of the two parts (a sharded
  std::size_t bitmask_shard = 0;           ///< checkpoint may split a triplet)
  /// kBitmask24: index of the first kept value of each row in `compressed` (rows + 1 entries).
  std::shared_ptr<std::vector<std::uint64_t> const> row_starts;

  std::uint64_t numel() const;
  std::uint64_t nbytes() const { return numel() * dtype_size(dtype); }
  bool is_matrix() const { return shape.size() == 2; }
};

class HfCheckpoint {
 public:
  /// Opens a model directory (config.json optional; model.safetensors or a sharded
  /// model.safetensors.index.json) or a single .safetensors file. Validates the index against
  /// the shards and the bitmask triplets against their shapes; errors name file and tensor.
  static HfCheckpoint open(std::filesystem::path const& path);

  std::filesystem::path const& root() const noexcept { return root_; }
  bool is_directory() const noexcept { return is_directory_; }
  /// config.json (an empty object when absent).
  nlohmann::json const& config() const noexcept { return config_; }
  /// True when config.json declares a compressed-tensors sparse-24-bitmask sparsity format.
  bool has_bitmask_sparsity() const noexcept { return bitmask_sparsity_; }
  bool is_sharded() const noexcept { return sharded_; }
  std::vector<std::string> const& shard_files() const noexcept { return shard_files_; }
  SafetensorsFile const& shard(std::size_t index) const { return shards_.at(index); }

  /// Logical tensors in shard order, then data-offset order within a shard.
  std::vector<LogicalTensor> const& tensors() const noexcept { return tensors_; }
  LogicalTensor const* find(std::string_view name) const noexcept;

  /// Stored bytes of a plain tensor (zero copy).
  std::span<std::byte const> plain_bytes(LogicalTensor const& tensor) const;

  /// Writes the whole logical tensor (any shape, any storage) into `out` (nbytes() bytes).
  void read(LogicalTensor const& tensor, std::span<std::byte> out) const;

  /// Writes rows [row_begin, row_end) of a 2-D logical tensor (any storage) into `out`, which
  /// holds (row_end - row_begin) * cols elements. Bitmask triplets are decoded here.
  void read_rows(LogicalTensor const& tensor, std::int64_t row_begin, std::int64_t row_end,
                 std::span<std::byte> out) const;

 private:
  std::filesystem::path root_;
  bool is_directory_ = false;
  bool sharded_ = false;
  bool bitmask_sparsity_ = false;
  nlohmann::json config_ = nlohmann::json::object();
  std::vector<std::string> shard_files_;
  std::vector<SafetensorsFile> shards_;
  std::vector<LogicalTensor> tensors_;
};

/// Parses a JSON file with a clear error (file, line/byte) on failure.
nlohmann::json read_json_file(std::filesystem::path const& path);

/// Writes text to path atomically (temporary file in the same folder + rename).
void write_text_file_atomic(std::filesystem::path const& path, std::string const& text);

}  // namespace slidesparse::io
