/// \file gemm_tuning.hpp
/// \brief Tuning-cache keys shared by the GEMM backends (internal to the CUDA layer).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "slidesparse/core/dtype.hpp"

namespace slidesparse::cuda::detail {

/// Names everything a tuned GEMM configuration depends on besides the problem: GPU model, SM
/// version and count, driver and runtime versions, backend and its library version. Then the
/// problem: dtypes, N, K' and the exact M the configuration was tuned (and is used) at.
std::string gemm_tuning_key(std::string_view backend, std::string_view library_version, DType input,
                            DType output, std::int64_t n, std::int64_t k, std::int64_t m);

/// Today's date (UTC, YYYY-MM-DD), recorded with every tuned entry as provenance.
std::string tuning_date();

}  // namespace slidesparse::cuda::detail
