#include "slidesparse/convert/selection.hpp"

#include "slidesparse/core/error.hpp"

namespace slidesparse::convert {
namespace {

std::optional<std::regex> compile(std::string const& text, char const* option) {
  if (text.empty()) return std::nullopt;
  try {
    return std::regex(text, std::regex::ECMAScript);
  } catch (std::regex_error const& e) {
    fail(ErrorKind::kUsage, "{} '{}' is not a valid regular expression: {}", option, text, e.what());
  }
}

}  // namespace

TensorSelection::TensorSelection(std::string include, std::string exclude)
    : include_text_(std::move(include)),
      exclude_text_(std::move(exclude)),
      include_(compile(include_text_, "--include")),
      exclude_(compile(exclude_text_, "--exclude")),
      default_include_(kDefaultLinearRegex, std::regex::ECMAScript) {}

bool TensorSelection::selects(io::LogicalTensor const& tensor, bool model_directory) const {
  if (!tensor.is_matrix() || !is_weight_dtype(tensor.dtype)) return false;
  bool included = true;
  if (include_) {
    included = std::regex_search(tensor.name, *include_);
  } else if (model_directory) {
    included = std::regex_search(tensor.name, default_include_);
  }
  if (!included) return false;
  return !(exclude_ && std::regex_search(tensor.name, *exclude_));
}

}  // namespace slidesparse::convert
