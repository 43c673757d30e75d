// Fused f32 attention for CPUs with AVX2 and FMA but no AVX-512 (AMD Zen 2/3, Intel before
// Skylake-X): attention_avx512.cpp's design on 8-lane vectors. Each task takes 64 queries of one
// head, transposed so the queries run along the vector lanes, and streams keys and values past
// them in blocks of 128:
//
//   S[j][q] = Σ_d K[j][d] · Qᵀ[d][q]      (broadcast a key element, FMA into query vectors)
//   online softmax over j, per lane        (max, exp and sum are vertical: no shuffles)
//   Oᵀ[d][q] += Σ_j V[j][d] · P[j][q]      (broadcast a value element, FMA into query vectors)
//
// AVX2 has 16 vector registers, so a register tile is 6 keys (or 6 value dims) x 2 vectors of 8
// queries: 12 accumulators, 2 query loads and 6 broadcasts per 12 FMAs, and the tiles walk the
// task's four groups of 16 queries. The portable kernel (attention_kernel.cpp), which the compiler
// vectorises along the keys, ran SD's self-attention at a sixth of the convolutions' rate on Zen 3.
// Same per-thread scratch as the AVX-512 kernel (the memory plan counts that), never the
// [Nq, Nk] score matrix.
#include "backend/cpu/attention_avx2.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>

#include "backend/cpu/attention_tiles.h"
#include "backend/cpu/kernels.h"

#define OTTER_AVX2 __attribute__((target("avx2,fma")))

// A named namespace: the unity builds (asan, fuzz) compile this file in one unit with
// attention_avx512.cpp, whose anonymous namespace has the same helper names.
namespace otter::cpu::avx2 {
namespace {

constexpr int kLanes = 8;
constexpr int kGroupVecs = 2;                          // query vectors per register tile
constexpr int64_t kGroup = kLanes * kGroupVecs;        // 16 queries per tile
constexpr int64_t kQueries = 64;                       // queries per task
constexpr int kGroups = static_cast<int>(kQueries / kGroup);
constexpr int64_t kKeys = 128;                         // keys per block
constexpr int kTile = 6;                               // keys (scores) or value dims (P·V) per tile

// exp(x) for x <= 0 (score - running max): fast_exp's range reduction and degree-6 polynomial
// (vector_math.h), 2^n built in the exponent bits; -inf (masked scores) is clamped to -87.3,
// whose exp is 0 in the sums to float precision, and keeps n >= -126 (a normal 2^n).
OTTER_AVX2 inline __m256 exp256_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693145751953125f), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-1.428606765330187045e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// s[j][g..g+16) = Σ_d k[j][d] · qt[d][g..g+16) for NJ keys (k rows `k_stride` apart); qt and s
// point at the group's first query.
template <int NJ>
OTTER_AVX2 void scores_tile(const float* qt, const float* k, int64_t k_stride, int64_t D, float* s) {
  __m256 acc[NJ][kGroupVecs];
  OTTER_UNROLL for (int i = 0; i < NJ; ++i) OTTER_UNROLL for (int v = 0; v < kGroupVecs; ++v) acc[i][v] =
      _mm256_setzero_ps();
  for (int64_t d = 0; d < D; ++d) {
    __m256 q[kGroupVecs];
    OTTER_UNROLL for (int v = 0; v < kGroupVecs; ++v) q[v] = _mm256_loadu_ps(qt + d * kQueries + v * kLanes);
    OTTER_UNROLL for (int i = 0; i < NJ; ++i) {
      const __m256 kb = _mm256_broadcast_ss(k + i * k_stride + d);
      OTTER_UNROLL for (int v = 0; v < kGroupVecs; ++v) acc[i][v] = _mm256_fmadd_ps(kb, q[v], acc[i][v]);
    }
  }
  OTTER_UNROLL for (int i = 0; i < NJ; ++i) OTTER_UNROLL for (int v = 0; v < kGroupVecs; ++v)
      _mm256_storeu_ps(s + i * kQueries + v * kLanes, acc[i][v]);
}

// ot[d][g..g+16) += Σ_j v[j][d] · p[j][g..g+16) for ND value dims starting at v (rows `v_stride`
// apart); p and ot point at the group's first query.
template <int ND>
OTTER_AVX2 void pv_tile(const float* p, int64_t nk, const float* v, int64_t v_stride, float* ot) {
  __m256 acc[ND][kGroupVecs];
  OTTER_UNROLL for (int i = 0; i < ND; ++i) OTTER_UNROLL for (int c = 0; c < kGroupVecs; ++c) acc[i][c] =
      _mm256_loadu_ps(ot + i * kQueries + c * kLanes);
  for (int64_t j = 0; j < nk; ++j) {
    __m256 pj[kGroupVecs];
    OTTER_UNROLL for (int c = 0; c < kGroupVecs; ++c) pj[c] = _mm256_loadu_ps(p + j * kQueries + c * kLanes);
    OTTER_UNROLL for (int i = 0; i < ND; ++i) {
      const __m256 vb = _mm256_broadcast_ss(v + j * v_stride + i);
      OTTER_UNROLL for (int c = 0; c < kGroupVecs; ++c) acc[i][c] = _mm256_fmadd_ps(vb, pj[c], acc[i][c]);
    }
  }
  OTTER_UNROLL for (int i = 0; i < ND; ++i) OTTER_UNROLL for (int c = 0; c < kGroupVecs; ++c)
      _mm256_storeu_ps(ot + i * kQueries + c * kLanes, acc[i][c]);
}

// Query groups outermost: a group's 16 queries and scores stay in L1 while the block's keys
// (128 x D floats, 20 KB at D = 40) are broadcast from L1/L2 once per group.
void scores_block(const float* qt, const float* k, int64_t k_stride, int64_t D, int64_t nk, float* s) {
  for (int g = 0; g < kGroups; ++g)
    for_tiles<kTile>(nk, [&](auto nj, int64_t j) {
      scores_tile<decltype(nj)::value>(qt + g * kGroup, k + j * k_stride, k_stride, D, s + j * kQueries + g * kGroup);
    });
}

void pv_block(const float* p, int64_t nk, const float* v, int64_t v_stride, int64_t D, float* ot) {
  for (int g = 0; g < kGroups; ++g)
    for_tiles<kTile>(D, [&](auto nd, int64_t d) {
      pv_tile<decltype(nd)::value>(p + g * kGroup, nk, v + d, v_stride, ot + d * kQueries + g * kGroup);
    });
}

// Online softmax over the block's nk score rows, per query lane: new running max m, scores turned
// into unnormalised probabilities against it, running sum l and partial output ot rescaled by
// exp(old max - new max). A lane whose scores are all -inf so far (causal masking) keeps m = -inf,
// probabilities 0 and its sum and output untouched.
OTTER_AVX2 void softmax_block(float* s, int64_t nk, float* m, float* l, float* ot, int64_t D) {
  for (int c = 0; c < static_cast<int>(kQueries / kLanes); ++c) {
    __m256 mx = _mm256_loadu_ps(m + c * kLanes);
    const __m256 m_old = mx;
    for (int64_t j = 0; j < nk; ++j) mx = _mm256_max_ps(mx, _mm256_loadu_ps(s + j * kQueries + c * kLanes));
    const __m256 live = _mm256_cmp_ps(mx, _mm256_set1_ps(kNegInf), _CMP_NEQ_OQ);
    // exp(-inf - finite) = 0 on the first block; lanes still at -inf keep factor 1.
    const __m256 corr = _mm256_blendv_ps(_mm256_set1_ps(1.0f), exp256_nonpositive(_mm256_sub_ps(m_old, mx)), live);
    __m256 sum = _mm256_setzero_ps();
    for (int64_t j = 0; j < nk; ++j) {
      float* row = s + j * kQueries + c * kLanes;
      const __m256 p = _mm256_and_ps(live, exp256_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(row), mx)));
      _mm256_storeu_ps(row, p);
      sum = _mm256_add_ps(sum, p);
    }
    _mm256_storeu_ps(m + c * kLanes, mx);
    _mm256_storeu_ps(l + c * kLanes, _mm256_fmadd_ps(_mm256_loadu_ps(l + c * kLanes), corr, sum));
    for (int64_t d = 0; d < D; ++d) {
      float* o = ot + d * kQueries + c * kLanes;
      _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_loadu_ps(o), corr));
    }
  }
}

}  // namespace

Tensor attention_f32(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal,
                     int threads) {
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
      scores_block(qt, k.f32() + (b * Nk + k0) * HD + h * D, HD, D, nk, s);
      if (causal)  // key k0 + j is visible to query q0 + i only if k0 + j <= q0 + i
        for (int64_t j = 0; j < nk; ++j)
          for (int64_t i = 0; i < kQueries; ++i)
            if (k0 + j > q0 + i) s[j * kQueries + i] = kNegInf;
      softmax_block(s, nk, m, l, ot, D);
      pv_block(s, nk, v.f32() + (b * Nk + k0) * HD + h * D, HD, D, ot);
    }
    float* dst = out.f32() + (b * Nq + q0) * HD + h * D;
    for (int64_t i = 0; i < nq; ++i) {
      const float inv = 1.0f / l[i];
      for (int64_t d = 0; d < D; ++d) dst[i * HD + d] = ot[d * kQueries + i] * inv;
    }
  }
  return out;
}

}  // namespace otter::cpu::avx2

namespace otter::cpu {

Tensor attention_avx2(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal,
                      int threads) {
  return avx2::attention_f32(q, k, v, heads, scale, causal, threads);
}

}  // namespace otter::cpu
