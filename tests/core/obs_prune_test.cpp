// Second-order pruning (SparseGPT) against independent references: magnitude pruning when the
// Gram matrix is a multiple of the identity, a sequential optimal-brain-surgeon reference that
// inverts H by Gauss-Jordan and eliminates one column at a time (no Cholesky), and the layer's
// reconstruction error against magnitude and Wanda pruning on correlated inputs.
#include "slidesparse/core/obs_prune.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/test_util.hpp"
#include "slidesparse/core/error.hpp"
#include "slidesparse/core/prune.hpp"

namespace slidesparse {
namespace {

using test::OwnedMatrix;

std::vector<float> random_weights(test::Rng& rng, std::int64_t n, std::int64_t k) {
  std::vector<float> w(static_cast<std::size_t>(n * k));
  for (float& x : w) {
    int const kind = rng.uniform_int(0, 9);
    // Some exact zeros and repeated magnitudes (ties), the rest continuous.
    x = kind == 0 ? 0.0f : kind == 1 ? (rng.uniform_int(0, 1) ? 0.5f : -0.5f) : rng.normal(1.0f);
  }
  return w;
}

MatrixView view_of(std::vector<float>& w, std::int64_t n, std::int64_t k) {
  return {DType::kF32, n, k, reinterpret_cast<std::byte*>(w.data()), "w"};
}

// Inputs with correlated channels: x = z A + 0.1 noise, z [T, K], A [K, K] random.
std::vector<float> correlated_inputs(test::Rng& rng, std::int64_t t, std::int64_t k) {
  std::vector<float> a(static_cast<std::size_t>(k * k)), z(static_cast<std::size_t>(t * k)), x(static_cast<std::size_t>(t * k));
  for (float& v : a) v = rng.normal(1.0f);
  for (float& v : z) v = rng.normal(1.0f);
  for (std::int64_t r = 0; r < t; ++r) {
    for (std::int64_t c = 0; c < k; ++c) {
      double s = 0.1 * rng.normal(1.0f);
      for (std::int64_t p = 0; p < k; ++p) s += static_cast<double>(z[r * k + p]) * a[p * k + c];
      x[static_cast<std::size_t>(r * k + c)] = static_cast<float>(s);
    }
  }
  return x;
}

std::vector<double> gram_of(std::vector<float> const& x, std::int64_t t, std::int64_t k) {
  std::vector<double> g(static_cast<std::size_t>(k * k), 0.0);
  for (std::int64_t r = 0; r < t; ++r) {
    for (std::int64_t a = 0; a < k; ++a) {
      for (std::int64_t b = 0; b < k; ++b) g[static_cast<std::size_t>(a * k + b)] += double(x[r * k + a]) * x[r * k + b];
    }
  }
  return g;
}

// ||X (W - W')^T||_F^2: the layer's output error on the calibration inputs.
double output_error(std::vector<float> const& x, std::vector<float> const& w, std::vector<float> const& pruned,
                    std::int64_t t, std::int64_t n, std::int64_t k) {
  double e = 0;
  for (std::int64_t r = 0; r < t; ++r) {
    for (std::int64_t o = 0; o < n; ++o) {
      double d = 0;
      for (std::int64_t c = 0; c < k; ++c) d += double(x[r * k + c]) * (double(w[o * k + c]) - pruned[o * k + c]);
      e += d * d;
    }
  }
  return e;
}

void expect_pattern(std::vector<float> const& w, std::int64_t n, std::int64_t k, SparsityPattern p) {
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t g = 0; g < k; g += p.block()) {
      int nz = 0;
      for (std::int64_t c = g; c < std::min<std::int64_t>(g + p.block(), k); ++c) {
        float const v = w[static_cast<std::size_t>(r * k + c)];
        nz += v != 0.0f;
        EXPECT_FALSE(v == 0.0f && std::signbit(v)) << "-0.0 at row " << r << " column " << c;
      }
      ASSERT_LE(nz, p.max_nonzeros()) << "row " << r << " block starting at column " << g;
    }
  }
}

TEST(ObsPrune, AMultipleOfTheIdentityGivesMagnitudePruning) {
  // No correlation between inputs: no compensation, saliency proportional to w^2, so the
  // result must equal prune_in_place's magnitude pruning value for value (ties included).
  test::Rng rng(501);
  SCOPED_TRACE(rng.describe());
  for (char const* text : {"2:4", "4:6", "6:8", "14:16"}) {
    SparsityPattern const p = SparsityPattern::parse(text);
    for (std::int64_t k : {1, 7, 17, 33, 64}) {
      SCOPED_TRACE(std::string(text) + " K=" + std::to_string(k));
      std::int64_t const n = 9;
      std::vector<float> w = random_weights(rng, n, k), expected = w;
      std::vector<double> gram(static_cast<std::size_t>(k * k), 0.0);
      for (std::int64_t j = 0; j < k; ++j) gram[static_cast<std::size_t>(j * k + j)] = 3.0;
      prune_in_place(view_of(expected, n, k), p);
      obs_prune_in_place(view_of(w, n, k), p, ObsFactor(gram, k));
      ASSERT_EQ(std::memcmp(w.data(), expected.data(), w.size() * sizeof(float)), 0);
    }
  }
}

// Sequential optimal brain surgeon without Cholesky: H^-1 by Gauss-Jordan; column j's saliency
// divisor d_j is the diagonal of H^-1 after eliminating columns < j; a pruned column's weight is
// removed with the update w_c -= w_j E_jc / E_jj over the not yet processed columns c > j, E
// being H^-1 with the processed columns eliminated.
std::vector<float> obs_reference(std::vector<float> const& w0, std::int64_t n, std::int64_t k, std::vector<double> h,
                                 SparsityPattern p, double dampening) {
  double mean = 0;
  for (std::int64_t j = 0; j < k; ++j) mean += h[static_cast<std::size_t>(j * k + j)];
  for (std::int64_t j = 0; j < k; ++j) h[static_cast<std::size_t>(j * k + j)] += dampening * mean / double(k);
  // Gauss-Jordan with partial pivoting on [H | I].
  std::vector<double> inv(static_cast<std::size_t>(k * k), 0.0);
  for (std::int64_t j = 0; j < k; ++j) inv[static_cast<std::size_t>(j * k + j)] = 1.0;
  for (std::int64_t c = 0; c < k; ++c) {
    std::int64_t piv = c;
    for (std::int64_t r = c + 1; r < k; ++r) {
      if (std::abs(h[r * k + c]) > std::abs(h[piv * k + c])) piv = r;
    }
    for (std::int64_t j = 0; j < k; ++j) {
      std::swap(h[c * k + j], h[piv * k + j]);
      std::swap(inv[c * k + j], inv[piv * k + j]);
    }
    double const d = h[c * k + c];
    for (std::int64_t j = 0; j < k; ++j) h[c * k + j] /= d, inv[c * k + j] /= d;
    for (std::int64_t r = 0; r < k; ++r) {
      if (r == c) continue;
      double const f = h[r * k + c];
      for (std::int64_t j = 0; j < k; ++j) h[r * k + j] -= f * h[c * k + j], inv[r * k + j] -= f * inv[c * k + j];
    }
  }
  auto eliminate = [&](std::vector<double>& e, std::int64_t j) {
    for (std::int64_t a = j + 1; a < k; ++a) {
      for (std::int64_t b = j + 1; b < k; ++b) e[a * k + b] -= e[a * k + j] * e[j * k + b] / e[j * k + j];
    }
  };
  std::vector<double> d(static_cast<std::size_t>(k));
  {
    std::vector<double> e = inv;
    for (std::int64_t j = 0; j < k; ++j) {
      d[static_cast<std::size_t>(j)] = e[j * k + j];
      eliminate(e, j);
    }
  }
  std::vector<float> out(w0.size());
  for (std::int64_t r = 0; r < n; ++r) {
    std::vector<double> w(w0.begin() + r * k, w0.begin() + (r + 1) * k);
    std::vector<double> e = inv;
    for (std::int64_t g = 0; g < k; g += p.block()) {
      std::int64_t const width = std::min<std::int64_t>(p.block(), k - g);
      std::vector<std::int64_t> cols;
      for (std::int64_t c = g; c < g + width; ++c) cols.push_back(c);
      std::stable_sort(cols.begin(), cols.end(), [&](std::int64_t a, std::int64_t b) {
        double const sa = w[a] * w[a] / d[a], sb = w[b] * w[b] / d[b];
        return sa != sb ? sa < sb : a > b;
      });
      std::vector<bool> pruned(static_cast<std::size_t>(width), false);
      for (std::int64_t i = 0; i < std::max<std::int64_t>(0, width - p.max_nonzeros()); ++i) pruned[cols[i] - g] = true;
      for (std::int64_t j = g; j < g + width; ++j) {
        if (pruned[j - g]) {
          double const wj = w[j];
          for (std::int64_t c = j + 1; c < k; ++c) w[c] -= wj * e[j * k + c] / e[j * k + j];
          w[j] = 0.0;
        }
        eliminate(e, j);
      }
    }
    for (std::int64_t c = 0; c < k; ++c) out[static_cast<std::size_t>(r * k + c)] = static_cast<float>(w[c]);
  }
  return out;
}

TEST(ObsPrune, MatchesASequentialBrainSurgeonWithoutCholesky) {
  test::Rng rng(502);
  SCOPED_TRACE(rng.describe());
  for (char const* text : {"2:4", "6:8"}) {
    for (std::int64_t k : {7, 24, 37}) {
      SCOPED_TRACE(std::string(text) + " K=" + std::to_string(k));
      SparsityPattern const p = SparsityPattern::parse(text);
      std::int64_t const n = 6, t = 3 * k;
      std::vector<float> const x = correlated_inputs(rng, t, k);
      std::vector<double> const gram = gram_of(x, t, k);
      std::vector<float> w(static_cast<std::size_t>(n * k));
      for (float& v : w) v = rng.normal(1.0f);
      std::vector<float> const expected = obs_reference(w, n, k, gram, p, 0.01);
      obs_prune_in_place(view_of(w, n, k), p, ObsFactor(gram, k, 0.01));
      // Same prune set; values equal up to the two factorizations' rounding: double arithmetic
      // on a dampened (well-conditioned) H, then one rounding to float, so a few float ulps.
      for (std::size_t i = 0; i < w.size(); ++i) {
        ASSERT_EQ(w[i] == 0.0f, expected[i] == 0.0f) << "index " << i;
        ASSERT_NEAR(w[i], expected[i], 1e-5 * (1.0 + std::abs(expected[i]))) << "index " << i;
      }
      expect_pattern(w, n, k, p);
    }
  }
}

TEST(ObsPrune, CompensationLowersTheLayerErrorBelowMagnitudeAndWanda) {
  // On correlated inputs the compensated weights reproduce the layer's outputs much better
  // than either mask-only criterion. Bound: at most 0.8 of the better of the two (measured with
  // this seed: 0.61 for 2:4, 0.45 for 6:8; without compensation the error lands at Wanda's).
  test::Rng rng(503);
  SCOPED_TRACE(rng.describe());
  std::int64_t const n = 16, k = 48, t = 256;
  std::vector<float> const x = correlated_inputs(rng, t, k);
  std::vector<double> const gram = gram_of(x, t, k);
  std::vector<float> importance(static_cast<std::size_t>(k));
  for (std::int64_t c = 0; c < k; ++c) importance[static_cast<std::size_t>(c)] = static_cast<float>(std::sqrt(gram[c * k + c]));
  std::vector<float> w(static_cast<std::size_t>(n * k));
  for (float& v : w) v = rng.normal(1.0f);
  for (char const* text : {"2:4", "6:8"}) {
    SparsityPattern const p = SparsityPattern::parse(text);
    std::vector<float> mag = w, wanda = w, obs = w;
    prune_in_place(view_of(mag, n, k), p);
    prune_in_place(view_of(wanda, n, k), p, importance);
    std::int64_t const zeroed = obs_prune_in_place(view_of(obs, n, k), p, ObsFactor(gram, k));
    expect_pattern(obs, n, k, p);
    EXPECT_EQ(zeroed, n * (k / p.block()) * (p.block() - p.max_nonzeros()));
    double const e_mag = output_error(x, w, mag, t, n, k), e_wanda = output_error(x, w, wanda, t, n, k),
                 e_obs = output_error(x, w, obs, t, n, k);
    std::cout << "[ info ] " << text << ": output error magnitude " << e_mag << ", Wanda " << e_wanda << ", SparseGPT "
              << e_obs << "\n";
    EXPECT_LT(e_obs, 0.8 * std::min(e_mag, e_wanda)) << text;
  }
}

TEST(ObsPrune, BadInputsAreNamed) {
  std::vector<double> const gram = {2, 0, 0, 2};
  std::vector<float> w = {1, 2, 3, 4};
  using test::expect_error;
  ErrorKind const bad = ErrorKind::kInvalidInput;
  expect_error([&] { ObsFactor(gram, 3); }, bad, {"[3 x 3] matrix needs 9"});
  expect_error([&] { ObsFactor(std::vector<double>{2, 0, 0, NAN}, 2); }, bad, {"entry (1, 1)"});
  expect_error([&] { ObsFactor(std::vector<double>{1, 2, 2, 1}, 2, 0.0); }, bad, {"not positive definite", "column 1"});
  ObsFactor const f(gram, 2);
  expect_error([&] { obs_prune_in_place(view_of(w, 1, 4), SparsityPattern::parse("2:4"), f); }, bad, {"K = 4 input channels"});
  OwnedMatrix bf(DType::kBF16, 2, 2);
  expect_error([&] { obs_prune_in_place(bf.view("wq"), SparsityPattern::parse("2:4"), f); }, bad, {"'wq'", "BF16"});
  std::vector<float> nan = {1, NAN, 3, 4};
  expect_error([&] { obs_prune_in_place(view_of(nan, 2, 2), SparsityPattern::parse("2:4"), f); }, bad, {"row 0, column 1"});
}

}  // namespace
}  // namespace slidesparse
