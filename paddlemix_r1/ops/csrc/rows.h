// Row loops the CPU kernels share (cpu_kernels.cc: softmax_lastdim; attention_cpu.cc: the attention
// softmax). Each translation unit gets its own copy (internal linkage).

#pragma once

#include <omp.h>

#include <cmath>
#include <cstdint>

namespace {

constexpr int64_t kParallelMin = 32768;  // elements; below this one thread is faster than a fork/join

// Softmax of each of `rows` rows of n values, x -> y (y may be x: in place), rows split over OpenMP
// threads, exp vectorized; lse[r] (unless null) = max + log(sum exp) of row r.
template <typename T>
void SoftmaxRows(const T* x, T* y, int64_t rows, int64_t n, T* lse = nullptr) {
#pragma omp parallel for schedule(static) if (rows * n >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    T m = xr[0];
    for (int64_t i = 1; i < n; ++i) m = xr[i] > m ? xr[i] : m;
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) {
      const T e = std::exp(xr[i] - m);
      yr[i] = e;
      s += e;
    }
    const T inv = T(1) / s;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) yr[i] *= inv;
    if (lse != nullptr) lse[r] = m + std::log(s);
  }
}

}  // namespace
