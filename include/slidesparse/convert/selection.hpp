/// \file selection.hpp
/// \brief Which tensors of a checkpoint a command treats as linear-layer weights.
#pragma once

#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "slidesparse/io/hf_checkpoint.hpp"

namespace slidesparse::convert {

/// Default for model directories: the projection weights of the decoder layers (q/k/v/o,
/// gate/up/down, fused qkv/gate_up). Embeddings, norms and lm_head are left alone unless an
/// --include names them.
inline constexpr char const* kDefaultLinearRegex = R"((^|\.)layers\.\d+\..*_proj\.weight$)";

class TensorSelection {
 public:
  /// include: regex searched in the tensor name (empty = the default for the checkpoint kind);
  /// exclude: regex whose match removes a tensor (empty = none). Throws Error(kUsage) for an
  /// invalid regex, naming it.
  TensorSelection(std::string include, std::string exclude);

  /// Selected: a 2-D tensor of a weight dtype whose name matches include and not exclude. For a
  /// bare .safetensors file without an explicit include, every 2-D weight-dtype tensor matches.
  bool selects(io::LogicalTensor const& tensor, bool model_directory) const;

  std::string const& include_text() const noexcept { return include_text_; }
  std::string const& exclude_text() const noexcept { return exclude_text_; }

 private:
  std::string include_text_;
  std::string exclude_text_;
  std::optional<std::regex> include_;
  std::optional<std::regex> exclude_;
  std::regex default_include_;
};

}  // namespace slidesparse::convert
