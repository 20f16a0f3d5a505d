// The GPU decoder (runtime/gpu_model.hpp) and its attention kernel against the CPU references:
// attention vs a float64 softmax, whole models vs the float32 CpuModel (tiny Llama and Qwen2
// configs plus one with real head size and GQA group), decode vs prefill, graph vs no graph,
// INT8 SlideSparse vs dense on the pruned weights (bit for bit), and the usage errors.
#include "slidesparse/runtime/gpu_model.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include <gtest/gtest.h>

#include "common/test_util.hpp"
#include "gpu/gpu_test_util.hpp"
#include "slidesparse/core/error.hpp"
#include "slidesparse/core/numeric.hpp"
#include "slidesparse/core/quantize.hpp"
#include "slidesparse/cuda/model_kernels.hpp"
#include "slidesparse/runtime/perplexity.hpp"

namespace slidesparse::runtime {
namespace {

using test::DeviceBuffer;

class GpuModelTest : public test::GpuTest {};

float round_bf16(float x) { return bf16_to_float(float_to_bf16(x)); }

// ---------------------------------------------------------------------------------------------
// Attention kernel
// ---------------------------------------------------------------------------------------------

struct AttentionCase {
  int heads, kv_heads, head_dim;
  std::vector<int> cached;  // tokens already in each sequence's cache
  std::vector<int> fresh;   // new tokens per sequence (this step)
  std::vector<int> slots = {};  // cache slot of each sequence (default: its index)
};

// Which implementation check_attention runs: the own kernel with `splits` key splits, or cuDNN.
struct AttentionImpl {
  bool cudnn = false;
  int splits = 1;
};

void check_attention(AttentionCase const& tc, std::uint64_t seed, AttentionImpl impl) {
  test::Rng rng(seed);
  int const splits = impl.splits;
  SCOPED_TRACE(rng.describe() + (impl.cudnn ? " cuDNN" : " splits " + std::to_string(splits)) + " heads " +
               std::to_string(tc.heads) + "/" + std::to_string(tc.kv_heads) + " d " + std::to_string(tc.head_dim));
  int const S = static_cast<int>(tc.fresh.size()), D = tc.head_dim, G = tc.heads / tc.kv_heads;
  int const q_dim = tc.heads * D, kv_dim = tc.kv_heads * D;
  auto slot_of = [&](int s) { return tc.slots.empty() ? s : tc.slots[static_cast<std::size_t>(s)]; };
  int capacity = 0, cache_slots = 0;
  for (int s = 0; s < S; ++s) {
    capacity = std::max(capacity, tc.cached[s] + tc.fresh[s]);
    cache_slots = std::max(cache_slots, slot_of(s) + 1);
  }
  capacity = (capacity + 63) / 64 * 64;  // as GpuModel lays out its cache (cuDNN pages it)
  // Cache values and queries: random BF16 (the kernel's inputs are BF16, so both sides see
  // the same numbers).
  auto random_bf16 = [&](std::size_t n, float scale) {
    std::vector<std::uint16_t> v(n);
    for (auto& x : v) x = float_to_bf16(rng.normal(scale)).bits;
    return v;
  };
  std::vector<std::uint16_t> const k_cache = random_bf16(static_cast<std::size_t>(cache_slots) * capacity * kv_dim, 1.0f);
  std::vector<std::uint16_t> const v_cache = random_bf16(static_cast<std::size_t>(cache_slots) * capacity * kv_dim, 1.0f);
  std::vector<int> token_pos, seg_slot, seg_start, seg_tokens, tile_seg, tile_row;
  int T = 0;
  for (int s = 0; s < S; ++s) {
    seg_slot.push_back(slot_of(s));
    seg_start.push_back(T);
    seg_tokens.push_back(tc.fresh[s]);
    for (int t = 0; t < tc.fresh[s]; ++t) token_pos.push_back(tc.cached[s] + t);
    for (int r = 0; r < tc.fresh[s] * G; r += cuda::kAttentionTileRows) {
      tile_seg.push_back(s);
      tile_row.push_back(r);
    }
    T += tc.fresh[s];
  }
  std::vector<std::uint16_t> const q = random_bf16(static_cast<std::size_t>(T) * q_dim, 1.0f);
  auto device_ints = [](std::vector<int> const& v) {
    DeviceBuffer b(std::max<std::size_t>(v.size(), 1) * sizeof(int));
    if (!v.empty()) {
      SLIDESPARSE_CUDA_CHECK(cudaMemcpy(b.get(), v.data(), v.size() * sizeof(int), cudaMemcpyHostToDevice));
    }
    return b;
  };
  DeviceBuffer dq(q.size() * 2), dk(k_cache.size() * 2), dv(v_cache.size() * 2), dout(q.size() * 2);
  dq.upload(q.data());
  dk.upload(k_cache.data());
  dv.upload(v_cache.data());
  dout.fill(0xFF);  // poison: NaN in BF16
  DeviceBuffer const dpos = device_ints(token_pos), dslot = device_ints(seg_slot), dstart = device_ints(seg_start),
                     dtok = device_ints(seg_tokens), dtseg = device_ints(tile_seg), dtrow = device_ints(tile_row);
  if (impl.cudnn) {
    // The plan arrays GpuModel uploads for cuDNN: cache lengths, query offsets, page table.
    cuda::CudnnAttention attention(tc.heads, tc.kv_heads, D, cache_slots, capacity, 1.0f / std::sqrt(static_cast<float>(D)));
    std::vector<int> seq_kv, q_off, pages;
    int max_tokens = 0;
    for (int s = 0; s < S; ++s) {
      seq_kv.push_back(tc.cached[s] + tc.fresh[s]);
      q_off.push_back(seg_start[s] * q_dim);
      max_tokens = std::max(max_tokens, tc.fresh[s]);
      for (std::int64_t j = 0; j < attention.pages_per_slot(); ++j) {
        pages.push_back(static_cast<int>(slot_of(s) * attention.pages_per_slot() + j));
      }
    }
    q_off.push_back(T * q_dim);
    DeviceBuffer const dkv = device_ints(seq_kv), doff = device_ints(q_off), dpages = device_ints(pages);
    cuda::CudnnAttentionArgs c;
    c.q = dq.get();
    c.out = dout.get();
    c.k_cache = dk.get();
    c.v_cache = dv.get();
    c.segments = S;
    c.max_segment_tokens = max_tokens;
    c.seq_len_q = dtok.as<int>();
    c.seq_len_kv = dkv.as<int>();
    c.q_offsets = doff.as<int>();
    c.page_table = dpages.as<int>();
    attention.run(c, nullptr);
    SLIDESPARSE_CUDA_CHECK(cudaDeviceSynchronize());
  } else {
    cuda::AttentionArgs a;
    a.q = dq.get();
    a.k_cache = dk.get();
    a.v_cache = dv.get();
    a.capacity = capacity;
    a.token_pos = dpos.as<int>();
    a.segment_slot = dslot.as<int>();
    a.segment_token_start = dstart.as<int>();
    a.segment_tokens = dtok.as<int>();
    a.tile_segment = dtseg.as<int>();
    a.tile_row_start = dtrow.as<int>();
    a.tiles = static_cast<int>(tile_seg.size());
    a.heads = tc.heads;
    a.kv_heads = tc.kv_heads;
    a.head_dim = D;
    a.scale = 1.0f / std::sqrt(static_cast<float>(D));
    a.out = dout.get();
    a.splits = splits;
    a.tokens = T;
    DeviceBuffer partial_o(static_cast<std::size_t>(splits) * T * q_dim * sizeof(float));
    DeviceBuffer partial_ml(static_cast<std::size_t>(splits) * T * tc.heads * sizeof(float2));
    a.partial_o = partial_o.as<float>();
    a.partial_ml = partial_ml.as<float2>();
    ASSERT_EQ(cuda::launch_attention(a, nullptr), cudaSuccess);
    SLIDESPARSE_CUDA_CHECK(cudaDeviceSynchronize());
  }
  std::vector<std::byte> const raw = dout.download();
  std::vector<std::uint16_t> out(q.size());
  std::memcpy(out.data(), raw.data(), raw.size());

  // float64 reference. Tolerance: the kernel rounds each probability to BF16 before P V
  // (relative 2^-9 each, so at most 2^-9 max|v| in total), normalizes by the unrounded sum
  // (2^-9 relative), and rounds the output to BF16 (2^-9 |o| <= 2^-9 max|v|): below
  // 3 * 2^-9 max|v|; 2^-7 max|v| leaves room for float32 accumulation and exp2f.
  int checked = 0;
  for (int s = 0; s < S; ++s) {
    for (int t = 0; t < tc.fresh[s]; ++t) {
      int const tok = seg_start[s] + t, pos = tc.cached[s] + t;
      for (int h = 0; h < tc.heads; ++h) {
        int const kvh = h / G;
        std::vector<double> score(static_cast<std::size_t>(pos + 1));
        double mx = -INFINITY;
        for (int p = 0; p <= pos; ++p) {
          double d = 0;
          for (int i = 0; i < D; ++i) {
            d += static_cast<double>(bf16_to_float(bf16_t{q[static_cast<std::size_t>(tok) * q_dim + h * D + i]})) *
                 bf16_to_float(bf16_t{k_cache[(static_cast<std::size_t>(slot_of(s)) * capacity + p) * kv_dim + kvh * D + i]});
          }
          score[static_cast<std::size_t>(p)] = d / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, score[static_cast<std::size_t>(p)]);
        }
        double total = 0;
        for (double& x : score) total += (x = std::exp(x - mx));
        for (int i = 0; i < D; ++i) {
          double o = 0, vmax = 0;
          for (int p = 0; p <= pos; ++p) {
            double const v =
                bf16_to_float(bf16_t{v_cache[(static_cast<std::size_t>(slot_of(s)) * capacity + p) * kv_dim + kvh * D + i]});
            o += score[static_cast<std::size_t>(p)] / total * v;
            vmax = std::max(vmax, std::abs(v));
          }
          float const got = bf16_to_float(bf16_t{out[static_cast<std::size_t>(tok) * q_dim + h * D + i]});
          ASSERT_NEAR(got, o, std::ldexp(vmax, -7) + 1e-6)
              << "sequence " << s << " token " << t << " (position " << pos << ") head " << h << " dim " << i;
          ++checked;
        }
      }
    }
  }
  EXPECT_EQ(checked, T * q_dim);
}

TEST_F(GpuModelTest, AttentionMatchesFloat64Reference) {
  // Awkward sizes: single tokens, a prompt of 1, prompts crossing 64-row tiles and 64-key
  // blocks, continuation after a cache, head_dim 8 (padded to 16), 64 and 128, GQA groups 1,
  // 4 and 7 (7 * 17 rows cross tile boundaries mid-token).
  // Split-KV (the decode path) with more splits than some sequences have key blocks.
  for (int splits : {1, 3}) {
    check_attention({2, 2, 8, {0, 3}, {1, 17}}, 101, {false, splits});
    check_attention({8, 2, 64, {0, 0, 70}, {7, 130, 1}}, 102, {false, splits});
    check_attention({14, 2, 128, {0, 100, 5}, {17, 1, 66}, {2, 0, 1}}, 103, {false, splits});
    check_attention({4, 4, 128, {200}, {1}}, 104, {false, splits});
  }
  check_attention({28, 4, 128, {500, 3, 64}, {1, 1, 1}}, 105, {false, 8});
}

TEST_F(GpuModelTest, CudnnAttentionMatchesFloat64Reference) {
  // cuDNN's fused attention on the decoder's paged view of the cache, the same reference and
  // tolerance (it too rounds the probabilities to BF16 before P V and accumulates in float32).
  // Prompts from 1 to 300 tokens, continuations after a cache (bottom-right causal alignment),
  // sequences in other slots than their index (page table), head_dim 64 and 128, GQA 1/4/7,
  // query buckets of 64 and 512.
  if (std::string const why = cuda::CudnnAttention::unsupported(28, 4, 128, 64); !why.empty()) {
    GTEST_SKIP() << "cuDNN attention cannot run here: " << why;
  }
  check_attention({8, 2, 64, {0, 0, 70}, {7, 130, 1}}, 111, {true});
  check_attention({14, 2, 128, {0, 100, 5}, {17, 1, 66}, {2, 0, 1}}, 112, {true});
  check_attention({4, 4, 128, {200, 0}, {64, 300}, {1, 0}}, 113, {true});
  check_attention({28, 4, 128, {0, 37}, {65, 9}}, 114, {true});
}

// ---------------------------------------------------------------------------------------------
// Whole models
// ---------------------------------------------------------------------------------------------

ModelConfig mid_config() {
  // Real head size and Qwen2.5-7B's GQA group (28 / 4 = 7), small everything else.
  ModelConfig c = ModelConfig::preset("tiny-qwen2");
  c.name = "mid-qwen2";
  c.hidden = 256;
  c.intermediate = 384;
  c.heads = 14;
  c.kv_heads = 2;
  c.head_dim = 128;
  c.vocab = 300;
  c.max_position = 512;
  c.validate();
  return c;
}

std::vector<CpuLinear*> projections(ModelWeights& w) {
  std::vector<CpuLinear*> out;
  for (LayerWeights& L : w.layers) {
    for (CpuLinear* lin : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) out.push_back(lin);
  }
  return out;
}

// Makes the CPU model's weights equal the GPU model's: the embeddings and lm_head as BF16
// values, the projections as BF16 values (BF16 compute) or quantized and dequantized per
// channel (W8A8: the GPU requantizes the dequantized weight to the same codes).
void match_gpu_weights(ModelWeights& w, DType compute) {
  for (float& x : w.embed) x = round_bf16(x);
  for (float& x : w.lm_head.weight()) x = round_bf16(x);
  for (CpuLinear* lin : projections(w)) {
    std::vector<float>& wt = lin->weight();
    if (compute == DType::kBF16) {
      for (float& x : wt) x = round_bf16(x);
      continue;
    }
    std::int64_t const n = lin->n(), k = lin->k();
    std::vector<std::byte> codes(static_cast<std::size_t>(n * k) * dtype_size(compute));
    std::vector<float> scales(static_cast<std::size_t>(n));
    ConstMatrixView const src{DType::kF32, n, k, reinterpret_cast<std::byte const*>(wt.data()), "w"};
    quantize_weight_per_channel(src, MatrixView{compute, n, k, codes.data(), "w"}, scales);
    dequantize_weight_per_channel(ConstMatrixView{compute, n, k, codes.data(), "w"}, scales,
                                  MatrixView{DType::kF32, n, k, reinterpret_cast<std::byte*>(wt.data()), "w"});
  }
}

std::vector<int> random_tokens(test::Rng& rng, int count, std::int64_t vocab) {
  std::vector<int> t(static_cast<std::size_t>(count));
  for (int& x : t) x = rng.uniform_int(0, static_cast<int>(vocab) - 1);
  return t;
}

// Largest |gpu - cpu| over a row, relative to the row's largest |cpu| logit.
double row_error(float const* gpu, float const* cpu, std::int64_t vocab) {
  double diff = 0, scale = 0;
  for (std::int64_t i = 0; i < vocab; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(gpu[i]) - cpu[i]));
    scale = std::max(scale, std::abs(static_cast<double>(cpu[i])));
  }
  return diff / scale;
}

struct ModelCase {
  ModelConfig config;
  DType compute;
  double tolerance;  // largest row_error allowed (justified at the call)
  AttentionBackend attention = AttentionBackend::kAuto;
};

// Two forward steps over three sequences of different lengths (the second continues two of
// them and starts the third), every token's logits against the CPU model fed the same way.
void check_against_cpu(ModelCase const& mc, std::uint64_t seed) {
  test::Rng rng(seed);
  SCOPED_TRACE(rng.describe() + " " + mc.config.name + " " + std::string(dtype_name(mc.compute)));
  ModelWeights w = ModelWeights::random(mc.config, seed);
  match_gpu_weights(w, mc.compute);
  GpuModelOptions options;
  options.compute_dtype = mc.compute;
  options.attention = mc.attention;
  GpuModel gpu(w, options);
  CpuModel cpu(std::move(w));
  gpu.reserve(3, 160, 160);
  std::cout << "[ info ] attention: " << gpu.describe_attention() << "\n";
  std::vector<Sequence> seqs = {cpu.new_sequence(160), cpu.new_sequence(160), cpu.new_sequence(160)};
  std::vector<std::vector<std::vector<int>>> const steps = {
      {random_tokens(rng, 5, mc.config.vocab), random_tokens(rng, 70, mc.config.vocab), {}},
      {random_tokens(rng, 1, mc.config.vocab), random_tokens(rng, 9, mc.config.vocab), random_tokens(rng, 17, mc.config.vocab)}};
  std::int64_t const V = mc.config.vocab;
  double worst = 0;
  for (std::size_t k = 0; k < steps.size(); ++k) {
    std::vector<SequenceStep> batch;
    for (std::size_t s = 0; s < 3; ++s) batch.push_back({static_cast<std::int64_t>(s), steps[k][s]});
    std::int64_t const rows = gpu.forward(batch, true);
    std::vector<float> const logits = gpu.logits();
    ASSERT_EQ(static_cast<std::int64_t>(logits.size()), rows * V);
    std::int64_t row = 0;
    for (std::size_t s = 0; s < 3; ++s) {
      if (steps[k][s].empty()) continue;
      std::vector<float> const ref = cpu.forward(seqs[s], steps[k][s], true);
      for (std::size_t t = 0; t < steps[k][s].size(); ++t, ++row) {
        double const e = row_error(logits.data() + row * V, ref.data() + t * static_cast<std::size_t>(V), V);
        worst = std::max(worst, e);
        ASSERT_LE(e, mc.tolerance) << "step " << k << " sequence " << s << " token " << t;
      }
    }
    ASSERT_EQ(row, rows);
  }
  std::cout << "[ info ] " << mc.config.name << " " << dtype_name(mc.compute) << ": largest logit error " << worst
            << " of the row's largest logit\n";
}

// Tolerances. BF16 compute: the GPU rounds every GEMM input and output to BF16 (relative
// 2^-9 each), about ten roundings per layer feed the residual stream; with two layers and the
// lm_head the worst case stays below 2 %, typical errors are a few 0.1 %. W8A8: each activation
// row is quantized per token, INT8 to 1/254 of its absmax (an error comparable to ~2^-8
// relative on the largest elements), FP8 E4M3 to 2^-4 relative per element; the CPU
// reference keeps activations in float32, so the error grows to several percent (FP8).
TEST_F(GpuModelTest, Bf16MatchesCpuModel) {
  check_against_cpu({ModelConfig::preset("tiny-llama"), DType::kBF16, 0.02}, 201);
  check_against_cpu({ModelConfig::preset("tiny-qwen2"), DType::kBF16, 0.02}, 202);
  check_against_cpu({mid_config(), DType::kBF16, 0.02}, 203);
}

TEST_F(GpuModelTest, EitherAttentionMatchesCpuModel) {
  // The same BF16 bound with each attention implementation forced for every forward step
  // (kAuto above mixes them: cuDNN for the 70-token step, the own kernel for the other).
  check_against_cpu({mid_config(), DType::kBF16, 0.02, AttentionBackend::kOwn}, 204);
  check_against_cpu({ModelConfig::preset("tiny-llama"), DType::kBF16, 0.02, AttentionBackend::kOwn}, 205);
  if (std::string const why = cuda::CudnnAttention::unsupported(14, 2, 128, 192); !why.empty()) {
    GTEST_SKIP() << "cuDNN attention cannot run here: " << why;
  }
  check_against_cpu({mid_config(), DType::kBF16, 0.02, AttentionBackend::kCudnn}, 206);
  check_against_cpu({ModelConfig::preset("tiny-llama"), DType::kBF16, 0.02, AttentionBackend::kCudnn}, 207);
}

TEST_F(GpuModelTest, W8A8MatchesCpuModel) {
  check_against_cpu({mid_config(), DType::kI8, 0.05}, 211);
  check_against_cpu({ModelConfig::preset("tiny-llama"), DType::kI8, 0.05}, 212);
  check_against_cpu({mid_config(), DType::kF8E4M3, 0.25}, 213);
}

TEST_F(GpuModelTest, DecodeMatchesPrefill) {
  // Token t decoded alone (M = 1) equals the prefill's logits at position t up to the GEMM's
  // M-dependent algorithm choice (same BF16 tolerance argument as above).
  ModelConfig const c = mid_config();
  test::Rng rng(301);
  SCOPED_TRACE(rng.describe());
  ModelWeights const w = ModelWeights::random(c, 301);
  GpuModel gpu(w, {});
  gpu.reserve(2, 64, 64);
  std::vector<int> const prompt = random_tokens(rng, 40, c.vocab);
  SequenceStep const whole{0, prompt};
  gpu.forward(std::span(&whole, 1), true);
  std::vector<float> const prefill = gpu.logits();
  for (std::size_t t = 0; t < prompt.size(); ++t) {
    SequenceStep const one{1, std::span(prompt).subspan(t, 1)};
    ASSERT_EQ(gpu.forward(std::span(&one, 1), false), 1);
    std::vector<float> const step = gpu.logits();
    ASSERT_LE(row_error(step.data(), prefill.data() + t * static_cast<std::size_t>(c.vocab), c.vocab), 0.02) << "token " << t;
  }
  EXPECT_EQ(gpu.tokens(1), prompt);
  EXPECT_EQ(gpu.tokens(0), prompt);
}

TEST_F(GpuModelTest, GreedyDecodeWithGraphEqualsStepByStep) {
  // Graph replay runs the same kernels on the same data as host-driven steps: the generated
  // tokens and the final logits must be identical, for a batch of sequences at different
  // lengths.
  ModelConfig const c = mid_config();
  test::Rng rng(302);
  SCOPED_TRACE(rng.describe());
  ModelWeights const w = ModelWeights::random(c, 302);
  GpuModelOptions options;
  options.compute_dtype = DType::kI8;
  GpuModel gpu(w, options);
  std::int64_t const B = 3, steps = 12;
  gpu.reserve(2 * B, 96, 96);
  std::vector<std::vector<int>> prompts;
  for (int s = 0; s < B; ++s) prompts.push_back(random_tokens(rng, 3 + 11 * s, c.vocab));
  // Slots 0..B-1 decode with the graph; slots B..2B-1 are driven step by step from the host.
  std::vector<SequenceStep> batch;
  for (std::int64_t s = 0; s < B; ++s) batch.push_back({s, prompts[static_cast<std::size_t>(s)]});
  gpu.forward(batch, false);
  gpu.decode_greedy(B, steps, true);
  std::vector<float> const graph_logits = gpu.logits();
  // Host-driven: the same prompts in slots B.., then one token per step from next_token().
  batch.clear();
  for (std::int64_t s = 0; s < B; ++s) batch.push_back({B + s, prompts[static_cast<std::size_t>(s)]});
  gpu.forward(batch, false);
  for (std::int64_t i = 0; i < steps; ++i) {
    std::vector<std::vector<int>> next(B);
    std::vector<SequenceStep> step;
    for (std::int64_t s = 0; s < B; ++s) {
      next[static_cast<std::size_t>(s)] = {gpu.next_token(B + s)};
      step.push_back({B + s, next[static_cast<std::size_t>(s)]});
    }
    gpu.forward(step, false);
  }
  std::vector<float> const host_logits = gpu.logits();
  for (std::int64_t s = 0; s < B; ++s) {
    EXPECT_EQ(gpu.tokens(s), gpu.tokens(B + s)) << "sequence " << s;
    EXPECT_EQ(gpu.next_token(s), gpu.next_token(B + s)) << "sequence " << s;
    EXPECT_EQ(gpu.length(s), static_cast<std::int64_t>(prompts[static_cast<std::size_t>(s)].size()) + steps);
  }
  EXPECT_EQ(graph_logits, host_logits);
  // And without the graph.
  for (std::int64_t s = 0; s < B; ++s) gpu.reset(s);
  batch.clear();
  for (std::int64_t s = 0; s < B; ++s) batch.push_back({s, prompts[static_cast<std::size_t>(s)]});
  gpu.forward(batch, false);
  gpu.decode_greedy(B, steps, false);
  EXPECT_EQ(gpu.logits(), host_logits);
}

TEST_F(GpuModelTest, Int8SlideSparseEqualsDenseOnPrunedWeights) {
  // INT8 SlideSparse linears are bit-identical to dense ones on the pruned weight, and the rest
  // of the model runs the same kernels: the logits must be equal to the last bit, for every
  // token of a batch.
  for (char const* name : {"6:8", "4:6", "2:4"}) {
    SparsityPattern const pattern = SparsityPattern::parse(name);
    ModelConfig const c = mid_config();
    test::Rng rng(401);
    SCOPED_TRACE(rng.describe() + " pattern " + name);
    ModelWeights w = ModelWeights::random(c, 401);
    prune_model(w, pattern);
    GpuModelOptions dense;
    dense.compute_dtype = DType::kI8;
    GpuModelOptions sparse = dense;
    sparse.pattern = pattern;
    GpuModel a(w, dense), b(w, sparse);
    std::vector<int> const p0 = random_tokens(rng, 33, c.vocab), p1 = random_tokens(rng, 4, c.vocab);
    std::vector<SequenceStep> const batch = {{0, p0}, {1, p1}};
    a.reserve(2, 64, 64);
    b.reserve(2, 64, 64);
    a.forward(batch, true);
    b.forward(batch, true);
    std::vector<float> const la = a.logits(), lb = b.logits();
    ASSERT_EQ(la.size(), lb.size());
    std::size_t differing = 0;
    for (std::size_t i = 0; i < la.size(); ++i) differing += std::memcmp(&la[i], &lb[i], sizeof(float)) != 0;
    EXPECT_EQ(differing, 0u) << "of " << la.size() << " logits";
  }
}

TEST_F(GpuModelTest, DenseFallbackGivesTheSameLogitsAndHoldsTheDenseCopy) {
  // With dense_fallback every projection chooses per M bucket between the SlideSparse backends
  // and a dense copy of the pruned weight. In INT8 all of them compute the same integers, so the
  // logits of prefill and of graph-captured decode steps must equal the plain SlideSparse
  // model's to the last bit, whichever candidate each bucket picked (printed).
  ModelConfig const c = mid_config();
  test::Rng rng(433);
  SCOPED_TRACE(rng.describe());
  SparsityPattern const pattern = SparsityPattern::parse("6:8");
  ModelWeights w = ModelWeights::random(c, 433);
  prune_model(w, pattern);
  GpuModelOptions plain;
  plain.compute_dtype = DType::kI8;
  plain.pattern = pattern;
  GpuModelOptions fallback = plain;
  fallback.dense_fallback = true;
  GpuModel a(w, plain), b(w, fallback);
  EXPECT_GT(b.memory().weights, a.memory().weights);  // the dense copies (and a second sparse one)
  {
    // On one sparse backend the option adds exactly the dense copies: at least N x K bytes of
    // INT8 per projection (more where the backend pads N or K).
    GpuModelOptions plain_lib = plain, fallback_lib = fallback;
    plain_lib.backend = fallback_lib.backend = cuda::GemmBackend::kLibrary;
    std::int64_t const q = c.heads * c.head_dim, kv = c.kv_heads * c.head_dim;
    std::int64_t const dense_bytes =
        c.layers * ((q + 2 * kv) * c.hidden + c.hidden * q + 2 * c.intermediate * c.hidden + c.hidden * c.intermediate);
    std::size_t const extra = GpuModel(w, fallback_lib).memory().weights - GpuModel(w, plain_lib).memory().weights;
    EXPECT_GE(extra, static_cast<std::size_t>(dense_bytes));
    EXPECT_LE(extra, static_cast<std::size_t>(dense_bytes) * 3 / 2);
  }
  std::vector<int> const p0 = random_tokens(rng, 45, c.vocab), p1 = random_tokens(rng, 6, c.vocab);
  std::vector<SequenceStep> const batch = {{0, p0}, {1, p1}};
  for (GpuModel* m : {&a, &b}) {
    m->reserve(2, 64, 64);
    m->forward(batch, true);
  }
  EXPECT_EQ(a.logits(), b.logits());
  std::string const prefill = b.describe_gemms(51);
  EXPECT_NE(prefill.find("dispatch -> "), std::string::npos) << prefill;
  EXPECT_EQ(prefill.find("not prepared"), std::string::npos) << prefill;
  for (GpuModel* m : {&a, &b}) {  // decode follows a step without all_logits
    m->reset(0);
    m->reset(1);
    m->forward(batch, false);
    m->decode_greedy(2, 4, true);
  }
  EXPECT_EQ(a.logits(), b.logits());
  EXPECT_EQ(a.tokens(0), b.tokens(0));
  std::cout << "[ info ] dense fallback, prefill M = 51: " << prefill << "\n";
  std::cout << "[ info ] dense fallback, decode M = 2: " << b.describe_gemms(2) << "\n";
  // The memory policy: release_unchosen keeps, per projection, only what the buckets of M up to
  // 64 chose (which ones is up to the timing: printed); the logits stay the plain model's, and a
  // second release finds nothing left to free.
  std::size_t const before = b.memory().weights;
  std::size_t const freed = b.release_unchosen(64);
  std::size_t const after = b.memory().weights;
  EXPECT_LE(after, before);
  EXPECT_GE(freed, before - after);  // freed also counts the released candidates' plan workspaces
  EXPECT_EQ(b.release_unchosen(64), 0u);
  EXPECT_EQ(b.memory().weights, after);
  auto expect_same_as_plain = [&] {
    for (GpuModel* m : {&a, &b}) {
      m->reset(0);
      m->reset(1);
      m->forward(batch, false);
      m->decode_greedy(2, 4, true);
    }
    EXPECT_EQ(a.logits(), b.logits());
    EXPECT_EQ(a.tokens(1), b.tokens(1));
  };
  expect_same_as_plain();
  std::cout << "[ info ] dense fallback, release_unchosen(64): weights " << before << " -> " << after << " bytes (" << freed
            << " freed with workspaces); prefill M = 51: " << b.describe_gemms(51) << "\n";
  EXPECT_THROW(b.release_unchosen(0), Error);
  // What stayed, per projection role: every dispatching projection is counted once, and holds
  // at least one candidate; the plain model dispatches nothing.
  int holders = 0;
  for (auto const& [held, count] : b.dispatch_holdings()) {
    std::cout << "[ info ] dense fallback holds " << count << " x " << held << "\n";
    EXPECT_NE(held.find(": "), std::string::npos) << held;
    EXPECT_NE(held.back(), ' ') << held;
    holders += count;
  }
  EXPECT_GE(holders, 4 * b.config().layers);
  EXPECT_LE(holders, 4 * b.config().layers + 1);  // + the lm_head where it dispatches
  EXPECT_TRUE(a.dispatch_holdings().empty());
  // Trading up to 50 % of a bucket's time for memory: holds no more, computes the same.
  b.release_unchosen(64, 0.5);
  EXPECT_LE(b.memory().weights, after);
  expect_same_as_plain();
  std::cout << "[ info ] dense fallback, release_unchosen(64, 0.5): weights " << b.memory().weights << " bytes\n";
  // A dense INT8 model with the option chooses among its dense forms on one weight copy: the
  // same memory and the same integers as the plain dense model, where CUTLASS can run (else
  // there is one dense form and nothing to choose).
  GpuModelOptions dense_plain;
  dense_plain.compute_dtype = DType::kI8;
  GpuModelOptions dense_choice = dense_plain;
  dense_choice.dense_fallback = true;
  GpuModel d(w, dense_plain), e(w, dense_choice);
  EXPECT_EQ(e.memory().weights, d.memory().weights);
  for (GpuModel* m : {&d, &e}) {
    m->reserve(2, 64, 64);
    m->forward(batch, true);
  }
  EXPECT_EQ(d.logits(), e.logits());
  std::string const dense_gemms = e.describe_gemms(51);
  EXPECT_EQ(d.describe_gemms(51).find("dispatch"), std::string::npos);
  EXPECT_NE(dense_gemms.find("dispatch -> dense"), std::string::npos) << dense_gemms;
  EXPECT_EQ(dense_gemms.find("dispatch -> cutlass"), std::string::npos) << dense_gemms;
  std::cout << "[ info ] dense model choosing its dense form, M = 51: " << dense_gemms << "\n";
  // Dense BF16 has one dense form: no dispatch.
  GpuModelOptions bf16_choice;
  bf16_choice.dense_fallback = true;
  EXPECT_EQ(GpuModel(w, bf16_choice).describe_gemms(16).find("dispatch"), std::string::npos);
}

TEST_F(GpuModelTest, PerplexityMatchesTheCpuModel) {
  // The same windowing over the GPU's logits. Each token's NLL changes by at most
  // 2 max|delta logit| (log-softmax is 1-Lipschitz in each argument, twice for the target);
  // the BF16 bound above gives max|delta logit| <= 0.02 max|logit|.
  ModelConfig const c = mid_config();
  ModelWeights w = ModelWeights::random(c, 501);
  match_gpu_weights(w, DType::kBF16);
  GpuModel gpu(w, {});
  CpuModel const cpu(std::move(w));
  test::Rng rng(501);
  SCOPED_TRACE(rng.describe());
  std::vector<int> const tokens = random_tokens(rng, 150, c.vocab);
  PerplexityOptions const options{64, 32};
  gpu.reserve(1, options.context, options.context);
  PerplexityResult const on_cpu = perplexity(cpu, tokens, options);
  PerplexityResult const on_gpu = perplexity([&](std::span<int const> t) { return gpu.sequence_logits(t); }, c.vocab, tokens, options);
  ASSERT_EQ(on_gpu.scored, on_cpu.scored);
  Sequence seq = cpu.new_sequence(static_cast<std::int64_t>(tokens.size()));
  std::vector<float> const all = cpu.forward(seq, tokens, true);
  float max_logit = 0;
  for (float x : all) max_logit = std::max(max_logit, std::abs(x));
  double const mean_nll_cpu = on_cpu.nll_sum / static_cast<double>(on_cpu.scored);
  double const mean_nll_gpu = on_gpu.nll_sum / static_cast<double>(on_gpu.scored);
  EXPECT_LE(std::abs(mean_nll_gpu - mean_nll_cpu), 2 * 0.02 * max_logit) << "max |logit| " << max_logit;
  EXPECT_GT(on_gpu.perplexity(), 1.0);
  std::cout << "[ info ] perplexity CPU " << on_cpu.perplexity() << " GPU " << on_gpu.perplexity() << "\n";
}

TEST_F(GpuModelTest, UsageErrorsNameTheProblem) {
  ModelConfig const c = ModelConfig::preset("tiny-llama");
  GpuModel gpu(ModelWeights::random(c, 5), {});
  auto expect_error = [](auto&& f, std::string const& needle) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
    } catch (Error const& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  std::vector<int> const ok = {1, 2, 3};
  expect_error([&] { gpu.forward(std::vector<SequenceStep>{{0, ok}}, true); }, "reserve");
  gpu.reserve(2, 8, 6);
  std::vector<int> const bad = {1, 2, static_cast<int>(c.vocab)};
  expect_error([&] { gpu.forward(std::vector<SequenceStep>{{1, bad}}, true); }, "position 2 of slot 1");
  expect_error([&] { gpu.forward(std::vector<SequenceStep>{{0, ok}, {0, ok}}, true); }, "slot 0 appears twice");
  expect_error([&] { gpu.forward(std::vector<SequenceStep>{{2, ok}}, true); }, "slot 2 outside");
  std::vector<int> const seven(7, 1);
  expect_error([&] { gpu.forward(std::vector<SequenceStep>{{0, seven}}, true); }, "max_tokens 6");
  gpu.forward(std::vector<SequenceStep>{{0, ok}, {1, ok}}, false);
  gpu.forward(std::vector<SequenceStep>{{0, ok}}, false);
  expect_error([&] { gpu.forward(std::vector<SequenceStep>{{0, ok}}, true); }, "exceed its capacity 8");
  expect_error([&] { gpu.decode_greedy(2, 3, true); }, "slot 0 holds 6 tokens; 3 decode steps");
  gpu.forward(std::vector<SequenceStep>{{1, ok}}, true);  // all logits: no next token
  expect_error([&] { gpu.decode_greedy(2, 1, true); }, "slot 1 has no next token");
  ModelConfig odd = c;
  odd.head_dim = 12;  // not a multiple of 8
  odd.heads = 4;
  odd.kv_heads = 2;
  expect_error([&] { GpuModel m(ModelWeights::random(odd, 6), {}); }, "head_dim 12");
}

}  // namespace
}  // namespace slidesparse::runtime
