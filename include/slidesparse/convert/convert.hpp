/// \file convert.hpp
/// \brief Checkpoint-level pipelines behind the CLI: convert, slide, verify, inspect.
///
/// Pruned-dense is the interchange format: `convert` writes the pruned (optionally quantized)
/// weights in their original [N, K] layout and names, so any dense engine can still run the
/// result; sliding happens at load time. `slide` writes the [N, K'] layout explicitly, for
/// inspection and for tools that want it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "slidesparse/convert/selection.hpp"
#include "slidesparse/core/pattern.hpp"
#include "slidesparse/core/pattern_check.hpp"

namespace slidesparse::convert {

/// Version written into every artifact's `slidesparse` section.
std::string tool_version();

enum class PruneMethod { kMagnitude, kImportance };
enum class QuantTarget { kNone, kFp8, kInt8 };

struct ConvertOptions {
  SparsityPattern pattern = SparsityPattern::parse("6:8");
  PruneMethod prune = PruneMethod::kMagnitude;
  /// For kImportance: a safetensors file with one F32 vector [K] per selected weight, named
  /// like the weight (per-input-channel importance, e.g. activation norms ||x_j||_2).
  std::filesystem::path importance_file;
  QuantTarget quant = QuantTarget::kNone;
  std::string include;  ///< regex; empty = the default linear-layer selection
  std::string exclude;  ///< regex; empty = none
  std::int64_t k_alignment = kDefaultKAlignment;
  bool overwrite = false;  ///< replace an existing non-empty OUT_DIR (only once complete)
  bool progress = true;    ///< progress bar when stderr is a terminal
};

struct TensorReport {
  std::string name;
  std::string source_dtype;
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::int64_t zeroed = 0;         ///< values pruned away
  std::int64_t blocks_pruned = 0;  ///< blocks that had too many nonzeros
  std::int64_t k_lifted = 0;       ///< K' of the slid layout (for reference)
};

struct ConvertReport {
  std::vector<TensorReport> tensors;  ///< selected (pruned) weights
  std::int64_t passed_through = 0;    ///< other tensors copied unchanged
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_written = 0;
  double seconds = 0;
};

/// The compressed-tensors `quantization_config` of a W8A8 checkpoint as `convert --quant` writes
/// it (per-channel weights, dynamic per-token activations).
nlohmann::json w8a8_quantization_config(bool fp8);

/// IN_DIR -> OUT_DIR. The output is assembled in a sibling temporary directory and renamed
/// into place only when complete; on any error nothing is left behind.
ConvertReport convert_checkpoint(std::filesystem::path const& in_dir,
                                 std::filesystem::path const& out_dir, ConvertOptions const& options);

struct SlideFileOptions {
  SparsityPattern pattern = SparsityPattern::parse("6:8");
  std::string include;
  std::string exclude;
  std::int64_t k_alignment = kDefaultKAlignment;
  bool progress = true;
};

/// IN.safetensors -> OUT.safetensors with every selected weight in the slid [N, K'] layout
/// (same dtype); other tensors pass through. The `slidesparse` metadata entry records the
/// pattern, alignment, and K, K' of each slid tensor.
ConvertReport slide_file(std::filesystem::path const& in_file, std::filesystem::path const& out_file,
                         SlideFileOptions const& options);

struct TensorVerdict {
  std::string name;
  bool ok = false;
  std::string problem;                   ///< why not ok (empty when ok)
  PatternCheck check;                    ///< violations of the pattern (pruned-dense tensors)
};

struct VerifyReport {
  SparsityPattern pattern = SparsityPattern::parse("6:8");
  bool slid_layout = false;  ///< the file holds slid [N, K'] tensors
  std::vector<TensorVerdict> tensors;
  bool ok() const;
};

/// Checks every selected weight: it satisfies the pattern, and slide -> unslide reproduces it
/// exactly. A file written by `slide` is checked the other way round (unslide validates W',
/// and slide(unslide(W')) == W'). `pattern` may be omitted when the checkpoint records one.
VerifyReport verify_checkpoint(std::filesystem::path const& path,
                               std::optional<SparsityPattern> pattern, std::string const& include,
                               std::string const& exclude);

struct TensorInspection {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::string storage;                        ///< "plain" or "sparse-24-bitmask"
  std::optional<SparsityProfile> profile;     ///< 2-D weight dtypes only
};

std::vector<TensorInspection> inspect_checkpoint(std::filesystem::path const& path);
nlohmann::json inspection_to_json(std::vector<TensorInspection> const& tensors);

}  // namespace slidesparse::convert
