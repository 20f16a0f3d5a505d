#include "slidesparse/core/obs_prune.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "slidesparse/core/error.hpp"
#include "slidesparse/core/parallel.hpp"

namespace slidesparse {
namespace {

// In place: the lower Cholesky factor L of the symmetric positive definite a [k, k] (a = L L^T),
// by columns (Cholesky-Crout): L_jj = sqrt(a_jj - |L_j,<j|^2), then every row below it in
// parallel, L_ij = (a_ij - <L_i,<j, L_j,<j>) / L_jj. The upper triangle is zeroed. `what` names
// the matrix in the error when a pivot is not positive.
void cholesky_lower(std::vector<double>& a, std::int64_t k, char const* what) {
  for (std::int64_t j = 0; j < k; ++j) {
    double* const rj = a.data() + j * k;
    double d = rj[j];
    for (std::int64_t p = 0; p < j; ++p) d -= rj[p] * rj[p];
    if (!(d > 0.0) || !std::isfinite(d)) {
      fail(ErrorKind::kInvalidInput, "{} is not positive definite (pivot {} at column {}); more dampening is needed",
           what, d, j);
    }
    double const l = std::sqrt(d);
    rj[j] = l;
    parallel_for(k - j - 1, 8 * j + 64, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t i = j + 1 + begin; i < j + 1 + end; ++i) {
        double* const ri = a.data() + i * k;
        double s = ri[j];
        for (std::int64_t p = 0; p < j; ++p) s -= ri[p] * rj[p];
        ri[j] = s / l;
      }
    });
  }
  for (std::int64_t i = 0; i < k; ++i) std::fill(a.data() + i * k + i + 1, a.data() + (i + 1) * k, 0.0);
}

}  // namespace

ObsFactor::ObsFactor(std::span<double const> gram, std::int64_t k, double dampening) : k_(k) {
  if (k <= 0 || static_cast<std::int64_t>(gram.size()) != k * k) {
    fail(ErrorKind::kInvalidInput, "Gram matrix has {} entries; a [{} x {}] matrix needs {}", gram.size(), k, k, k * k);
  }
  if (!(dampening >= 0.0) || !std::isfinite(dampening)) {
    fail(ErrorKind::kUsage, "dampening {} must be finite and >= 0", dampening);
  }
  std::vector<double> h(gram.begin(), gram.end());
  double diag = 0;
  for (std::int64_t i = 0; i < k * k; ++i) {
    if (!std::isfinite(h[static_cast<std::size_t>(i)])) {
      fail(ErrorKind::kInvalidInput, "Gram matrix entry ({}, {}) is {}", i / k, i % k, h[static_cast<std::size_t>(i)]);
    }
  }
  for (std::int64_t j = 0; j < k; ++j) {
    double& hjj = h[static_cast<std::size_t>(j * k + j)];
    if (hjj == 0.0) hjj = 1.0;  // a channel that never fired
    diag += hjj;
  }
  double const damp = dampening * diag / static_cast<double>(k);
  for (std::int64_t j = 0; j < k; ++j) h[static_cast<std::size_t>(j * k + j)] += damp;

  // H = L L^T  ->  H^-1 = L^-T L^-1. X = L^-1 (lower), kept transposed (xt[c][p] = X_pc) so the
  // substitution of each column reads contiguous rows: X_cc = 1 / L_cc,
  // X_ic = -(sum_{p=c}^{i-1} L_ip X_pc) / L_ii for i > c. Columns are independent.
  cholesky_lower(h, k, "the dampened Gram matrix");
  std::vector<double> xt(static_cast<std::size_t>(k * k), 0.0);
  parallel_for(k, 8 * k, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t c = begin; c < end; ++c) {
      double* const x = xt.data() + c * k;
      x[c] = 1.0 / h[static_cast<std::size_t>(c * k + c)];
      for (std::int64_t i = c + 1; i < k; ++i) {
        double const* const li = h.data() + i * k;
        double s = 0;
        for (std::int64_t p = c; p < i; ++p) s += li[p] * x[p];
        x[i] = -s / li[i];
      }
    }
  });
  // H^-1 [a][b] = sum_p X_pa X_pb over p >= max(a, b) (X is lower triangular).
  std::vector<double> inv(static_cast<std::size_t>(k * k));
  parallel_for(k, 8 * k, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t a = begin; a < end; ++a) {
      double const* const xa = xt.data() + a * k;
      for (std::int64_t b = a; b < k; ++b) {
        double const* const xb = xt.data() + b * k;
        double s = 0;
        for (std::int64_t p = b; p < k; ++p) s += xa[p] * xb[p];
        inv[static_cast<std::size_t>(a * k + b)] = s;
        inv[static_cast<std::size_t>(b * k + a)] = s;
      }
    }
  });
  // H^-1 = M M^T (M lower)  ->  U = M^T is the upper factor with H^-1 = U^T U.
  cholesky_lower(inv, k, "the inverse of the dampened Gram matrix");
  u_.assign(static_cast<std::size_t>(k * k), 0.0);
  for (std::int64_t i = 0; i < k; ++i) {
    for (std::int64_t j = 0; j <= i; ++j) u_[static_cast<std::size_t>(j * k + i)] = inv[static_cast<std::size_t>(i * k + j)];
  }
}

std::int64_t obs_prune_in_place(MatrixView weight, SparsityPattern pattern, ObsFactor const& factor) {
  if (weight.dtype != DType::kF32) {
    fail(ErrorKind::kInvalidInput, "tensor '{}': second-order pruning takes F32 weights, not {}", weight.name,
         dtype_name(weight.dtype));
  }
  std::int64_t const k = weight.cols;
  if (k != factor.k()) {
    fail(ErrorKind::kInvalidInput, "tensor '{}' has K = {} input channels; the Gram matrix is for K = {}", weight.name,
         k, factor.k());
  }
  int const block = pattern.block(), keep = pattern.max_nonzeros();
  std::vector<std::int64_t> zeroed(static_cast<std::size_t>(std::max<std::int64_t>(weight.rows, 1)), 0);
  parallel_for(weight.rows, 8 * k * k / 2 + 1, [&](std::int64_t begin, std::int64_t end) {
    std::vector<double> w(static_cast<std::size_t>(k));
    std::array<std::pair<double, int>, 2 * SparsityPattern::kMaxN> order{};
    for (std::int64_t r = begin; r < end; ++r) {
      auto* const row = reinterpret_cast<float*>(weight.row(r));
      for (std::int64_t j = 0; j < k; ++j) {
        if (std::isnan(row[j])) {
          fail(ErrorKind::kInvalidInput, "tensor '{}': row {}, column {} is NaN; cannot prune", weight.name,
               weight.row_offset + r, j);
        }
        w[static_cast<std::size_t>(j)] = row[j];
      }
      for (std::int64_t g = 0; g < k; g += block) {
        int const width = static_cast<int>(std::min<std::int64_t>(block, k - g));
        int const prune = std::max(0, width - keep);
        // Saliency w^2 / U_jj^2 of the block's columns (after the compensation so far); the
        // `prune` lowest go, on ties the higher column first.
        for (int i = 0; i < width; ++i) {
          double const wj = w[static_cast<std::size_t>(g + i)], ujj = factor.row(g + i)[g + i];
          order[static_cast<std::size_t>(i)] = {wj * wj / (ujj * ujj), i};
        }
        std::sort(order.begin(), order.begin() + width, [](auto const& a, auto const& b) {
          return a.first != b.first ? a.first < b.first : a.second > b.second;
        });
        std::uint32_t pruned_mask = 0;
        for (int i = 0; i < prune; ++i) pruned_mask |= 1u << order[static_cast<std::size_t>(i)].second;
        for (int i = 0; i < width; ++i) {
          if (!(pruned_mask >> i & 1u)) continue;
          std::int64_t const j = g + i;
          double const wj = w[static_cast<std::size_t>(j)];
          if (wj == 0.0) continue;  // already zero: nothing to compensate (later blocks never touch it)
          ++zeroed[static_cast<std::size_t>(r)];
          double const* const uj = factor.row(j);
          double const err = wj / uj[j];
          w[static_cast<std::size_t>(j)] = 0.0;
          for (std::int64_t c = j + 1; c < k; ++c) w[static_cast<std::size_t>(c)] -= err * uj[c];
        }
      }
      for (std::int64_t j = 0; j < k; ++j) {
        float const v = static_cast<float>(w[static_cast<std::size_t>(j)]);
        row[j] = v == 0.0f ? 0.0f : v;  // -0.0 -> +0.0 (and values that round to zero)
      }
    }
  });
  std::int64_t total = 0;
  for (std::int64_t z : zeroed) total += z;
  return total;
}

}  // namespace slidesparse
