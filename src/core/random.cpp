#include "slidesparse/core/random.hpp"

#include <cmath>

#include "slidesparse/core/error.hpp"
#include "slidesparse/core/matrix.hpp"
#include "slidesparse/core/numeric.hpp"
#include "slidesparse/core/parallel.hpp"

namespace slidesparse {

void fill_random(DType dtype, std::byte* data, std::int64_t count, std::uint64_t seed) {
  if (dtype != DType::kF8E4M3 && dtype != DType::kI8 && dtype != DType::kBF16 && dtype != DType::kF16) {
    fail(ErrorKind::kUsage, "fill_random: {} is not F8_E4M3, I8, BF16 or F16", dtype_name(dtype));
  }
  std::size_t const elem = dtype_size(dtype);
  parallel_for(count, 4, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      std::uint64_t const r = splitmix64(seed ^ (static_cast<std::uint64_t>(i) * 0x2545F4914F6CDD1Dull));
      std::byte* p = data + static_cast<std::size_t>(i) * elem;
      switch (dtype) {
        case DType::kF8E4M3: store<std::uint8_t>(p, static_cast<std::uint8_t>((r & 0x80) | (0x30 + (r >> 8 & 0x1F)))); break;
        case DType::kI8: {
          auto v = static_cast<int>(r % 255) - 127;
          store<std::int8_t>(p, static_cast<std::int8_t>(v == 0 ? 1 : v));
          break;
        }
        default: {
          float const mant = 1.0f + static_cast<float>(r >> 40 & 0xFFFF) / 65536.0f;
          float const v = std::ldexp(mant, -static_cast<int>(r >> 8 & 3)) * ((r & 1) ? -1.0f : 1.0f);
          store<std::uint16_t>(p, dtype == DType::kBF16 ? float_to_bf16(v).bits : float_to_fp16(v).bits);
        }
      }
    }
  });
}

}  // namespace slidesparse
