// 2:4 weight compression for the CUTLASS sparse kernels: CUTLASS's sm90 structured-sparse
// compressor, instantiated for the layout every sparse kernel of a dtype reads
// (CanonicalSparseConfig; each kernel TU checks it reads that one).
#include <cutlass/transform/device/transform_universal_adapter.hpp>
#include <cutlass/transform/kernel/sparse_gemm_compressor.hpp>

#include "kernel_impl.cuh"

namespace slidesparse::cuda::detail {
namespace {

template <DType kDtype>
struct Compression {
  using Element = typename cutlass_impl::Operand<kDtype>::Element;
  using SparseConfig = cutlass_impl::CanonicalSparseConfig<kDtype>;
  using ProblemShape = cute::Shape<int, int, int, int>;
  using StrideA = cutlass::gemm::TagToStrideA_t<cutlass::layout::RowMajor>;
  using Utility = cutlass::transform::kernel::StructuredSparseCompressorUtility<ProblemShape, Element,
                                                                                 cutlass::layout::RowMajor, SparseConfig>;
  using Kernel = cutlass::transform::kernel::StructuredSparseCompressor<ProblemShape, Element, cutlass::layout::RowMajor,
                                                                       SparseConfig, cutlass::arch::Sm90>;
  using Adapter = cutlass::transform::device::TransformUniversalAdapter<Kernel>;

  // The compressor's problem is the GEMM's (m, n, k, l) = (N, -, K', 1); it reads only m and k.
  static ProblemShape problem(std::int64_t n, std::int64_t k) {
    return ProblemShape{static_cast<int>(n), 1, static_cast<int>(k), 1};
  }
  static StrideA stride(std::int64_t n, std::int64_t k) {
    return cutlass::make_cute_packed_stride(StrideA{}, cute::make_shape(static_cast<int>(n), static_cast<int>(k), 1));
  }
  static CutlassSparseSizes sizes(std::int64_t n, std::int64_t k) {
    Utility const utility(problem(n, k), stride(n, k));
    return {static_cast<std::size_t>(utility.get_compressed_tensor_A_bytes()),
            static_cast<std::size_t>(utility.get_tensor_E_bytes())};
  }
  static std::string compress(void const* weight, std::int64_t n, std::int64_t k, void* values, void* metadata,
                              cudaStream_t stream) {
    CutlassSparseSizes const bytes = sizes(n, k);
    // Padding (rows and K beyond the problem) must read as zero values with valid metadata.
    cudaError_t e = cudaMemsetAsync(values, 0, bytes.values, stream);
    if (e == cudaSuccess) e = cudaMemsetAsync(metadata, 0, bytes.metadata, stream);
    if (e != cudaSuccess) return std::string("cudaMemsetAsync: ") + cudaGetErrorString(e);
    typename Adapter::Arguments args{};
    args.problem_shape = problem(n, k);
    args.transform.ptr_A = weight;
    args.transform.dA = stride(n, k);
    args.transform.ptr_ACompress = values;
    args.transform.ptr_E = metadata;
    cudaGetDevice(&args.hw_info.device_id);
    args.hw_info.sm_count = cutlass_impl::sm_count();
    if (Adapter::can_implement(args) != cutlass::Status::kSuccess) {
      return "K' = " + std::to_string(k) + " is not a multiple of the compressor's chunk";
    }
    std::size_t const workspace_bytes = Adapter::get_workspace_size(args);
    void* workspace = nullptr;
    if (workspace_bytes && (e = cudaMallocAsync(&workspace, workspace_bytes, stream)) != cudaSuccess) {
      return std::string("cudaMallocAsync: ") + cudaGetErrorString(e);
    }
    Adapter op;
    cutlass::Status status = op.initialize(args, workspace, stream);
    if (status == cutlass::Status::kSuccess) status = op.run(stream);
    e = cudaGetLastError();
    if (workspace) cudaFreeAsync(workspace, stream);
    if (status != cutlass::Status::kSuccess) return std::string("CUTLASS: ") + cutlassGetStatusString(status);
    if (e != cudaSuccess) return std::string("launch: ") + cudaGetErrorString(e);
    return {};
  }
};

}  // namespace

CutlassSparseSizes cutlass_sparse_sizes_launch(DType dtype, std::int64_t n, std::int64_t k) {
  if (dtype == DType::kI8) return Compression<DType::kI8>::sizes(n, k);
  return Compression<DType::kF8E4M3>::sizes(n, k);
}

std::string cutlass_compress_launch(DType dtype, void const* weight, std::int64_t n, std::int64_t k, void* values,
                                    void* metadata, cudaStream_t stream) {
  if (dtype == DType::kI8) return Compression<DType::kI8>::compress(weight, n, k, values, metadata, stream);
  return Compression<DType::kF8E4M3>::compress(weight, n, k, values, metadata, stream);
}

bool cutlass_available() noexcept { return true; }

std::string cutlass_version() {
  return std::to_string(CUTLASS_MAJOR) + "." + std::to_string(CUTLASS_MINOR) + "." + std::to_string(CUTLASS_PATCH);
}

}  // namespace slidesparse::cuda::detail
