#include "slidesparse/bench/runner.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <fmt/chrono.h>
#include <fmt/format.h>

#include "slidesparse/core/parallel.hpp"
#include "slidesparse/core/prune.hpp"
#include "slidesparse/core/random.hpp"
#include "slidesparse/cuda/check.hpp"
#include "slidesparse/cuda/device_info.hpp"
#include "slidesparse/cuda/cutlass_gemm.hpp"
#include "slidesparse/cuda/device_buffer.hpp"
#include "slidesparse/cuda/dispatch_linear.hpp"
#include "slidesparse/cuda/l2_flush.hpp"
#include "slidesparse/cuda/linear.hpp"
#include "slidesparse/io/tuning_cache.hpp"

namespace slidesparse::bench {
namespace {


class Timer {
 public:
  Timer(int warmup, int repeats, cudaStream_t stream) : warmup_(warmup), repeats_(repeats), stream_(stream) {
    events_.resize(2 * static_cast<std::size_t>(repeats));
    for (auto& e : events_) SLIDESPARSE_CUDA_CHECK(cudaEventCreate(&e));
  }
  ~Timer() {
    for (auto& e : events_) cudaEventDestroy(e);
  }
  Timer(Timer const&) = delete;
  Timer& operator=(Timer const&) = delete;

  template <typename F>
  Timing time(F&& call) {
    for (int i = 0; i < warmup_; ++i) {
      flusher_.flush(stream_);
      call();
    }
    for (int i = 0; i < repeats_; ++i) {
      flusher_.flush(stream_);  // not timed: between the events only the call runs
      SLIDESPARSE_CUDA_CHECK(cudaEventRecord(events_[2 * i], stream_));
      call();
      SLIDESPARSE_CUDA_CHECK(cudaEventRecord(events_[2 * i + 1], stream_));
    }
    SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::vector<double> us;
    for (int i = 0; i < repeats_; ++i) {
      float ms = 0;
      SLIDESPARSE_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[2 * i], events_[2 * i + 1]));
      us.push_back(1000.0 * ms);
    }
    std::sort(us.begin(), us.end());
    return {us[us.size() / 2], us.front(), us.back()};
  }

  /// Times several calls round-robin (call 0, 1, ..., n-1, then 1, ..., n-1, 0: rotated), so slow drifts of the
  /// GPU's clock and temperature over the sequence affect every call alike instead of favouring
  /// whichever ran first (seen on an H100: the same kernel 8 % apart when timed a minute apart).
  std::vector<Timing> time_interleaved(std::vector<std::function<void()>> const& calls) {
    std::size_t const n = calls.size();
    for (int i = 0; i < warmup_; ++i) {
      for (auto const& call : calls) {
        flusher_.flush(stream_);
        call();
      }
    }
    std::vector<cudaEvent_t> events(2 * n * static_cast<std::size_t>(repeats_));
    for (auto& e : events) SLIDESPARSE_CUDA_CHECK(cudaEventCreate(&e));
    // Each round starts one variant later (rotation): a variant's place in the round (after a
    // heavy or a light kernel, early or late after the host's launches) must not bias it. A
    // fixed order once measured the dispatching layer 2-5 % slower than the very same layer
    // timed as a variant of its own (H200, M = 1, 2026-12-04).
    for (int i = 0; i < repeats_; ++i) {
      for (std::size_t j = 0; j < n; ++j) {
        std::size_t const c = (j + static_cast<std::size_t>(i)) % n;
        flusher_.flush(stream_);
        std::size_t const at = 2 * (static_cast<std::size_t>(i) * n + c);
        SLIDESPARSE_CUDA_CHECK(cudaEventRecord(events[at], stream_));
        calls[c]();
        SLIDESPARSE_CUDA_CHECK(cudaEventRecord(events[at + 1], stream_));
      }
    }
    SLIDESPARSE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::vector<Timing> out;
    for (std::size_t c = 0; c < n; ++c) {
      std::vector<double> us;
      for (int i = 0; i < repeats_; ++i) {
        std::size_t const at = 2 * (static_cast<std::size_t>(i) * n + c);
        float ms = 0;
        SLIDESPARSE_CUDA_CHECK(cudaEventElapsedTime(&ms, events[at], events[at + 1]));
        us.push_back(1000.0 * ms);
      }
      std::sort(us.begin(), us.end());
      out.push_back({us[us.size() / 2], us.front(), us.back()});
    }
    for (auto& e : events) cudaEventDestroy(e);
    return out;
  }

 private:
  int warmup_, repeats_;
  cudaStream_t stream_;
  cuda::L2Flusher flusher_;
  std::vector<cudaEvent_t> events_;
};

double measure_copy_gbps(cudaStream_t stream) {
  std::size_t const bytes = std::size_t{1} << 30;
  cuda::DeviceBuffer a(bytes), b(bytes);
  SLIDESPARSE_CUDA_CHECK(cudaMemsetAsync(a.get(), 1, bytes, stream));
  Timer timer(2, 7, stream);
  Timing const t = timer.time([&] { SLIDESPARSE_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, stream)); });
  return 2.0 * static_cast<double>(bytes) / (t.median_us * 1e3);
}

std::string run_text(char const* command) {
  std::string out;
  if (FILE* pipe = popen(command, "r")) {
    std::array<char, 256> buf{};
    while (fgets(buf.data(), buf.size(), pipe)) out += buf.data();
    pclose(pipe);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

nlohmann::json environment(BenchOptions const& options) {
  nlohmann::json j = gpu_environment(options.command);
  j["seed"] = options.seed;
  j["warmup"] = options.warmup;
  j["repeats"] = options.repeats;
  j["method"] = "L2 evicted before every timed call; single calls between CUDA events; median, min, max";
  return j;
}

}  // namespace

nlohmann::json gpu_environment(std::string const& command) {
  auto const env = cuda::query_cuda_environment();
  nlohmann::json j;
  if (!env.gpus.empty()) {
    auto const& g = env.gpus.front();
    j["gpu"] = g.name;
    j["sm"] = fmt::format("{}.{}", g.sm_major, g.sm_minor);
    j["sms"] = g.multiprocessors;
    j["memory_gib"] = static_cast<double>(g.memory_bytes) / (1 << 30);
  }
  j["cuda_runtime"] = env.runtime_version;
  j["cuda_driver_api"] = env.driver_version;
  j["cusparselt"] = env.cusparselt_version;
  j["cublaslt"] = cublasLtGetVersion();
  j["cutlass"] = cuda::CutlassGemm::version();
  // Clocks and power as the driver reports them (nvidia-smi, when present).
  j["nvidia_smi"] = run_text("nvidia-smi --query-gpu=driver_version,clocks.sm,clocks.max.sm,clocks.mem,"
                             "power.limit,temperature.gpu --format=csv 2>/dev/null");
  j["date"] = fmt::format("{:%Y-%m-%d %H:%M UTC}", fmt::gmtime(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now())));
  j["command"] = command;
  return j;
}

std::string bench_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF8E4M3: return "fp8";
    case DType::kI8: return "int8";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "fp16";
    default: return std::string(dtype_name(dtype));
  }
}

Report run_benchmark(BenchOptions const& options) {
  auto const env = cuda::query_cuda_environment();
  if (!env.problem.empty()) fail(ErrorKind::kUsage, "bench needs a GPU: {}", env.problem);
  auto say = [&](std::string const& text) {
    if (options.progress) options.progress(text);
  };
  cudaStream_t stream = nullptr;
  SLIDESPARSE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::unique_ptr<CUstream_st, void (*)(cudaStream_t)> stream_guard(stream, [](cudaStream_t s) { cudaStreamDestroy(s); });
  Report report;
  report.environment = environment(options);
  report.copy_gbps = measure_copy_gbps(stream);
  say(fmt::format("device copy bandwidth {:.0f} GB/s", report.copy_gbps));
  Timer timer(options.warmup, options.repeats, stream);
  auto scratch = std::make_shared<cuda::LinearScratch>();
  std::int64_t const m_max = *std::max_element(options.ms.begin(), options.ms.end());
  std::uint64_t seed = options.seed;
  for (ModelShapes const& model : options.models) {
    for (LayerShape const& shape : model.layers) {
      for (DType const dtype : options.dtypes) {
        bool const w8a8 = dtype == DType::kI8 || dtype == DType::kF8E4M3;
        DType const act = dtype == DType::kF16 ? DType::kF16 : DType::kBF16;
        std::string const dname = bench_dtype_name(dtype);
        // Inputs and outputs for the largest M; the layers read the first M rows.
        cuda::DeviceBuffer x(static_cast<std::size_t>(m_max * shape.k) * 2), y(static_cast<std::size_t>(m_max * shape.n) * 2);
        cuda::fill_device_random(act, x.get(), static_cast<std::size_t>(m_max * shape.k) * 2, ++seed, nullptr);
        std::vector<std::byte> base(static_cast<std::size_t>(shape.n * shape.k) * dtype_size(dtype));
        fill_random(dtype, base.data(), shape.n * shape.k, ++seed);
        std::vector<float> const scales(w8a8 ? static_cast<std::size_t>(shape.n) : 0, 1.0f / 512);
        for (SparsityPattern const& pattern : options.patterns) {
          std::string const pname = pattern.to_string();
          say(fmt::format("{} {} [{} x {}] {} {}: building layers", model.name, shape.name, shape.n, shape.k, dname, pname));
          std::vector<std::byte> pruned = base;
          MatrixView w{dtype, shape.n, shape.k, pruned.data(), shape.name};
          prune_in_place(w, pattern);
          cuda::LinearWeights const weights{w, scales, {}};
          cuda::Linear sparse({dtype, act, pattern}, weights, stream, options.tuning, shape.name, scratch);
          // The dense layer: cuBLASLt with the scales fused into its epilogue where it can
          // (FP8); the unfused twin gives the GEMM-only comparison at the sparse GEMM's output
          // type (F32 / I32) and shows what the fusion is worth.
          cuda::Linear dense({dtype, act, std::nullopt}, weights, stream, options.tuning, shape.name, scratch);
          std::unique_ptr<cuda::Linear> dense_unfused;
          if (dtype == DType::kF8E4M3) {
            cuda::LinearConfig config{dtype, act, std::nullopt};
            config.fuse_dense_scales = false;
            dense_unfused = std::make_unique<cuda::Linear>(config, weights, stream, options.tuning, shape.name, scratch);
          }
          // The CUTLASS twins (GEMM + fused epilogue), sparse and dense, where they can run.
          std::unique_ptr<cuda::Linear> sparse_cutlass, dense_cutlass;
          if (options.cutlass && w8a8) {
            cuda::LinearConfig config{dtype, act, pattern};
            config.backend = cuda::GemmBackend::kCutlass;
            std::string const why = cuda::Linear::cutlass_unsupported(config, shape.n, shape.k);
            if (why.empty()) {
              sparse_cutlass = std::make_unique<cuda::Linear>(config, weights, stream, options.tuning, shape.name, scratch);
              config.pattern = std::nullopt;
              dense_cutlass = std::make_unique<cuda::Linear>(config, weights, stream, options.tuning, shape.name, scratch);
            } else if (&pattern == &options.patterns.front()) {
              say(fmt::format("{} {} {}: no CUTLASS variants: {}", model.name, shape.name, dname, why));
            }
          }
          // SlideSparse's own sm90 kernel (GEMM + fused epilogue), where it can run.
          std::unique_ptr<cuda::Linear> sparse_sm90;
          if (options.sm90 && w8a8) {
            cuda::LinearConfig config{dtype, act, pattern};
            config.backend = cuda::GemmBackend::kSm90Sparse;
            std::string const why = cuda::Linear::sm90_sparse_unsupported(config, shape.n, shape.k);
            if (why.empty()) {
              sparse_sm90 = std::make_unique<cuda::Linear>(config, weights, stream, options.tuning, shape.name, scratch);
            } else if (&pattern == &options.patterns.front()) {
              say(fmt::format("{} {} {}: no sm90 variant: {}", model.name, shape.name, dname, why));
            }
          }
          // The dispatching layer (fastest of CUTLASS / sm90 / cuSPARSELt / dense fallback per M bucket),
          // timed as a whole: what a model built with it gets.
          std::unique_ptr<cuda::DispatchLinear> dispatch;
          if (options.dispatch) {
            cuda::DispatchConfig config;
            config.layer = {dtype, act, pattern};
            config.cutlass = options.cutlass;
            config.sm90 = options.sm90;
            config.dense_fallback = true;
            dispatch = std::make_unique<cuda::DispatchLinear>(config, weights, stream, options.tuning, shape.name, scratch);
          }
          for (std::int64_t const m : options.ms) {
            struct Run {
              cuda::Linear* layer;
              std::string variant;       ///< of the layer rows
              std::string gemm_variant;  ///< of the GEMM-only rows
              bool layer_mode, gemm_mode, quant_mode;
            };
            bool const fused = dense.dense_scales_fused();
            // GEMM-only rows compare like with like: the cuBLASLt GEMM without scales (dense or
            // dense-unfused, whichever writes the accumulator) against cuSPARSELt's; the CUTLASS
            // GEMM rows include their fused epilogue (it has no other form).
            std::vector<Run> runs = {{&dense, "dense", "dense", true, !fused, true}};
            if (dense_unfused) {
              runs.push_back({dense_unfused.get(), fused ? "dense-unfused" : "dense", "dense", fused, true, false});
            }
            runs.push_back({&sparse, pname, pname, true, true, true});
            if (dense_cutlass) runs.push_back({dense_cutlass.get(), "dense-cutlass", "dense-cutlass", true, true, false});
            if (sparse_cutlass) runs.push_back({sparse_cutlass.get(), pname + "-cutlass", pname + "-cutlass", true, true, false});
            if (sparse_sm90) runs.push_back({sparse_sm90.get(), pname + "-sm90", pname + "-sm90", true, true, false});
            // Whole layers: every variant (and the dispatching layer) timed round-robin.
            if (options.layer) {
              std::vector<std::function<void()>> calls;
              std::vector<Measurement> rows;
              for (Run const& run : runs) {
                if (!run.layer_mode) continue;
                cuda::Linear* layer = run.layer;
                layer->prepare(m, stream);
                calls.emplace_back([&x, &y, layer, m, stream] { layer->forward(x.get(), y.get(), m, stream); });
                rows.push_back({model.name, shape.name, shape.n, shape.k, layer->k_lifted(), m, dname, "layer",
                                run.variant, pname, {}, 0});
              }
              if (dispatch) {
                dispatch->prepare(m, stream);
                calls.emplace_back([&x, &y, &dispatch, m, stream] { dispatch->forward(x.get(), y.get(), m, stream); });
                rows.push_back({model.name, shape.name, shape.n, shape.k, sparse.k_lifted(), m, dname, "layer",
                                pname + "-dispatch", pname, {}, 0});
                say(fmt::format("{} {} {} {} M={}: dispatch chose {}", model.name, shape.name, dname, pname, m,
                                dispatch->description(m)));
              }
              std::vector<Timing> const times = timer.time_interleaved(calls);
              for (std::size_t i = 0; i < rows.size(); ++i) {
                rows[i].time = times[i];
                report.measurements.push_back(rows[i]);
              }
            }
            // GEMM-only and quant+lift steps: one variant at a time (each step reads what the
            // layer's previous step left in the shared scratch).
            for (Run const& run : runs) {
              cuda::Linear* layer = run.layer;
              layer->prepare(m, stream);
              layer->forward(x.get(), y.get(), m, stream);  // the scratch now holds this layer's x'
              Measurement base_row{model.name, shape.name, shape.n, shape.k, layer->k_lifted(), m, dname, "", run.variant, pname, {}, 0};
              if (options.gemm && run.gemm_mode) {
                Measurement row = base_row;
                row.mode = "gemm";
                row.variant = run.gemm_variant;
                row.time = timer.time([&] { layer->forward_stage(cuda::LinearStage::kGemm, x.get(), y.get(), m, stream); });
                report.measurements.push_back(row);
              }
              // The dense layout's quant+lift is the same for every pattern: time it once. A
              // 16-bit identity lift is skipped by the layer (the GEMM reads x): nothing to time.
              bool const lifts = w8a8 || (layer == &sparse && pattern.half_block() != 2) || shape.k % 32 != 0;
              if (options.quant_lift && run.quant_mode && lifts && (layer == &sparse || &pattern == &options.patterns.front())) {
                Measurement row = base_row;
                row.mode = "quant_lift";
                row.time = timer.time([&] { layer->forward_stage(cuda::LinearStage::kQuantLift, x.get(), y.get(), m, stream); });
                std::size_t const out_elem = dtype_size(dtype);
                row.bytes = static_cast<double>(m * shape.k * 2) + static_cast<double>(m * layer->k_lifted()) * static_cast<double>(out_elem) +
                            (w8a8 ? 4.0 * static_cast<double>(m) : 0.0);
                report.measurements.push_back(row);
              }
            }
          }
          if (options.tuning) options.tuning->save();
        }
      }
    }
  }
  return report;
}

}  // namespace slidesparse::bench
