#include "slidesparse/cuda/cudnn_attention.hpp"

#include <algorithm>
#include <list>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "slidesparse/core/error.hpp"
#include "slidesparse/cuda/check.hpp"
#include "slidesparse/cuda/device_buffer.hpp"

#if SLIDESPARSE_HAVE_CUDNN
// The frontend's optional JSON serialization would bring a second copy of nlohmann::json (the
// project uses the system one); graphs are never serialized here.
#define CUDNN_FRONTEND_SKIP_JSON_LIB
#include <cudnn_frontend.h>
#endif

namespace slidesparse::cuda {

std::int64_t CudnnAttention::query_bucket(std::int64_t max_segment_tokens) {
  std::int64_t s = 64;
  while (s < max_segment_tokens) s *= 2;
  return s;
}

#if SLIDESPARSE_HAVE_CUDNN

namespace fe = cudnn_frontend;

namespace {

// Tensor uids of the graph's variant pack.
enum Uid : std::int64_t {
  kQ = 1,
  kK,
  kV,
  kO,
  kSeqLenQ,
  kSeqLenKv,
  kPageTableK,
  kPageTableV,
  kQOffsets,
  kOOffsets,
};

// ragged queries over paged K/V caches (the frontend's own sample asks for 9.8).
constexpr std::size_t kMinCudnnVersion = 90800;

std::int64_t block_rows(std::int64_t capacity) {
  for (std::int64_t b = 128; b >= 8; b /= 2) {
    if (capacity % b == 0) return b;
  }
  return 0;
}

}  // namespace

struct CudnnAttention::Impl {
  cudnnHandle_t handle = nullptr;
  struct Entry {
    std::int64_t segments, bucket;
    std::shared_ptr<fe::graph::Graph> graph;
  };
  std::list<Entry> graphs;  // most recently used first
  DeviceBuffer workspace;
  static constexpr std::size_t kMaxGraphs = 16;
};

std::string CudnnAttention::version() { return fmt::format("cudnn-{}", cudnnGetVersion()); }

std::string CudnnAttention::unsupported(int heads, int kv_heads, int head_dim, std::int64_t capacity) {
  std::size_t const v = cudnnGetVersion();
  if (v < kMinCudnnVersion) {
    return fmt::format("the loaded cuDNN is {} (ragged queries over paged KV caches need 9.8.0 or newer)", v);
  }
  if (head_dim <= 0 || head_dim % 8 != 0 || head_dim > 128) {
    return fmt::format("head_dim {} is not a multiple of 8 up to 128", head_dim);
  }
  if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0) {
    return fmt::format("{} query heads are not a multiple of {} KV heads", heads, kv_heads);
  }
  if (block_rows(capacity) == 0) return fmt::format("cache capacity {} is not a multiple of 8 rows", capacity);
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    cudaGetLastError();
    return "no usable CUDA device";
  }
  if (major < 8) return fmt::format("cuDNN's fused attention needs sm_80 or newer (this GPU: sm_{}x)", major);
  return {};
}

CudnnAttention::CudnnAttention(int heads, int kv_heads, int head_dim, std::int64_t slots, std::int64_t capacity,
                               float scale)
    : heads_(heads), kv_heads_(kv_heads), head_dim_(head_dim), slots_(slots), capacity_(capacity),
      block_(block_rows(capacity)), scale_(scale), impl_(std::make_unique<Impl>()) {
  if (std::string const why = unsupported(heads, kv_heads, head_dim, capacity); !why.empty()) {
    fail(ErrorKind::kUsage, "cuDNN attention ({} heads, {} KV heads, head_dim {}): {}", heads, kv_heads, head_dim, why);
  }
  if (cudnnStatus_t const s = cudnnCreate(&impl_->handle); s != CUDNN_STATUS_SUCCESS) {
    fail(ErrorKind::kInternal, "cudnnCreate failed: {}", cudnnGetErrorString(s));
  }
}

CudnnAttention::~CudnnAttention() {
  if (impl_ && impl_->handle) cudnnDestroy(impl_->handle);
}

std::size_t CudnnAttention::device_bytes() const noexcept { return impl_->workspace.size(); }

void CudnnAttention::run(CudnnAttentionArgs const& a, cudaStream_t stream) {
  if (a.segments <= 0 || a.max_segment_tokens <= 0 || !a.q || !a.out || !a.k_cache || !a.v_cache || !a.seq_len_q ||
      !a.seq_len_kv || !a.q_offsets || !a.page_table) {
    fail(ErrorKind::kUsage, "cuDNN attention: {} segments of up to {} tokens, or a null pointer", a.segments,
         a.max_segment_tokens);
  }
  std::int64_t const B = a.segments, S = query_bucket(a.max_segment_tokens);
  std::int64_t const H = heads_, Hk = kv_heads_, D = head_dim_, pages = capacity_ / block_;
  auto it = std::find_if(impl_->graphs.begin(), impl_->graphs.end(),
                         [&](Impl::Entry const& e) { return e.segments == B && e.bucket == S; });
  if (it != impl_->graphs.end()) {
    impl_->graphs.splice(impl_->graphs.begin(), impl_->graphs, it);
  } else {
    auto graph = std::make_shared<fe::graph::Graph>();
    graph->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    auto int_vector = [&](char const* name, Uid uid, std::int64_t n, std::int64_t per_row = 1) {
      return graph->tensor(fe::graph::Tensor_attributes()
                               .set_name(name)
                               .set_uid(uid)
                               .set_data_type(fe::DataType_t::INT32)
                               .set_dim({n, 1, per_row, 1})
                               .set_stride({per_row, per_row, 1, 1}));
    };
    auto q_offsets = int_vector("q_offsets", kQOffsets, B + 1);
    auto o_offsets = int_vector("o_offsets", kOOffsets, B + 1);
    // Q and O: [B, H, S, D] in the packed token-major layout (token stride H * D), placed by offsets.
    auto Q = graph->tensor(fe::graph::Tensor_attributes()
                               .set_name("Q")
                               .set_uid(kQ)
                               .set_dim({B, H, S, D})
                               .set_stride({S * H * D, D, H * D, 1})
                               .set_ragged_offset(q_offsets));
    // K and V: the cache as pages of `block_` rows: [slots * pages, Hk, block, D].
    auto cache = [&](char const* name, Uid uid) {
      return graph->tensor(fe::graph::Tensor_attributes()
                               .set_name(name)
                               .set_uid(uid)
                               .set_dim({slots_ * pages, Hk, block_, D})
                               .set_stride({block_ * Hk * D, D, Hk * D, 1}));
    };
    auto K = cache("K", kK);
    auto V = cache("V", kV);
    auto seq_q = int_vector("seq_len_q", kSeqLenQ, B);
    auto seq_kv = int_vector("seq_len_kv", kSeqLenKv, B);
    auto table_k = int_vector("page_table_k", kPageTableK, B, pages);
    auto table_v = int_vector("page_table_v", kPageTableV, B, pages);
    auto options = fe::graph::SDPA_attributes()
                       .set_name("prefill_attention")
                       .set_generate_stats(false)
                       .set_attn_scale(scale_)
                       .set_causal_mask_bottom_right(true)
                       .set_padding_mask(true)
                       .set_seq_len_q(seq_q)
                       .set_seq_len_kv(seq_kv)
                       .set_paged_attention_k_table(table_k)
                       .set_paged_attention_v_table(table_v)
                       .set_paged_attention_max_seq_len_kv(static_cast<int>(capacity_));
    auto [O, stats] = graph->sdpa(Q, K, V, options);
    (void)stats;
    O->set_output(true).set_uid(kO).set_dim({B, H, S, D}).set_stride({S * H * D, D, H * D, 1}).set_ragged_offset(o_offsets);
    if (auto status = graph->build(impl_->handle, {fe::HeurMode_t::A}); !status.is_good()) {
      fail(ErrorKind::kInternal, "cuDNN attention graph (B = {}, S_q = {}, heads {}/{}, head_dim {}, pages of {}): {}", B,
           S, H, Hk, D, block_, status.get_message());
    }
    std::int64_t workspace = 0;
    if (auto status = graph->get_workspace_size(workspace); !status.is_good()) {
      fail(ErrorKind::kInternal, "cuDNN attention workspace query: {}", status.get_message());
    }
    if (static_cast<std::size_t>(workspace) > impl_->workspace.size()) {
      SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream));  // the old workspace may be in use
      impl_->workspace.allocate(static_cast<std::size_t>(workspace));
    }
    if (impl_->graphs.size() >= Impl::kMaxGraphs) impl_->graphs.pop_back();
    impl_->graphs.push_front({B, S, std::move(graph)});
  }
  std::unordered_map<std::int64_t, void*> pack = {
      {kQ, const_cast<void*>(a.q)},
      {kK, const_cast<void*>(a.k_cache)},
      {kV, const_cast<void*>(a.v_cache)},
      {kO, a.out},
      {kSeqLenQ, const_cast<int*>(a.seq_len_q)},
      {kSeqLenKv, const_cast<int*>(a.seq_len_kv)},
      {kPageTableK, const_cast<int*>(a.page_table)},
      {kPageTableV, const_cast<int*>(a.page_table)},
      {kQOffsets, const_cast<int*>(a.q_offsets)},
      {kOOffsets, const_cast<int*>(a.q_offsets)},
  };
  if (cudnnStatus_t const s = cudnnSetStream(impl_->handle, stream); s != CUDNN_STATUS_SUCCESS) {
    fail(ErrorKind::kInternal, "cudnnSetStream failed: {}", cudnnGetErrorString(s));
  }
  if (auto status = impl_->graphs.front().graph->execute(impl_->handle, pack, impl_->workspace.get());
      !status.is_good()) {
    fail(ErrorKind::kInternal, "cuDNN attention (B = {}, S_q = {}): {}", B, S, status.get_message());
  }
}

#else  // built without cuDNN: every entry point says so

struct CudnnAttention::Impl {};

std::string CudnnAttention::version() { return "cudnn-none"; }

std::string CudnnAttention::unsupported(int, int, int, std::int64_t) {
  return "this build has no cuDNN (no cudnn.h, cuDNN library or cuDNN frontend headers at configure time)";
}

CudnnAttention::CudnnAttention(int heads, int kv_heads, int head_dim, std::int64_t slots, std::int64_t capacity,
                               float scale)
    : heads_(heads), kv_heads_(kv_heads), head_dim_(head_dim), slots_(slots), capacity_(capacity), block_(0),
      scale_(scale) {
  fail(ErrorKind::kUsage, "cuDNN attention: {}", unsupported(heads, kv_heads, head_dim, capacity));
}

CudnnAttention::~CudnnAttention() = default;

std::size_t CudnnAttention::device_bytes() const noexcept { return 0; }

void CudnnAttention::run(CudnnAttentionArgs const&, cudaStream_t) {
  fail(ErrorKind::kUsage, "cuDNN attention: {}", unsupported(0, 0, 0, 0));
}

#endif

}  // namespace slidesparse::cuda
