// The vision tower's attention for CPU, forward and backward: rotary on q and k, then block-diagonal
// (variable-length) attention within each image / window. MKL (the libmklml_intel Paddle ships) does
// the GEMMs, and the softmax and rotary are fused around them (see paddlemix_r1/ops/cpu_ext.py and
// ops/attention.py: vision_attention).
//
// qkv: (N, 3, nh, hd) packed tokens straight from the qkv projection; cos, sin: rotary tables whose
// row i holds token i's (hd,) values (the (1, N, 2 nh, hd) tables of vision_rotary_tables; head 0 is
// read); cu_seqlens: (S + 1,) int64 segment boundaries. Token i of segment s attends to every token of s.
// The rotated q, k are kept (N, nh, hd) for the backward; v is read in place. Each (segment, head) pair
// is one task; a task walks its queries in blocks of rows:
//   forward   S = scale Q_b K^T;  P = softmax(S);  O_b = P V;  lse = max + log(sum exp) saved per row
//   backward  P = exp(scale Q_b K^T - lse);  dV += P^T dO_b;  dP = dO_b V^T;  dS = P (dP - rowsum(dO_b O_b));
//             dQ_b = scale dS K;  dK += scale dS^T Q_b;  then dq, dk rotated back into d(qkv)
// Up to `max_stored` probabilities the forward keeps P (as the eager path does), a block is the whole
// segment, and the backward skips the recomputation: four GEMMs, each over the full segment. Beyond it
// the score buffer is (block, segment length): never (N, N), never padded.
// The GEMMs read the heads in place through their leading dimensions: no transposes, no gathers.
// Paddle's batched matmul with a transposed operand (dV = P^T dO) runs at half the speed of the plain
// product; MKL's sgemm takes the transpose flag at full speed. MKL threads the GEMMs, OpenMP the
// element-wise loops.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "paddle/extension.h"
#include "rows.h"

extern "C" {
// CBLAS of libmklml_intel (LP64: int dimensions). Row-major = 101, no transpose = 111, transpose = 112.
void cblas_sgemm(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc);
void cblas_dgemm(int layout, int trans_a, int trans_b, int m, int n, int k, double alpha, const double* a, int lda,
                 const double* b, int ldb, double beta, double* c, int ldc);
}

namespace {

constexpr int kRowMajor = 101, kN = 111, kT = 112;
constexpr int64_t kBlockElems = 1 << 17;  // score-buffer budget (rows x segment length) when recomputing

inline void Gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(kRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

inline void Gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
                 const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(kRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

struct Layout {
  const int64_t* cu;
  int64_t segments, heads, head_dim, tokens;
  int64_t ld() const { return heads * head_dim; }        // row stride of q, k, out: (N, nh, hd)
  int64_t ld_qkv() const { return 3 * heads * head_dim; }  // row stride of qkv: (N, 3, nh, hd)
  int64_t tasks() const { return segments * heads; }
  int64_t len(int64_t s) const { return cu[s + 1] - cu[s]; }
  int64_t prob_elems() const {  // heads x sum of squared segment lengths
    int64_t n = 0;
    for (int64_t s = 0; s < segments; ++s) n += len(s) * len(s);
    return n * heads;
  }
  // Where task (seg, h)'s (len, len) probabilities start in the stored buffer: segment-major, then head.
  int64_t prob_offset(int64_t seg, int64_t h) const {
    int64_t n = 0;
    for (int64_t s = 0; s < seg; ++s) n += len(s) * len(s);
    return n * heads + h * len(seg) * len(seg);
  }
  // Query rows per block: the whole segment when the probabilities are stored, else a block whose
  // score buffer fits kBlockElems.
  static int64_t block_rows(int64_t len, bool stored) {
    return stored ? len : std::max<int64_t>(16, std::min(len, kBlockElems / std::max<int64_t>(len, 1)));
  }
  int64_t block_elems(bool stored) const {  // the largest (rows, len) block over the segments
    int64_t m = 0;
    for (int64_t s = 0; s < segments; ++s) m = std::max(m, block_rows(len(s), stored) * len(s));
    return m;
  }
};

// Runs task_fn(task, scratch) for every (segment, head) task in turn, scratch being a buffer of
// `scratch_elems` values. The tasks run on the calling thread and MKL threads each GEMM: MKL called from
// inside an OpenMP parallel region (one task per thread, each GEMM on one thread) ran these GEMMs 2.5x
// slower on this machine (58 vs 24 ms for a (4 heads, 1024 tokens, 64) backward).
template <typename T, typename TaskFn>
void ForEachTask(const Layout& lay, int64_t scratch_elems, TaskFn task_fn) {
  std::vector<T> scratch(static_cast<size_t>(scratch_elems));
  for (int64_t t = 0; t < lay.tasks(); ++t) task_fn(t, scratch.data());
}

// dP (rows, n) -> dS = P (dP - rowsum(dO O)) in place; o, dout: (rows, hd) with row stride ld.
template <typename T>
void SoftmaxGradRows(const T* p, T* dp, const T* o, const T* dout, int64_t ld, int64_t rows, int64_t n, int64_t hd) {
#pragma omp parallel for schedule(static) if (rows * n >= kParallelMin)
  for (int64_t i = 0; i < rows; ++i) {
    T dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int64_t d = 0; d < hd; ++d) dot += o[i * ld + d] * dout[i * ld + d];
    T* ds = dp + i * n;
    const T* pr = p + i * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) ds[j] = pr[j] * (ds[j] - dot);
  }
}

// rotate_half rotary, x (hd,) -> y: y1 = x1 c1 - x2 s1, y2 = x2 c2 + x1 s2 (halves of hd), and its
// transpose for the gradient: dx1 = g1 c1 + g2 s2, dx2 = g2 c2 - g1 s1.
template <typename T>
inline void Rotate(const T* x, const T* c, const T* s, T* y, int64_t hd) {
  const int64_t half = hd / 2;
#pragma omp simd
  for (int64_t d = 0; d < half; ++d) {
    y[d] = x[d] * c[d] - x[d + half] * s[d];
    y[d + half] = x[d + half] * c[d + half] + x[d] * s[d + half];
  }
}

template <typename T>
inline void RotateBack(const T* g, const T* c, const T* s, T* dx, int64_t hd) {
  const int64_t half = hd / 2;
#pragma omp simd
  for (int64_t d = 0; d < half; ++d) {
    dx[d] = g[d] * c[d] + g[d + half] * s[d + half];
    dx[d + half] = g[d + half] * c[d + half] - g[d] * s[d];
  }
}

template <typename T>
void Forward(const T* qkv, const T* cos, const T* sin, int64_t table_ld, T* qr, T* kr, T* out, T* lse, T* probs,
             const Layout& lay, T scale) {
  const int64_t ld = lay.ld(), ldv = lay.ld_qkv(), hd = lay.head_dim;
#pragma omp parallel for schedule(static) if (lay.tokens * ld >= kParallelMin)
  for (int64_t i = 0; i < lay.tokens; ++i) {
    const T *c = cos + i * table_ld, *s = sin + i * table_ld;
    for (int64_t h = 0; h < lay.heads; ++h) {
      Rotate(qkv + i * ldv + h * hd, c, s, qr + i * ld + h * hd, hd);
      Rotate(qkv + i * ldv + ld + h * hd, c, s, kr + i * ld + h * hd, hd);
    }
  }
  const T* v = qkv + 2 * ld;  // (N, nh, hd) with row stride ldv
  const bool stored = probs != nullptr;
  ForEachTask<T>(lay, stored ? 0 : lay.block_elems(false), [&](int64_t task, T* scratch) {
    const int64_t seg = task / lay.heads, h = task % lay.heads;
    const int64_t start = lay.cu[seg], len = lay.len(seg);
    const int64_t off = start * ld + h * hd, off_v = start * ldv + h * hd;  // this head of the segment's first token
    const int64_t rows = Layout::block_rows(len, stored);
    for (int64_t r0 = 0; r0 < len; r0 += rows) {
      const int64_t br = std::min(rows, len - r0);
      T* s_buf = stored ? probs + lay.prob_offset(seg, h) + r0 * len : scratch;  // (br, len) scores, then probabilities
      Gemm(kN, kT, br, len, hd, scale, qr + off + r0 * ld, ld, kr + off, ld, T(0), s_buf, len);  // (br, len)
      SoftmaxRows(s_buf, s_buf, br, len, lse + h * lay.tokens + start + r0);  // in place
      Gemm(kN, kN, br, hd, len, T(1), s_buf, len, v + off_v, ldv, T(0), out + off + r0 * ld, ld);  // (br, hd)
    }
  });
}

template <typename T>
void Backward(const T* qkv, const T* cos, const T* sin, int64_t table_ld, const T* qr, const T* kr, const T* out,
              const T* lse, const T* probs, const T* dout, T* dqkv, const Layout& lay, T scale) {
  const int64_t ld = lay.ld(), ldv = lay.ld_qkv(), hd = lay.head_dim;
  const T* v = qkv + 2 * ld;
  T* dv = dqkv + 2 * ld;  // written in place, row stride ldv
  std::vector<T> dqr(static_cast<size_t>(lay.tokens * ld)), dkr(static_cast<size_t>(lay.tokens * ld));  // rotated grads
  const bool stored = probs != nullptr;
  const int64_t block = lay.block_elems(stored);
  ForEachTask<T>(lay, stored ? block : 2 * block, [&](int64_t task, T* buf) {
    T* d_buf = buf;  // (br, len): dP, then dS
    const int64_t seg = task / lay.heads, h = task % lay.heads;
    const int64_t start = lay.cu[seg], len = lay.len(seg);
    const int64_t off = start * ld + h * hd, off_v = start * ldv + h * hd;
    const int64_t rows = Layout::block_rows(len, stored);
    for (int64_t r0 = 0; r0 < len; r0 += rows) {
      const int64_t br = std::min(rows, len - r0);
      const T beta = r0 == 0 ? T(0) : T(1);  // dK, dV: the first block writes, the others accumulate
      const T* p_buf = stored ? probs + lay.prob_offset(seg, h) + r0 * len : buf + block;  // (br, len) probabilities
      if (!stored) {
        T* p = buf + block;
        Gemm(kN, kT, br, len, hd, scale, qr + off + r0 * ld, ld, kr + off, ld, T(0), p, len);  // scores (br, len)
#pragma omp parallel for schedule(static) if (br * len >= kParallelMin)
        for (int64_t i = 0; i < br; ++i) {
          T* row = p + i * len;
          const T l = lse[h * lay.tokens + start + r0 + i];
#pragma omp simd
          for (int64_t j = 0; j < len; ++j) row[j] = std::exp(row[j] - l);
        }
      }
      Gemm(kT, kN, len, hd, br, T(1), p_buf, len, dout + off + r0 * ld, ld, beta, dv + off_v, ldv);  // dV (len, hd)
      Gemm(kN, kT, br, len, hd, T(1), dout + off + r0 * ld, ld, v + off_v, ldv, T(0), d_buf, len);  // dP (br, len)
      SoftmaxGradRows(p_buf, d_buf, out + off + r0 * ld, dout + off + r0 * ld, ld, br, len, hd);
      Gemm(kN, kN, br, hd, len, scale, d_buf, len, kr + off, ld, T(0), dqr.data() + off + r0 * ld, ld);  // dQ_b (br, hd)
      Gemm(kT, kN, len, hd, br, scale, d_buf, len, qr + off + r0 * ld, ld, beta, dkr.data() + off, ld);  // dK (len, hd)
    }
  });
#pragma omp parallel for schedule(static) if (lay.tokens * ld >= kParallelMin)
  for (int64_t i = 0; i < lay.tokens; ++i) {
    const T *c = cos + i * table_ld, *s = sin + i * table_ld;
    for (int64_t h = 0; h < lay.heads; ++h) {
      RotateBack(dqr.data() + i * ld + h * hd, c, s, dqkv + i * ldv + h * hd, hd);
      RotateBack(dkr.data() + i * ld + h * hd, c, s, dqkv + i * ldv + ld + h * hd, hd);
    }
  }
}

Layout MakeLayout(const paddle::Tensor& qkv, const paddle::Tensor& cos, const paddle::Tensor& sin,
                  const paddle::Tensor& cu) {
  const char* op = "vision_attention_cpu";
  PD_CHECK(qkv.is_cpu() && cos.is_cpu() && sin.is_cpu() && cu.is_cpu(), op, ": CPU tensors are required");
  PD_CHECK(qkv.dtype() == paddle::DataType::FLOAT32 || qkv.dtype() == paddle::DataType::FLOAT64, op,
           ": float32 or float64 is required");
  PD_CHECK(qkv.shape().size() == 4 && qkv.shape()[1] == 3 && qkv.shape()[3] % 2 == 0, op,
           ": qkv must be (N, 3, heads, head_dim) with an even head_dim");
  PD_CHECK(cu.dtype() == paddle::DataType::INT64 && cu.shape().size() == 1 && cu.numel() >= 2, op,
           ": cu_seqlens must be an int64 (segments + 1,) tensor");
  Layout lay{cu.data<int64_t>(), cu.numel() - 1, qkv.shape()[2], qkv.shape()[3], qkv.shape()[0]};
  PD_CHECK(lay.cu[0] == 0 && lay.cu[lay.segments] == lay.tokens, op, ": cu_seqlens must run from 0 to N = ", lay.tokens);
  for (int64_t s = 0; s < lay.segments; ++s) PD_CHECK(lay.len(s) > 0, op, ": cu_seqlens must be strictly increasing");
  for (const paddle::Tensor* t : {&cos, &sin}) {
    PD_CHECK(t->dtype() == qkv.dtype() && t->shape().back() == lay.head_dim && t->numel() % lay.tokens == 0, op,
             ": cos and sin must have qkv's dtype and (..., N, ..., head_dim) rows, one per token");
  }
  return lay;
}

}  // namespace

std::vector<paddle::Tensor> VisionAttentionForward(const paddle::Tensor& qkv, const paddle::Tensor& cos,
                                                   const paddle::Tensor& sin, const paddle::Tensor& cu_seqlens,
                                                   float scale, int64_t max_stored) {
  const Layout lay = MakeLayout(qkv, cos, sin, cu_seqlens);
  auto xc = qkv.contiguous(), cc = cos.contiguous(), sc = sin.contiguous();
  const std::vector<int64_t> shape = {lay.tokens, lay.heads, lay.head_dim};
  auto qr = paddle::empty(shape, xc.dtype(), xc.place());
  auto kr = paddle::empty(shape, xc.dtype(), xc.place());
  auto out = paddle::empty(shape, xc.dtype(), xc.place());
  auto lse = paddle::empty({lay.heads, lay.tokens}, xc.dtype(), xc.place());  // (nh, N)
  const int64_t prob_elems = lay.prob_elems();
  const bool store = prob_elems <= max_stored;
  auto probs = paddle::empty({store ? prob_elems : 0}, xc.dtype(), xc.place());  // empty: recompute in the backward
  PD_DISPATCH_FLOATING_TYPES(xc.type(), "vision_attention_cpu", ([&] {
    Forward<data_t>(xc.data<data_t>(), cc.data<data_t>(), sc.data<data_t>(), cc.numel() / lay.tokens, qr.data<data_t>(),
                    kr.data<data_t>(), out.data<data_t>(), lse.data<data_t>(), store ? probs.data<data_t>() : nullptr, lay,
                    static_cast<data_t>(scale));
  }));
  return {out, qr, kr, lse, probs};
}

std::vector<paddle::Tensor> VisionAttentionBackward(const paddle::Tensor& qkv, const paddle::Tensor& cos,
                                                    const paddle::Tensor& sin, const paddle::Tensor& cu_seqlens,
                                                    const paddle::Tensor& out, const paddle::Tensor& qr,
                                                    const paddle::Tensor& kr, const paddle::Tensor& lse,
                                                    const paddle::Tensor& probs, const paddle::Tensor& dout,
                                                    float scale, int64_t max_stored) {
  const Layout lay = MakeLayout(qkv, cos, sin, cu_seqlens);
  auto xc = qkv.contiguous(), cc = cos.contiguous(), sc = sin.contiguous(), gc = dout.contiguous();
  auto dqkv = paddle::empty(xc.shape(), xc.dtype(), xc.place());
  PD_DISPATCH_FLOATING_TYPES(xc.type(), "vision_attention_cpu_grad", ([&] {
    Backward<data_t>(xc.data<data_t>(), cc.data<data_t>(), sc.data<data_t>(), cc.numel() / lay.tokens,
                     qr.data<data_t>(), kr.data<data_t>(), out.data<data_t>(), lse.data<data_t>(),
                     probs.numel() > 0 ? probs.data<data_t>() : nullptr, gc.data<data_t>(), dqkv.data<data_t>(), lay,
                     static_cast<data_t>(scale));
  }));
  return {dqkv};
}

PD_BUILD_OP(vision_attention_cpu)
    .Inputs({"QKV", "Cos", "Sin", "CuSeqlens"})
    .Outputs({"Out", "QR", "KR", "Lse", "Probs"})
    .Attrs({"scale: float", "max_stored: int64_t"})
    .SetKernelFn(PD_KERNEL(VisionAttentionForward));

PD_BUILD_GRAD_OP(vision_attention_cpu)
    .Inputs({"QKV", "Cos", "Sin", "CuSeqlens", "Out", "QR", "KR", "Lse", "Probs", paddle::Grad("Out")})
    .Outputs({paddle::Grad("QKV")})
    .Attrs({"scale: float", "max_stored: int64_t"})
    .SetKernelFn(PD_KERNEL(VisionAttentionBackward));


// ---- grouped decode attention (ops/attention.py: grouped_decode_attention) ------------------------------
// One decode step for N = B*G rows whose G consecutive rows continue one prompt: q (N, 1, nh, hd); the
// prompt's keys/values once per prompt, kp, vp (nkv, B, L, hd); the generated slots per row, kn, vn
// (nkv, N, T, hd); mask additive over [prompt | slots], (N, 1, L + T) or (nkv, N, g, L + T); out (N, 1, nh, hd).
// Task (h, b) gathers the G*g queries of prompt b's rows for key head h into one (G*g, hd) block:
//   S[:, :L] = (scale Q) Kp^T   (one MKL GEMM; the eager path's same product)
//   S[r, L+t] = (scale q_r) . kn_t + mask, for each row's own slots; a slot whose mask is <= kSkipMask is
//               not multiplied: its score is the mask value, which is what dot + mask rounds to in fp32/fp64
//               for any |dot| < 1e22 (so a decode step costs its written slots, not all T)
//   P = softmax(S);  O = P[:, :L] Vp (one GEMM) + sum over the slots with P > 0 of P vn_t
// No backward: rollouts run without one (the Python side takes the eager path when a gradient is wanted).

namespace {

template <typename T>
constexpr T kSkipMask = T(-1e29);

template <typename T>
void GroupedDecode(const T* q, const T* kp, const T* vp, const T* kn, const T* vn, const T* mask, bool mask_per_head,
                   T* out, int64_t n_rows, int64_t prompts, int64_t nh, int64_t nkv, int64_t hd, int64_t len,
                   int64_t slots, T scale) {
  const int64_t group = n_rows / prompts, g = nh / nkv, rows = group * g, keys = len + slots;
  const int64_t tasks = nkv * prompts;
  const bool parallel = tasks > 1 && tasks * rows * keys * hd >= kParallelMin * 8;
#pragma omp parallel if (parallel)
  {
    std::vector<T> qb(rows * hd), s(rows * keys), ob(rows * hd);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t h = task / prompts, b = task % prompts;
      for (int64_t i = 0; i < group; ++i) {  // gather: row n = b*G + i, heads h*g .. h*g + g - 1 (contiguous)
        const T* src = q + ((b * group + i) * nh + h * g) * hd;
        T* dst = qb.data() + i * g * hd;
        for (int64_t e = 0; e < g * hd; ++e) dst[e] = src[e] * scale;
      }
      const T* kpb = kp + (h * prompts + b) * len * hd;
      const T* vpb = vp + (h * prompts + b) * len * hd;
      if (len > 0) Gemm(kN, kT, rows, len, hd, T(1), qb.data(), hd, kpb, hd, T(0), s.data(), keys);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = r / g, j = r % g, n = b * group + i;
        const T* m = mask_per_head ? mask + ((h * n_rows + n) * g + j) * keys : mask + n * keys;
        T* sr = s.data() + r * keys;
        for (int64_t l = 0; l < len; ++l) sr[l] += m[l];
        const T* qr = qb.data() + r * hd;
        const T* knr = kn + (h * n_rows + n) * slots * hd;
        for (int64_t t = 0; t < slots; ++t) {
          const T mt = m[len + t];
          if (mt <= kSkipMask<T>) {
            sr[len + t] = mt;
            continue;
          }
          const T* kt = knr + t * hd;
          T dot = 0;
#pragma omp simd reduction(+ : dot)
          for (int64_t e = 0; e < hd; ++e) dot += qr[e] * kt[e];
          sr[len + t] = dot + mt;
        }
      }
      SoftmaxRows(s.data(), s.data(), rows, keys);  // serial here: nested inside this region
      if (len > 0) Gemm(kN, kN, rows, hd, len, T(1), s.data(), keys, vpb, hd, T(0), ob.data(), hd);
      else std::fill(ob.begin(), ob.end(), T(0));
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = r / g, j = r % g, n = b * group + i;
        const T* pr = s.data() + r * keys + len;
        const T* vnr = vn + (h * n_rows + n) * slots * hd;
        T* o = ob.data() + r * hd;
        for (int64_t t = 0; t < slots; ++t) {
          const T p = pr[t];
          if (p == T(0)) continue;
          const T* vt = vnr + t * hd;
#pragma omp simd
          for (int64_t e = 0; e < hd; ++e) o[e] += p * vt[e];
        }
        T* dst = out + (n * nh + h * g + j) * hd;
        for (int64_t e = 0; e < hd; ++e) dst[e] = o[e];
      }
    }
  }
}

}  // namespace

std::vector<paddle::Tensor> GroupedDecodeAttentionForward(const paddle::Tensor& q, const paddle::Tensor& k_prompt,
                                                          const paddle::Tensor& v_prompt, const paddle::Tensor& k_new,
                                                          const paddle::Tensor& v_new, const paddle::Tensor& mask,
                                                          float scale) {
  const char* op = "grouped_decode_attention_cpu";
  for (const paddle::Tensor* t : {&q, &k_prompt, &v_prompt, &k_new, &v_new, &mask}) {
    PD_CHECK(t->is_cpu(), op, ": CPU tensors are required");
    PD_CHECK(t->dtype() == q.dtype(), op, ": every input must have q's dtype");
  }
  PD_CHECK(q.dtype() == paddle::DataType::FLOAT32 || q.dtype() == paddle::DataType::FLOAT64, op,
           ": float32 or float64 is required");
  PD_CHECK(q.shape().size() == 4 && q.shape()[1] == 1, op, ": q must be (N, 1, heads, head_dim)");
  const int64_t n = q.shape()[0], nh = q.shape()[2], hd = q.shape()[3];
  PD_CHECK(k_prompt.shape().size() == 4 && k_prompt.shape() == v_prompt.shape() && k_prompt.shape()[3] == hd, op,
           ": k_prompt and v_prompt must both be (kv_heads, B, L, head_dim)");
  const int64_t nkv = k_prompt.shape()[0], b = k_prompt.shape()[1], len = k_prompt.shape()[2];
  PD_CHECK(nkv > 0 && nh % nkv == 0 && b > 0 && n % b == 0, op, ": heads must be a multiple of kv_heads and N of B");
  PD_CHECK(k_new.shape().size() == 4 && k_new.shape() == v_new.shape() && k_new.shape()[0] == nkv &&
               k_new.shape()[1] == n && k_new.shape()[3] == hd,
           op, ": k_new and v_new must both be (kv_heads, N, T, head_dim)");
  const int64_t slots = k_new.shape()[2], keys = len + slots, g = nh / nkv;
  const auto& ms = mask.shape();
  const bool per_head = ms.size() == 4;
  PD_CHECK((ms.size() == 3 && ms[0] == n && ms[1] == 1 && ms[2] == keys) ||
               (per_head && ms[0] == nkv && ms[1] == n && ms[2] == g && ms[3] == keys),
           op, ": mask must be (N, 1, L + T) or (kv_heads, N, heads / kv_heads, L + T)");
  auto qc = q.contiguous(), kpc = k_prompt.contiguous(), vpc = v_prompt.contiguous();
  auto knc = k_new.contiguous(), vnc = v_new.contiguous(), mc = mask.contiguous();
  auto out = paddle::empty({n, 1, nh, hd}, qc.dtype(), qc.place());
  PD_DISPATCH_FLOATING_TYPES(qc.type(), "grouped_decode_attention_cpu", ([&] {
    GroupedDecode<data_t>(qc.data<data_t>(), kpc.data<data_t>(), vpc.data<data_t>(), knc.data<data_t>(),
                          vnc.data<data_t>(), mc.data<data_t>(), per_head, out.data<data_t>(), n, b, nh, nkv, hd, len,
                          slots, static_cast<data_t>(scale));
  }));
  return {out};
}

PD_BUILD_OP(grouped_decode_attention_cpu)
    .Inputs({"Q", "KPrompt", "VPrompt", "KNew", "VNew", "Mask"})
    .Outputs({"Out"})
    .Attrs({"scale: float"})
    .SetKernelFn(PD_KERNEL(GroupedDecodeAttentionForward));
