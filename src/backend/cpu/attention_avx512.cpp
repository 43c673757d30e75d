// Fused attention for AVX-512 with the queries in the vector lanes: each task takes 64 queries of
// one head (four vectors of 16) and streams the keys and values past them in blocks of 128.
//
//   S[j][q] = Σ_d K[j][d] · Qᵀ[d][q]      (broadcast a key element, FMA into 4 query vectors)
//   online softmax over j, per lane        (max, exp and sum are vertical: no shuffles)
//   Oᵀ[d][q] += Σ_j V[j][d] · P[j][q]      (broadcast a value element, FMA into 4 query vectors)
//
// With the head size in the loops rather than the lanes no lane is wasted on SD1's 40 (the
// keys-in-lanes kernel padded P·V to 48), broadcasts of f32 are pure loads, and register tiles
// of 6 keys (or 6 value dims) x 4 query vectors keep 24 accumulators in registers. Extra memory:
// O(64·(D + 128)) per thread, never the [Nq, Nk] score matrix.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's false positive in its AVX-512 headers
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <limits>

#include "backend/cpu/attention_avx512.h"
#include "backend/cpu/kernels.h"

namespace otter::cpu {
namespace {

constexpr int kLanes = 16;
constexpr int kVecs = 4;                     // query vectors per task
constexpr int64_t kQueries = kLanes * kVecs;  // 64 queries per task
constexpr int64_t kKeys = 128;                // keys per block
constexpr int kTile = 6;                      // keys (scores) or value dims (P·V) per register tile
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp(x) for x <= 0 (the softmax only exponentiates score - running max): fast_exp's range
// reduction and degree-6 polynomial (vector_math.h), with the 2^n scaling done by vscalefps, which
// also needs no upper clamp here; -inf (masked scores) is clamped to -87.3, whose exp is 0 in the
// sums to float precision.
__attribute__((target("avx512f"))) inline __m512 exp512_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693145751953125f), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(-1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// s[j][0..63] = Σ_d k[j][d] · qt[d][0..63] for NJ keys (k rows `k_stride` apart).
template <int NJ>
__attribute__((target("avx512f"))) void scores_tile(const float* qt, const float* k, int64_t k_stride, int64_t D,
                                                    float* s) {
  __m512 acc[NJ][kVecs];
  OTTER_UNROLL for (int i = 0; i < NJ; ++i) OTTER_UNROLL for (int v = 0; v < kVecs; ++v) acc[i][v] =
      _mm512_setzero_ps();
  for (int64_t d = 0; d < D; ++d) {
    __m512 q[kVecs];
    OTTER_UNROLL for (int v = 0; v < kVecs; ++v) q[v] = _mm512_loadu_ps(qt + d * kQueries + v * kLanes);
    OTTER_UNROLL for (int i = 0; i < NJ; ++i) {
      const __m512 kb = _mm512_set1_ps(k[i * k_stride + d]);
      OTTER_UNROLL for (int v = 0; v < kVecs; ++v) acc[i][v] = _mm512_fmadd_ps(kb, q[v], acc[i][v]);
    }
  }
  OTTER_UNROLL for (int i = 0; i < NJ; ++i) OTTER_UNROLL for (int v = 0; v < kVecs; ++v)
      _mm512_storeu_ps(s + i * kQueries + v * kLanes, acc[i][v]);
}

// ot[d][0..63] += Σ_j v[j][d] · p[j][0..63] for ND value dims starting at v (rows `v_stride` apart).
template <int ND>
__attribute__((target("avx512f"))) void pv_tile(const float* p, int64_t nk, const float* v, int64_t v_stride,
                                                float* ot) {
  __m512 acc[ND][kVecs];
  OTTER_UNROLL for (int i = 0; i < ND; ++i) OTTER_UNROLL for (int c = 0; c < kVecs; ++c) acc[i][c] =
      _mm512_loadu_ps(ot + i * kQueries + c * kLanes);
  for (int64_t j = 0; j < nk; ++j) {
    __m512 pj[kVecs];
    OTTER_UNROLL for (int c = 0; c < kVecs; ++c) pj[c] = _mm512_loadu_ps(p + j * kQueries + c * kLanes);
    OTTER_UNROLL for (int i = 0; i < ND; ++i) {
      const __m512 vb = _mm512_set1_ps(v[j * v_stride + i]);
      OTTER_UNROLL for (int c = 0; c < kVecs; ++c) acc[i][c] = _mm512_fmadd_ps(vb, pj[c], acc[i][c]);
    }
  }
  OTTER_UNROLL for (int i = 0; i < ND; ++i) OTTER_UNROLL for (int c = 0; c < kVecs; ++c)
      _mm512_storeu_ps(ot + i * kQueries + c * kLanes, acc[i][c]);
}

__attribute__((target("avx512f"))) void scores_block(const float* qt, const float* k, int64_t k_stride, int64_t D,
                                                     int64_t nk, float* s) {
  int64_t j = 0;
  for (; j + kTile <= nk; j += kTile) scores_tile<kTile>(qt, k + j * k_stride, k_stride, D, s + j * kQueries);
  switch (nk - j) {
    case 5: scores_tile<5>(qt, k + j * k_stride, k_stride, D, s + j * kQueries); break;
    case 4: scores_tile<4>(qt, k + j * k_stride, k_stride, D, s + j * kQueries); break;
    case 3: scores_tile<3>(qt, k + j * k_stride, k_stride, D, s + j * kQueries); break;
    case 2: scores_tile<2>(qt, k + j * k_stride, k_stride, D, s + j * kQueries); break;
    case 1: scores_tile<1>(qt, k + j * k_stride, k_stride, D, s + j * kQueries); break;
    default: break;
  }
}

__attribute__((target("avx512f"))) void pv_block(const float* p, int64_t nk, const float* v, int64_t v_stride,
                                                 int64_t D, float* ot) {
  int64_t d = 0;
  for (; d + kTile <= D; d += kTile) pv_tile<kTile>(p, nk, v + d, v_stride, ot + d * kQueries);
  switch (D - d) {
    case 5: pv_tile<5>(p, nk, v + d, v_stride, ot + d * kQueries); break;
    case 4: pv_tile<4>(p, nk, v + d, v_stride, ot + d * kQueries); break;
    case 3: pv_tile<3>(p, nk, v + d, v_stride, ot + d * kQueries); break;
    case 2: pv_tile<2>(p, nk, v + d, v_stride, ot + d * kQueries); break;
    case 1: pv_tile<1>(p, nk, v + d, v_stride, ot + d * kQueries); break;
    default: break;
  }
}

// Online softmax over the block's nk score rows, per query lane: new running max m, scores turned
// into unnormalised probabilities against it, running sum l and partial output ot rescaled by
// exp(old max - new max). A lane whose scores are all -inf so far (causal masking) keeps m = -inf,
// probabilities 0 and its sum and output untouched.
__attribute__((target("avx512f"))) void softmax_block(float* s, int64_t nk, float* m, float* l, float* ot,
                                                      int64_t D) {
  OTTER_UNROLL for (int c = 0; c < kVecs; ++c) {
    __m512 mx = _mm512_loadu_ps(m + c * kLanes);
    const __m512 m_old = mx;
    for (int64_t j = 0; j < nk; ++j) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + j * kQueries + c * kLanes));
    const __mmask16 live = _mm512_cmp_ps_mask(mx, _mm512_set1_ps(kNegInf), _CMP_NEQ_OQ);
    // exp(-inf - finite) = 0 on the first block; lanes still at -inf keep factor 1.
    const __m512 corr = _mm512_mask_blend_ps(live, _mm512_set1_ps(1.0f), exp512_nonpositive(_mm512_sub_ps(m_old, mx)));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < nk; ++j) {
      float* row = s + j * kQueries + c * kLanes;
      const __m512 p = _mm512_maskz_mov_ps(live, exp512_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row), mx)));
      _mm512_storeu_ps(row, p);
      sum = _mm512_add_ps(sum, p);
    }
    _mm512_storeu_ps(m + c * kLanes, mx);
    _mm512_storeu_ps(l + c * kLanes, _mm512_fmadd_ps(_mm512_loadu_ps(l + c * kLanes), corr, sum));
    for (int64_t d = 0; d < D; ++d) {
      float* o = ot + d * kQueries + c * kLanes;
      _mm512_storeu_ps(o, _mm512_mul_ps(_mm512_loadu_ps(o), corr));
    }
  }
}

}  // namespace

__attribute__((target("avx512f"))) Tensor attention_avx512(const Tensor& q, const Tensor& k, const Tensor& v,
                                                           int heads, float scale, bool causal, int threads) {
  const int64_t B = q.dim(0), Nq = q.dim(1), Nk = k.dim(1), HD = q.dim(2), D = HD / heads;
  Tensor out = Tensor::empty(Shape{B, Nq, HD}, DType::F32);
  const int64_t q_blocks = (Nq + kQueries - 1) / kQueries, tasks = B * heads * q_blocks;
  const int64_t per_thread = 2 * D * kQueries + kKeys * kQueries + 2 * kQueries;
  Tensor scratch = Tensor::empty(Shape{threads, per_thread}, DType::F32);

#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t task = 0; task < tasks; ++task) {
    float* qt = scratch.f32() + omp_get_thread_num() * per_thread;  // [D][64] scaled queries, transposed
    float* ot = qt + D * kQueries;                                   // [D][64] running output, transposed
    float* s = ot + D * kQueries;                                    // [kKeys][64] scores / probabilities
    float* m = s + kKeys * kQueries;                                 // running max per query
    float* l = m + kQueries;                                         // running sum per query

    const int64_t qb = task % q_blocks, h = (task / q_blocks) % heads, b = task / (q_blocks * heads);
    const int64_t q0 = qb * kQueries, nq = std::min(kQueries, Nq - q0);
    const float* qsrc = q.f32() + (b * Nq + q0) * HD + h * D;
    for (int64_t d = 0; d < D; ++d)
      for (int64_t i = 0; i < kQueries; ++i) qt[d * kQueries + i] = i < nq ? qsrc[i * HD + d] * scale : 0.0f;
    std::fill(ot, ot + D * kQueries, 0.0f);
    std::fill(m, m + kQueries, kNegInf);
    std::fill(l, l + kQueries, 0.0f);

    const int64_t key_end = causal ? std::min(Nk, q0 + nq) : Nk;
    for (int64_t k0 = 0; k0 < key_end; k0 += kKeys) {
      const int64_t nk = std::min(kKeys, key_end - k0);
      const float* kb = k.f32() + (b * Nk + k0) * HD + h * D;
      const float* vb = v.f32() + (b * Nk + k0) * HD + h * D;
      scores_block(qt, kb, HD, D, nk, s);
      if (causal)  // key k0 + j is visible to query q0 + i only if k0 + j <= q0 + i
        for (int64_t j = 0; j < nk; ++j)
          for (int64_t i = 0; i < kQueries; ++i)
            if (k0 + j > q0 + i) s[j * kQueries + i] = kNegInf;
      softmax_block(s, nk, m, l, ot, D);
      pv_block(s, nk, vb, HD, D, ot);
    }
    float* dst = out.f32() + (b * Nq + q0) * HD + h * D;
    for (int64_t i = 0; i < nq; ++i) {
      const float inv = 1.0f / l[i];
      for (int64_t d = 0; d < D; ++d) dst[i * HD + d] = ot[d * kQueries + i] * inv;
    }
  }
  return out;
}

}  // namespace otter::cpu
