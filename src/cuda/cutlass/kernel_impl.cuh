// The CUTLASS 4.x sm90a GEMM behind every CutlassKernel (see cutlass_kernel.hpp for the problem):
// a TMA warp-specialized mainloop over A = W' (2:4-compressed for the sparse kernels) and
// B = x', and an epilogue visitor tree that applies the per-token and per-channel scales and
// the bias to the accumulator in registers and stores BF16 once:
//   y = bf16( ((float(acc) * scale_x[token]) * scale_w[channel]) + bias[channel] )
// Included only by the generated one-configuration translation units (kernels.txt), which
// compile for sm_90a with --fmad=false (no contraction of the epilogue's products and sums).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/version.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/dispatch_policy.hpp>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/gemm/kernel/tile_scheduler.hpp>
#include <cutlass/util/packed_stride.hpp>

#include <string>
#include <type_traits>

#include "cutlass_kernel.hpp"

namespace slidesparse::cuda::detail::cutlass_impl {

using namespace cute;

template <DType kDtype>
struct Operand;
template <>
struct Operand<DType::kF8E4M3> {
  using Element = cutlass::float_e4m3_t;
  using Accumulator = float;
};
template <>
struct Operand<DType::kI8> {
  using Element = std::int8_t;
  using Accumulator = std::int32_t;
};

// Mainloop / epilogue schedule tags and tile scheduler of a CutlassSchedule.
template <CutlassSchedule kSchedule, bool kFastAccum>
struct Schedule {
  static constexpr bool kPingpong = kSchedule == CutlassSchedule::kPingpong;
  using Mainloop = std::conditional_t<
      kPingpong,
      std::conditional_t<kFastAccum, cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum,
                         cutlass::gemm::KernelTmaWarpSpecializedPingpong>,
      std::conditional_t<kFastAccum, cutlass::gemm::KernelTmaWarpSpecializedCooperativeFP8FastAccum,
                         cutlass::gemm::KernelTmaWarpSpecializedCooperative>>;
  using Epilogue = std::conditional_t<kPingpong, cutlass::epilogue::TmaWarpSpecialized,
                                      cutlass::epilogue::TmaWarpSpecializedCooperative>;
  using TileScheduler = std::conditional_t<kSchedule == CutlassSchedule::kStreamK, cutlass::gemm::StreamKScheduler,
                                           cutlass::gemm::PersistentScheduler>;
};

template <bool kSparse, DType kDtype, int kTileM, int kTileN, int kTileK, int kClusterM, int kClusterN,
          CutlassSchedule kSchedule, bool kFastAccum>
struct Gemm {
  using Element = typename Operand<kDtype>::Element;
  using Accumulator = typename Operand<kDtype>::Accumulator;
  using ElementD = cutlass::bfloat16_t;
  using TileShape = Shape<Int<kTileM>, Int<kTileN>, Int<kTileK>>;
  using ClusterShape = Shape<Int<kClusterM>, Int<kClusterN>, _1>;
  using OpClass = std::conditional_t<kSparse, cutlass::arch::OpClassSparseTensorOp, cutlass::arch::OpClassTensorOp>;
  using Schedules = Schedule<kSchedule, kFastAccum>;
  static constexpr int kAlignmentAB = 16;  // elements: 16 bytes of 8-bit data (TMA)
  static constexpr int kAlignmentD = 8;    // elements: 16 bytes of BF16

  // Epilogue visitor tree. Broadcast vectors use alignment 1 (any M and N; they are tiny).
  // RowBroadcast runs along GEMM n (tokens), ColBroadcast along GEMM m (channels).
  using ScaleX = cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, int64_t>, 1>;
  using ScaleW = cutlass::epilogue::fusion::Sm90ColBroadcast<0, TileShape, float, float, Stride<_1, _0, int64_t>, 1>;
  using Bias = ScaleW;
  static constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;
  using Times = cutlass::epilogue::fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>;
  using PlusToD = cutlass::epilogue::fusion::Sm90Compute<cutlass::plus, ElementD, float, kRound>;
  using AccTimesX = cutlass::epilogue::fusion::Sm90EVT<Times, cutlass::epilogue::fusion::Sm90AccFetch, ScaleX>;
  using TimesW = cutlass::epilogue::fusion::Sm90EVT<Times, AccTimesX, ScaleW>;
  using Fusion = cutlass::epilogue::fusion::Sm90EVT<PlusToD, TimesW, Bias>;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, OpClass, TileShape, ClusterShape, cutlass::epilogue::collective::EpilogueTileAuto,
      Accumulator, float, void, cutlass::layout::ColumnMajor, kAlignmentD, ElementD, cutlass::layout::ColumnMajor,
      kAlignmentD, typename Schedules::Epilogue, Fusion>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, OpClass, Element, cutlass::layout::RowMajor, kAlignmentAB, Element,
      cutlass::layout::ColumnMajor, kAlignmentAB, Accumulator, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      typename Schedules::Mainloop>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, CollectiveMainloop,
                                                      CollectiveEpilogue, typename Schedules::TileScheduler>;
  using Adapter = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

// The compressed-weight layout every sparse kernel of a dtype must share (one compressed copy
// serves all configurations): the one of a 128-wide K tile, which all sparse kernels use.
template <DType kDtype>
using CanonicalSparseConfig =
    typename Gemm<true, kDtype, 128, 128, 128, 1, 1, CutlassSchedule::kCooperative, false>::CollectiveMainloop::SparseConfig;

inline int sm_count() {
  static int const count = [] {
    int device = 0, sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return 0;
    return sms;
  }();
  return count;
}

template <class G>
class KernelImpl final : public CutlassKernel {
 public:
  using Adapter = typename G::Adapter;
  using Kernel = typename G::Kernel;

  explicit KernelImpl(CutlassKernelSpec spec) : spec_(std::move(spec)) {}
  CutlassKernelSpec const& spec() const noexcept override { return spec_; }

  std::string check(CutlassProblem const& p, CutlassRunOptions const& o) const override {
    // (No fmt here: nvcc's front end cannot evaluate its consteval format strings.)
    using std::to_string;
    if (p.n <= 0 || p.m <= 0 || p.k <= 0) {
      return "empty problem N = " + to_string(p.n) + ", M = " + to_string(p.m) + ", K' = " + to_string(p.k);
    }
    if (p.n % G::kAlignmentD != 0) {
      return "N = " + to_string(p.n) + " is not a multiple of " + to_string(G::kAlignmentD) + " (16-byte output rows)";
    }
    if (p.k % G::kAlignmentAB != 0) return "K' = " + to_string(p.k) + " is not a multiple of " + to_string(G::kAlignmentAB);
    if (p.n > INT32_MAX || p.m > INT32_MAX || p.k > INT32_MAX) return "a dimension exceeds 2^31 - 1";
    if (o.splits != 1 && spec_.schedule != CutlassSchedule::kStreamK) return "K splits need the stream-K schedule";
    auto const args = arguments(p, o);
    cutlass::Status const status = Adapter::can_implement(args);
    if (status != cutlass::Status::kSuccess) return std::string("CUTLASS can_implement: ") + cutlassGetStatusString(status);
    return {};
  }

  std::size_t workspace_bytes(CutlassProblem const& p, CutlassRunOptions const& o) const override {
    return Adapter::get_workspace_size(arguments(p, o));
  }

  cudaError_t run(CutlassProblem const& p, CutlassRunOptions const& o, void* workspace,
                  cudaStream_t stream) const override {
    Adapter gemm;
    auto const args = arguments(p, o);
    if (gemm.initialize(args, workspace, stream) != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
    if (gemm.run(stream) != cutlass::Status::kSuccess) {
      cudaError_t const e = cudaGetLastError();
      return e != cudaSuccess ? e : cudaErrorLaunchFailure;
    }
    return cudaSuccess;
  }

 private:
  typename Adapter::Arguments arguments(CutlassProblem const& p, CutlassRunOptions const& o) const {
    using Mainloop = typename G::CollectiveMainloop;
    int const n = static_cast<int>(p.n), m = static_cast<int>(p.m), k = static_cast<int>(p.k);
    auto const problem = cute::make_shape(n, m, k, 1);
    using Element = typename G::Element;
    auto const* a = static_cast<Element const*>(p.weight);
    auto const* b = static_cast<Element const*>(p.x);
    auto const stride_b = cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, cute::make_shape(m, k, 1));
    typename Mainloop::Arguments mainloop{};
    if constexpr (requires { Mainloop::SparseConfig::fill_layoutA(problem); }) {
      using SparseConfig = typename Mainloop::SparseConfig;
      static_assert(std::is_same_v<SparseConfig, CanonicalSparseConfig<std::is_same_v<Element, std::int8_t> ? DType::kI8
                                                                                                            : DType::kF8E4M3>>,
                    "every sparse kernel of a dtype must read the same compressed layout");
      mainloop.ptr_A = a;
      mainloop.layout_a = SparseConfig::fill_layoutA(problem);
      mainloop.ptr_B = b;
      mainloop.dB = stride_b;
      mainloop.ptr_E = static_cast<typename Mainloop::ElementE const*>(p.metadata);
      mainloop.layout_e = SparseConfig::fill_layoutE(problem);
    } else {
      mainloop.ptr_A = a;
      mainloop.dA = cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, cute::make_shape(n, k, 1));
      mainloop.ptr_B = b;
      mainloop.dB = stride_b;
    }
    auto const stride_d = cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, cute::make_shape(n, m, 1));
    typename Adapter::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.problem_shape = problem;
    args.mainloop = mainloop;
    // Visitor-tree arguments nest like the tree: {children..., node}; broadcasts are
    // {pointer, value when the pointer is null, stride}.
    args.epilogue.thread = {
        {
            {
                {},                                               // accumulator
                {p.scale_x, 1.0f, {cute::_0{}, cute::_1{}, 0}},  // * scale_x[token]
                {}                                                // multiplies
            },
            {p.scale_w, 1.0f, {cute::_1{}, cute::_0{}, 0}},  // * scale_w[channel]
            {}                                                // multiplies
        },
        {p.bias, 0.0f, {cute::_1{}, cute::_0{}, 0}},  // + bias[channel] (0 without bias)
        {}                                             // plus, converted to BF16
    };
    args.epilogue.ptr_C = nullptr;
    args.epilogue.ptr_D = static_cast<cutlass::bfloat16_t*>(p.y);
    args.epilogue.dD = stride_d;
    args.hw_info.device_id = 0;
    cudaGetDevice(&args.hw_info.device_id);
    args.hw_info.sm_count = sm_count();
    args.scheduler.max_swizzle_size = o.swizzle;
    using RasterOrder = decltype(args.scheduler.raster_order);
    args.scheduler.raster_order = o.raster == CutlassRunOptions::Raster::kAlongM   ? RasterOrder::AlongM
                                  : o.raster == CutlassRunOptions::Raster::kAlongN ? RasterOrder::AlongN
                                                                                    : RasterOrder::Heuristic;
    if constexpr (requires { args.scheduler.splits; }) args.scheduler.splits = o.splits;
    return args;
  }

  CutlassKernelSpec spec_;
};

template <bool kSparse, DType kDtype, int kTileM, int kTileN, int kTileK, int kClusterM, int kClusterN,
          CutlassSchedule kSchedule, bool kFastAccum>
std::unique_ptr<CutlassKernel> make_kernel(char const* name) {
  using G = Gemm<kSparse, kDtype, kTileM, kTileN, kTileK, kClusterM, kClusterN, kSchedule, kFastAccum>;
  CutlassKernelSpec spec;
  spec.name = name;
  spec.sparse = kSparse;
  spec.dtype = kDtype;
  spec.tile_m = kTileM, spec.tile_n = kTileN, spec.tile_k = kTileK;
  spec.cluster_m = kClusterM, spec.cluster_n = kClusterN;
  spec.schedule = kSchedule;
  spec.fast_accum = kFastAccum;
  return std::make_unique<KernelImpl<G>>(std::move(spec));
}

}  // namespace slidesparse::cuda::detail::cutlass_impl
