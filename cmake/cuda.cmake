# Decide whether the CUDA layer is built. The core, io and convert layers never need CUDA; the CUDA
# layer (src/cuda, tests/gpu) compiles and links wherever the toolkit exists, GPU or not, so CI
# (no GPU, CUDA 13.0 toolkit) catches compile and link errors in GPU code.
set(SLIDESPARSE_HAVE_CUDA OFF)
if(SLIDESPARSE_ENABLE_CUDA STREQUAL "AUTO")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(SLIDESPARSE_HAVE_CUDA ON)
  endif()
elseif(SLIDESPARSE_ENABLE_CUDA)
  set(SLIDESPARSE_HAVE_CUDA ON)
endif()

if(SLIDESPARSE_HAVE_CUDA)
  # sm_90a: Hopper (H100/H200; wgmma and sparse wgmma need the 'a' target). sm_80: A100 class, so
  # the portable kernels are exercised on older cards too.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80-real 90a-real)
  endif()
  enable_language(CUDA)
  # CMake 3.25 predates nvcc's C++20 support and would refuse CUDA_STANDARD 20 (which CUDA
  # targets inherit from CXX_STANDARD); teach it the flag nvcc >= 12 takes.
  if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  # No --use_fast_math anywhere: kernels are compared bit for bit with the CPU reference.
  string(APPEND CMAKE_CUDA_FLAGS " --expt-relaxed-constexpr")
  find_package(CUDAToolkit REQUIRED)

  find_path(CUSPARSELT_INCLUDE_DIR cusparseLt.h
            HINTS "${SLIDESPARSE_CUSPARSELT_ROOT}/include" NO_DEFAULT_PATH)
  find_library(CUSPARSELT_LIBRARY NAMES cusparseLt libcusparseLt.so.0
               HINTS "${SLIDESPARSE_CUSPARSELT_ROOT}/lib" NO_DEFAULT_PATH)
  if(NOT CUSPARSELT_INCLUDE_DIR OR NOT CUSPARSELT_LIBRARY)
    message(FATAL_ERROR
      "CUDA layer requested but cuSPARSELt was not found under ${SLIDESPARSE_CUSPARSELT_ROOT} "
      "(expected include/cusparseLt.h and lib/libcusparseLt.so.0). Run scripts/setup.sh, or pass "
      "-DSLIDESPARSE_CUSPARSELT_ROOT=..., or -DSLIDESPARSE_ENABLE_CUDA=OFF.")
  endif()
  message(STATUS "slidesparse: CUDA layer ON (archs ${CMAKE_CUDA_ARCHITECTURES}); cuSPARSELt ${CUSPARSELT_LIBRARY}")

  # cuDNN (fused prefill attention) is optional: SLIDESPARSE_CUDNN_ROOT first (the GPU machine's
  # PyTorch copy, include/ and lib/), else the CUDA toolkit's; the frontend headers come from the
  # pinned wheel that scripts/setup.sh unpacks. Without all three the attention falls back to the
  # own kernel and says why.
  find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS "${SLIDESPARSE_CUDNN_ROOT}/include" NO_DEFAULT_PATH)
  find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 HINTS "${SLIDESPARSE_CUDNN_ROOT}/lib" NO_DEFAULT_PATH)
  find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9
               HINTS "${CUDAToolkit_LIBRARY_ROOT}/lib" "${CUDAToolkit_LIBRARY_ROOT}/lib64" ${CUDAToolkit_LIBRARY_DIR})
  set(CUDNN_FRONTEND_INCLUDE_DIR "${SLIDESPARSE_DEPS_DIR}/cudnn-frontend/include")
  if(CUDNN_INCLUDE_DIR AND CUDNN_LIBRARY AND EXISTS "${CUDNN_FRONTEND_INCLUDE_DIR}/cudnn_frontend.h")
    set(SLIDESPARSE_HAVE_CUDNN ON)
    message(STATUS "slidesparse: cuDNN ${CUDNN_LIBRARY} (headers ${CUDNN_INCLUDE_DIR}), frontend ${CUDNN_FRONTEND_INCLUDE_DIR}")
  else()
    set(SLIDESPARSE_HAVE_CUDNN OFF)
    message(STATUS "slidesparse: no cuDNN (header '${CUDNN_INCLUDE_DIR}', library '${CUDNN_LIBRARY}', frontend ${CUDNN_FRONTEND_INCLUDE_DIR}): own attention kernel only")
  endif()
else()
  message(STATUS "slidesparse: CUDA layer OFF")
endif()
