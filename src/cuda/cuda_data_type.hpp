/// \file cuda_data_type.hpp
/// \brief DType -> cudaDataType for the GEMM backends (cuSPARSELt and cuBLASLt share it).
#pragma once

#include <library_types.h>

#include "slidesparse/core/error.hpp"

namespace slidesparse::cuda::detail {

inline cudaDataType cuda_data_type(DType dtype, char const* backend) {
  switch (dtype) {
    case DType::kI8: return CUDA_R_8I;
    case DType::kF8E4M3: return CUDA_R_8F_E4M3;
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kF16: return CUDA_R_16F;
    case DType::kI32: return CUDA_R_32I;
    case DType::kF32: return CUDA_R_32F;
    default: fail(ErrorKind::kUsage, "{} GEMM: unsupported dtype {}", backend, dtype_name(dtype));
  }
}

}  // namespace slidesparse::cuda::detail
