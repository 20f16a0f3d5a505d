/// \file sm90a_requirements.hpp
/// \brief What the W8A8 sm_90a kernels with a fused BF16 epilogue need (CUTLASS's and the
/// hand-written sparse one alike), checked in one place (internal to the CUDA layer).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "slidesparse/core/dtype.hpp"

namespace slidesparse::cuda::detail {

/// Empty when `kernels` (e.g. "CUTLASS kernels") can run y [M, n] (BF16) = x' [M, k] . W'^T here,
/// else why not: operands not I8 / F8_E4M3, output not BF16, n not a positive multiple of 8 (16-byte
/// output rows), k not a positive multiple of 16 (TMA row stride), no CUDA device, not sm_90.
std::string sm90a_w8a8_unsupported(std::string_view kernels, DType input, DType output, std::int64_t n,
                                   std::int64_t k);

}  // namespace slidesparse::cuda::detail
