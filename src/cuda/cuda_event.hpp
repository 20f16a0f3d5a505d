/// \file cuda_event.hpp
/// \brief A CUDA event destroyed on every way out, for the host-side timings of the CUDA layer
/// (their checks can throw between an event's creation and its use). Internal to the CUDA layer.
#pragma once

#include <cuda_runtime.h>

#include "slidesparse/cuda/check.hpp"

namespace slidesparse::cuda::detail {

class Event {
 public:
  Event() { SLIDESPARSE_CUDA_CHECK(cudaEventCreate(&event_)); }
  ~Event() { cudaEventDestroy(event_); }
  Event(Event const&) = delete;
  Event& operator=(Event const&) = delete;
  cudaEvent_t get() const noexcept { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

}  // namespace slidesparse::cuda::detail
