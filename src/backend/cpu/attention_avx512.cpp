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
// O(64·(D + 128)) per thread, never the [Nq, Nk] score matrix. Under --precision f16 and bf16 the
// two products run on 16-bit operands at twice the rate (see "f16 products" and "bf16 products").
#if defined(__GNUC__) && !defined(__clang__)  // GCC's warning names; clang has no such false positive
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's false positive in its AVX-512 headers
#pragma GCC diagnostic ignored "-Wuninitialized"        // (the same, for the f16 conversions)
#endif
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "backend/cpu/attention_avx512.h"
#include "backend/cpu/attention_tiles.h"
#include "backend/cpu/kernels.h"

namespace otter::cpu {
namespace {

constexpr int kLanes = 16;
constexpr int kVecs = 4;                     // query vectors per task
constexpr int64_t kQueries = kLanes * kVecs;  // 64 queries per task
constexpr int64_t kKeys = 128;                // keys per block
constexpr int kTile = 6;                      // keys (scores) or value dims (P·V) per register tile

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

void scores_block(const float* qt, const float* k, int64_t k_stride, int64_t D, int64_t nk, float* s) {
  for_tiles<kTile>(nk, [&](auto nj, int64_t j) {
    scores_tile<decltype(nj)::value>(qt, k + j * k_stride, k_stride, D, s + j * kQueries);
  });
}

void pv_block(const float* p, int64_t nk, const float* v, int64_t v_stride, int64_t D, float* ot) {
  for_tiles<kTile>(D, [&](auto nd, int64_t d) {
    pv_tile<decltype(nd)::value>(p, nk, v + d, v_stride, ot + d * kQueries);
  });
}

// ---- f16 products (--precision f16 on CPUs with AVX-512 FP16) ----
// The same tasks and f32 online softmax; the two products take f16 operands two at a time, as the
// f16 matmul does (half_gemm.h): each 32-bit broadcast carries a pair of terms — two head dims of a
// key for Q·Kᵀ, one dim of two keys' values for P·V — against vectors of 16 queries x that pair,
// so each accumulator lane sums every other term of one query at twice the f32 rate. The pairs are
// added in f32 at write-out. Q·Kᵀ sums D/2 products per lane in f16, P·V a block's 64 key pairs;
// the running output stays f32.

#define OTTER_F16_TARGET __attribute__((target("avx512f,avx512bw,avx512fp16")))

// 32 f16 lanes (16 queries x a pair of terms) -> the 16 queries' sums in f32, in query order.
OTTER_F16_TARGET inline __m512 pair_sums(__m512h acc) {
  const __m512i bits = _mm512_castph_si512(acc);
  const __m512 lo = _mm512_cvtph_ps(_mm512_castsi512_si256(bits));        // queries 0-7, two terms each
  const __m512 hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(bits, 1));  // queries 8-15
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  return _mm512_add_ps(_mm512_permutex2var_ps(lo, even, hi), _mm512_permutex2var_ps(lo, odd, hi));
}

OTTER_F16_TARGET inline __m512h broadcast_pair(const uint16_t* p) {
  int32_t pair;
  std::memcpy(&pair, p, sizeof(pair));
  return _mm512_castsi512_ph(_mm512_set1_epi32(pair));
}

// s[j][0..63] = Σ_d k[j][d] · q[d][0..63] for NJ keys; qp: the task's queries as [D/2][64][2]
// (pairs of dims per query), k: f16 key rows `k_stride` apart.
template <int NJ>
OTTER_F16_TARGET void scores_tile_f16(const uint16_t* qp, const uint16_t* k, int64_t k_stride, int64_t d_pairs,
                                      float* s) {
  __m512h acc[NJ][kVecs];
  OTTER_UNROLL for (int i = 0; i < NJ; ++i) OTTER_UNROLL for (int v = 0; v < kVecs; ++v) acc[i][v] =
      _mm512_setzero_ph();
  for (int64_t dp = 0; dp < d_pairs; ++dp) {
    __m512h q[kVecs];
    OTTER_UNROLL for (int v = 0; v < kVecs; ++v) q[v] = _mm512_loadu_ph(qp + (dp * kQueries + v * kLanes) * 2);
    OTTER_UNROLL for (int i = 0; i < NJ; ++i) {
      const __m512h kb = broadcast_pair(k + i * k_stride + 2 * dp);
      OTTER_UNROLL for (int v = 0; v < kVecs; ++v) acc[i][v] = _mm512_fmadd_ph(kb, q[v], acc[i][v]);
    }
  }
  OTTER_UNROLL for (int i = 0; i < NJ; ++i) OTTER_UNROLL for (int v = 0; v < kVecs; ++v)
      _mm512_storeu_ps(s + i * kQueries + v * kLanes, pair_sums(acc[i][v]));
}

// ot[d][0..63] += Σ_j v[j][d] · p[j][0..63] for ND dims; pp: probabilities as [key pairs][64][2],
// vp: the values as [key pairs][D][2] at the block's first pair and dimension d.
template <int ND>
OTTER_F16_TARGET void pv_tile_f16(const uint16_t* pp, int64_t key_pairs, const uint16_t* vp, int64_t D, float* ot) {
  __m512h acc[ND][kVecs];
  OTTER_UNROLL for (int i = 0; i < ND; ++i) OTTER_UNROLL for (int c = 0; c < kVecs; ++c) acc[i][c] =
      _mm512_setzero_ph();
  for (int64_t jp = 0; jp < key_pairs; ++jp) {
    __m512h pj[kVecs];
    OTTER_UNROLL for (int c = 0; c < kVecs; ++c) pj[c] = _mm512_loadu_ph(pp + (jp * kQueries + c * kLanes) * 2);
    OTTER_UNROLL for (int i = 0; i < ND; ++i) {
      const __m512h vb = broadcast_pair(vp + (jp * D + i) * 2);
      OTTER_UNROLL for (int c = 0; c < kVecs; ++c) acc[i][c] = _mm512_fmadd_ph(vb, pj[c], acc[i][c]);
    }
  }
  OTTER_UNROLL for (int i = 0; i < ND; ++i) OTTER_UNROLL for (int c = 0; c < kVecs; ++c) {
    float* o = ot + i * kQueries + c * kLanes;
    _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), pair_sums(acc[i][c])));
  }
}

void scores_block_f16(const uint16_t* qp, const uint16_t* k, int64_t k_stride, int64_t D, int64_t nk, float* s) {
  for_tiles<kTile>(nk, [&](auto nj, int64_t j) {
    scores_tile_f16<decltype(nj)::value>(qp, k + j * k_stride, k_stride, D / 2, s + j * kQueries);
  });
}

void pv_block_f16(const uint16_t* pp, int64_t nk, const uint16_t* vp, int64_t D, float* ot) {
  for_tiles<kTile>(D, [&](auto nd, int64_t d) {
    pv_tile_f16<decltype(nd)::value>(pp, (nk + 1) / 2, vp + d * 2, D, ot + d * kQueries);
  });
}

// ---- bf16 products (--precision bf16 on CPUs with AVX-512 BF16) ----
// The f16 products' layout (pairs of terms per 32-bit broadcast, queries x pairs in the vectors) on
// vdpbf16ps, which adds each pair's two products into an f32 lane itself: the accumulators are the
// 16 queries' f32 sums, in query order, with no pair sums at write-out and no f16 range limit.

#define OTTER_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

OTTER_BF16_TARGET inline __m512bh broadcast_pair_bf16(const uint16_t* p) {
  int32_t pair;
  std::memcpy(&pair, p, sizeof(pair));
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(pair));
}

OTTER_BF16_TARGET inline __m512bh load_bf16(const uint16_t* p) {
  return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p));
}

// As scores_tile_f16, with qp and k in bf16.
template <int NJ>
OTTER_BF16_TARGET void scores_tile_bf16(const uint16_t* qp, const uint16_t* k, int64_t k_stride, int64_t d_pairs,
                                       float* s) {
  __m512 acc[NJ][kVecs];
  OTTER_UNROLL for (int i = 0; i < NJ; ++i) OTTER_UNROLL for (int v = 0; v < kVecs; ++v) acc[i][v] =
      _mm512_setzero_ps();
  for (int64_t dp = 0; dp < d_pairs; ++dp) {
    __m512bh q[kVecs];
    OTTER_UNROLL for (int v = 0; v < kVecs; ++v) q[v] = load_bf16(qp + (dp * kQueries + v * kLanes) * 2);
    OTTER_UNROLL for (int i = 0; i < NJ; ++i) {
      const __m512bh kb = broadcast_pair_bf16(k + i * k_stride + 2 * dp);
      OTTER_UNROLL for (int v = 0; v < kVecs; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], kb, q[v]);
    }
  }
  OTTER_UNROLL for (int i = 0; i < NJ; ++i) OTTER_UNROLL for (int v = 0; v < kVecs; ++v)
      _mm512_storeu_ps(s + i * kQueries + v * kLanes, acc[i][v]);
}

// As pv_tile_f16, with pp and vp in bf16; the running output is the accumulators' start.
template <int ND>
OTTER_BF16_TARGET void pv_tile_bf16(const uint16_t* pp, int64_t key_pairs, const uint16_t* vp, int64_t D, float* ot) {
  __m512 acc[ND][kVecs];
  OTTER_UNROLL for (int i = 0; i < ND; ++i) OTTER_UNROLL for (int c = 0; c < kVecs; ++c) acc[i][c] =
      _mm512_loadu_ps(ot + i * kQueries + c * kLanes);
  for (int64_t jp = 0; jp < key_pairs; ++jp) {
    __m512bh pj[kVecs];
    OTTER_UNROLL for (int c = 0; c < kVecs; ++c) pj[c] = load_bf16(pp + (jp * kQueries + c * kLanes) * 2);
    OTTER_UNROLL for (int i = 0; i < ND; ++i) {
      const __m512bh vb = broadcast_pair_bf16(vp + (jp * D + i) * 2);
      OTTER_UNROLL for (int c = 0; c < kVecs; ++c) acc[i][c] = _mm512_dpbf16_ps(acc[i][c], vb, pj[c]);
    }
  }
  OTTER_UNROLL for (int i = 0; i < ND; ++i) OTTER_UNROLL for (int c = 0; c < kVecs; ++c)
      _mm512_storeu_ps(ot + i * kQueries + c * kLanes, acc[i][c]);
}

void scores_block_bf16(const uint16_t* qp, const uint16_t* k, int64_t k_stride, int64_t D, int64_t nk, float* s) {
  for_tiles<kTile>(nk, [&](auto nj, int64_t j) {
    scores_tile_bf16<decltype(nj)::value>(qp, k + j * k_stride, k_stride, D / 2, s + j * kQueries);
  });
}

void pv_block_bf16(const uint16_t* pp, int64_t nk, const uint16_t* vp, int64_t D, float* ot) {
  for_tiles<kTile>(D, [&](auto nd, int64_t d) {
    pv_tile_bf16<decltype(nd)::value>(pp, (nk + 1) / 2, vp + d * 2, D, ot + d * kQueries);
  });
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

// ---- 16-bit pairs of rows (both formats) ----
// Two rows of 16 queries as one vector of 16-bit pairs, rounded to nearest even: lane 2q holds
// a's query q, lane 2q+1 b's. One body for both formats; the f16 instance holds no bf16
// instruction (and every CPU with AVX-512 FP16 has AVX-512 BF16 too).
template <bool kBF16>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline __m512i row_pairs(__m512 a, __m512 b) {
  alignas(64) static constexpr int16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                          8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  __m512i both;  // a in lanes 0-15, b in 16-31
  if constexpr (kBF16) {
    both = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(b, a));
  } else {
    both = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT)),
                              _mm512_cvtps_ph(b, _MM_FROUND_TO_NEAREST_INT), 1);
  }
  return _mm512_permutexvar_epi16(_mm512_load_si512(kInterleave), both);
}

// Rows of a [rows][64] f32 block as 16-bit pairs [rows/2][64][2] (row r's query q at lane 2q of
// pair r/2, row r+1's at 2q+1; a missing odd last row is 0): the task's transposed queries
// qt[d][q] for Q·Kᵀ.
template <bool kBF16>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void pair_rows(const float* s, int64_t nk, uint16_t* pp) {
  for (int64_t j = 0; j < nk; j += 2)
    for (int c = 0; c < kVecs; ++c) {
      const __m512 a = _mm512_loadu_ps(s + j * kQueries + c * kLanes);
      const __m512 b = j + 1 < nk ? _mm512_loadu_ps(s + (j + 1) * kQueries + c * kLanes) : _mm512_setzero_ps();
      _mm512_storeu_si512(pp + ((j / 2) * kQueries + c * kLanes) * 2, row_pairs<kBF16>(a, b));
    }
}

// ---- the softmax for 16-bit products ----
// 2^x for x <= 0 to about 3e-6 relative error (a degree-4 fit of 2^r on [-1/2, 1/2], its
// coefficients rounded to float: 2.7e-6 at most): the probabilities it feeds P·V are rounded to 8
// (bf16) or 11 (f16) significant bits, steps of 3.9e-3 and 4.9e-4, so exp512_nonpositive's 1e-7
// is spent on bits that are then dropped. The scores come in base 2 (the queries carry log2(e)),
// so the range reduction is one subtraction: 8 vector ops where exp512_nonpositive takes 11, a
// fifth of a 16-bit attention's softmax at SD1's 40 head dims. -inf (masked scores) is clamped to
// -127, whose 2^x is 0 in the sums to float precision.
__attribute__((target("avx512f"))) inline __m512 exp2_nonpositive_approx(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-127.0f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_sub_ps(x, n);  // in [-1/2, 1/2], exact
  __m512 p = _mm512_set1_ps(0.00957010175f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.0559178603f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.240247448f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.693121815f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.999999261f));
  return _mm512_scalef_ps(p, n);
}

// softmax_block for 16-bit products: scores in base 2 (see exp2_nonpositive_approx), and each pair
// of probability rows goes straight to 16-bit pairs in pp (row_pairs; the f32 probabilities are
// not stored and read back).
template <bool kBF16>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void softmax_pairs(const float* s, int64_t nk, float* m,
                                                                        float* l, float* ot, int64_t D, uint16_t* pp) {
  OTTER_UNROLL for (int c = 0; c < kVecs; ++c) {
    const __m512 m_old = _mm512_loadu_ps(m + c * kLanes);
    __m512 mx = m_old;
    for (int64_t j = 0; j < nk; ++j) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + j * kQueries + c * kLanes));
    const __mmask16 live = _mm512_cmp_ps_mask(mx, _mm512_set1_ps(kNegInf), _CMP_NEQ_OQ);
    const __m512 corr =
        _mm512_mask_blend_ps(live, _mm512_set1_ps(1.0f), exp2_nonpositive_approx(_mm512_sub_ps(m_old, mx)));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < nk; j += 2) {
      const __m512 a = _mm512_maskz_mov_ps(
          live, exp2_nonpositive_approx(_mm512_sub_ps(_mm512_loadu_ps(s + j * kQueries + c * kLanes), mx)));
      __m512 b = _mm512_setzero_ps();  // a missing odd last row is 0
      if (j + 1 < nk)
        b = _mm512_maskz_mov_ps(
            live, exp2_nonpositive_approx(_mm512_sub_ps(_mm512_loadu_ps(s + (j + 1) * kQueries + c * kLanes), mx)));
      sum = _mm512_add_ps(sum, _mm512_add_ps(a, b));
      _mm512_storeu_si512(pp + ((j / 2) * kQueries + c * kLanes) * 2, row_pairs<kBF16>(a, b));
    }
    _mm512_storeu_ps(m + c * kLanes, mx);
    _mm512_storeu_ps(l + c * kLanes, _mm512_fmadd_ps(_mm512_loadu_ps(l + c * kLanes), corr, sum));
    for (int64_t d = 0; d < D; ++d) {
      float* o = ot + d * kQueries + c * kLanes;
      _mm512_storeu_ps(o, _mm512_mul_ps(_mm512_loadu_ps(o), corr));
    }
  }
}

// ---- moving rows in and out of a task (every format) ----
// Before these were vectorised they were scalar loops a row stride apart: a 64-query task's
// transposed queries and its output took as long as the whole task's products with SD's 77 text
// tokens (cross-attention), and the values' repacking was 2.6 M scalar copies per 4096-token call.

// qt[d][i] = q[i][d] · scale for the task's nq (<= 64) queries, rows `stride` apart; lanes past
// nq are 0. A gather per 16 queries and dimension: the rows are a row stride apart.
__attribute__((target("avx512f"))) void load_queries(const float* q, int64_t stride, int64_t nq, int64_t D,
                                                     float scale, float* qt) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 s = _mm512_set1_ps(scale);
  OTTER_UNROLL for (int v = 0; v < kVecs; ++v) {
    const int64_t first = v * kLanes, count = std::clamp<int64_t>(nq - first, 0, kLanes);
    const __mmask16 live = static_cast<__mmask16>((1u << count) - 1);
    const __m512i rows = _mm512_mullo_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int>(first))),
                                            _mm512_set1_epi32(static_cast<int>(stride)));
    for (int64_t d = 0; d < D; ++d) {
      const __m512 x = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, rows, q + d, 4);
      _mm512_storeu_ps(qt + d * kQueries + first, _mm512_mul_ps(x, s));
    }
  }
}

// The task's query rows (nq rows of D floats, `stride` apart) asked into L2. The queries come from
// the projection before, whose GEMM wrote them past the cache (streaming stores), and the
// gathers of load_queries each waited on memory for 16 rows: asked for one task ahead (chunks of
// consecutive tasks go to one thread), Zen 5, bf16, 256x256 CFG step, two interleaved rounds of
// --profile-shapes: self-attention 1024x1024 d40 598-605 -> 638-650 GFLOP/s, cross-attention
// 1024x77 d40 236-240 -> 289-306, 256x256 d80 405-410 -> 420-433.
void prefetch_queries(const float* q, int64_t stride, int64_t nq, int64_t D) {
  for (int64_t i = 0; i < nq; ++i) {
    const char* row = reinterpret_cast<const char*>(q + i * stride);
    for (int64_t byte = 0; byte < D * 4; byte += 64) _mm_prefetch(row + byte, _MM_HINT_T1);
    _mm_prefetch(row + D * 4 - 1, _MM_HINT_T1);  // the row's last line, where it crosses one
  }
}

// out[i][d] = ot[d][i] / l[i] for the task's nq queries, rows `stride` apart: per query, its D
// outputs gathered 16 at a time from the transposed block (in cache) and stored as one row.
__attribute__((target("avx512f"))) void store_outputs(const float* ot, const float* l, int64_t nq, int64_t D,
                                                      float* out, int64_t stride) {
  const __m512i dims = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(static_cast<int>(kQueries)));
  for (int64_t i = 0; i < nq; ++i) {
    const __m512 inv = _mm512_set1_ps(1.0f / l[i]);
    for (int64_t d = 0; d < D; d += kLanes) {
      const int64_t n = std::min<int64_t>(kLanes, D - d);
      const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
      const __m512 x = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, dims, ot + d * kQueries + i, 4);
      _mm512_mask_storeu_ps(out + i * stride + d, m, _mm512_mul_ps(x, inv));
    }
  }
}

// One head's values as 16-bit pairs of keys, [key pairs][D][2] (key 2p's dim d at lane 2d of
// pair p, key 2p + 1's at 2d + 1; a missing odd last key is 0), converted from f32 as they are
// paired (row_pairs), 16 dims at a time.
template <bool kBF16>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void pack_values(const float* v, int64_t stride, int64_t nk,
                                                                       int64_t D, uint16_t* vp) {
  for (int64_t j = 0; j < nk; j += 2) {
    const float* a = v + j * stride;
    uint16_t* dst = vp + (j / 2) * D * 2;
    for (int64_t d = 0; d < D; d += kLanes) {
      const int64_t n = std::min<int64_t>(kLanes, D - d);
      const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
      const __m512 x = _mm512_maskz_loadu_ps(m, a + d);
      const __m512 y = j + 1 < nk ? _mm512_maskz_loadu_ps(m, a + stride + d) : _mm512_setzero_ps();
      const auto pairs = static_cast<__mmask32>((uint64_t{1} << (2 * n)) - 1);
      _mm512_mask_storeu_epi16(dst + 2 * d, pairs, row_pairs<kBF16>(x, y));
    }
  }
}

}  // namespace

__attribute__((target("avx512f"))) Tensor attention_avx512(const Tensor& q, const Tensor& k, const Tensor& v,
                                                           int heads, float scale, bool causal, int threads,
                                                           AttentionProducts products) {
  const int64_t B = q.dim(0), Nq = q.dim(1), Nk = k.dim(1), HD = q.dim(2), D = HD / heads;
  // 16-bit products (a key's dims are taken in pairs, so even head sizes only); bf: in bf16.
  const bool f16 = products != AttentionProducts::F32 && D % 2 == 0;
  const bool bf = products == AttentionProducts::BF16;
  const DType half_type = bf ? DType::BF16 : DType::F16;
  Tensor out = Tensor::empty(Shape{B, Nq, HD}, DType::F32);
  const int64_t q_blocks = (Nq + kQueries - 1) / kQueries, tasks = B * heads * q_blocks;
  const int64_t per_thread = 2 * D * kQueries + kKeys * kQueries + 2 * kQueries;
  Tensor scratch = Tensor::empty(Shape{threads, per_thread}, DType::F32);

  // 16-bit operands, converted once per call: the keys as they are (a key's dims d, d+1 are adjacent),
  // the values as [B·H][key pairs][D][2] (two keys' values of one dim adjacent), and per thread
  // the task's queries and a block's probabilities as pairs.
  const int64_t key_pairs = (Nk + 1) / 2, per_thread_f16 = D * kQueries + kKeys * kQueries;
  Tensor k16, v16, scratch16;
  if (f16) {
    k16 = k.to(half_type);
    v16 = Tensor::empty(Shape{B * heads, key_pairs, D, 2}, half_type);
    const float* src = v.f32();
    uint16_t* dst = v16.data<uint16_t>();
    // Pieces of 64 keys of one head, so short key sequences (77 text tokens) still split.
    constexpr int64_t kPiece = 64;
    const int64_t pieces = (Nk + kPiece - 1) / kPiece;
#pragma omp parallel for collapse(2) num_threads(threads)
    for (int64_t bh = 0; bh < B * heads; ++bh)
      for (int64_t piece = 0; piece < pieces; ++piece) {
        const int64_t b = bh / heads, h = bh % heads, j0 = piece * kPiece;
        (bf ? pack_values<true> : pack_values<false>)(src + (b * Nk + j0) * HD + h * D, HD,
                                                      std::min(kPiece, Nk - j0), D,
                                                      dst + (bh * key_pairs + j0 / 2) * D * 2);
      }
    scratch16 = Tensor::empty(Shape{threads, per_thread_f16}, half_type);
  }

  // Tasks go out in chunks of consecutive ones (so the next task's queries can be asked for ahead,
  // prefetch_queries), about eight chunks per thread, at most 8 tasks each.
  const int64_t chunk = std::clamp<int64_t>(tasks / (8 * threads), 1, 8);
  struct Place {
    int64_t b, h, q0, nq;  // image, head, first query, queries (<= kQueries)
  };
  auto place_of = [&](int64_t t) {
    const int64_t q0 = (t % q_blocks) * kQueries;
    return Place{t / (q_blocks * heads), (t / q_blocks) % heads, q0, std::min(kQueries, Nq - q0)};
  };
  auto queries_of = [&](const Place& at) { return q.f32() + (at.b * Nq + at.q0) * HD + at.h * D; };
#pragma omp parallel for schedule(dynamic, chunk) num_threads(threads)
  for (int64_t task = 0; task < tasks; ++task) {
    if (task + 1 < tasks) {
      const Place next = place_of(task + 1);
      prefetch_queries(queries_of(next), HD, next.nq, D);
    }
    float* qt = scratch.f32() + omp_get_thread_num() * per_thread;  // [D][64] scaled queries, transposed
    float* ot = qt + D * kQueries;                                   // [D][64] running output, transposed
    float* s = ot + D * kQueries;                                    // [kKeys][64] scores / probabilities
    float* m = s + kKeys * kQueries;                                 // running max per query
    float* l = m + kQueries;                                         // running sum per query
    uint16_t* qp = f16 ? scratch16.data<uint16_t>() + omp_get_thread_num() * per_thread_f16 : nullptr;  // [D/2][64][2]
    uint16_t* pp = f16 ? qp + D * kQueries : nullptr;  // [kKeys/2][64][2]

    const Place at = place_of(task);
    const auto [b, h, q0, nq] = at;
    const float* qsrc = queries_of(at);
    // 16-bit products take their scores in base 2 (softmax_pairs): log2(e) rides on the scale.
    const float q_scale = f16 ? scale * 1.44269504088896341f : scale;
    load_queries(qsrc, HD, nq, D, q_scale, qt);
    if (f16) (bf ? pair_rows<true> : pair_rows<false>)(qt, D, qp);
    std::fill(ot, ot + D * kQueries, 0.0f);
    std::fill(m, m + kQueries, kNegInf);
    std::fill(l, l + kQueries, 0.0f);

    const int64_t key_end = causal ? std::min(Nk, q0 + nq) : Nk;
    for (int64_t k0 = 0; k0 < key_end; k0 += kKeys) {
      const int64_t nk = std::min(kKeys, key_end - k0);
      if (f16) {
        (bf ? scores_block_bf16 : scores_block_f16)(qp, k16.data<uint16_t>() + (b * Nk + k0) * HD + h * D, HD, D, nk,
                                                    s);
      } else {
        scores_block(qt, k.f32() + (b * Nk + k0) * HD + h * D, HD, D, nk, s);
      }
      if (causal)  // key k0 + j is visible to query q0 + i only if k0 + j <= q0 + i
        for (int64_t j = 0; j < nk; ++j)
          for (int64_t i = 0; i < kQueries; ++i)
            if (k0 + j > q0 + i) s[j * kQueries + i] = kNegInf;
      if (f16) {
        // k0 is a multiple of kKeys: the block starts on a pair
        (bf ? softmax_pairs<true> : softmax_pairs<false>)(s, nk, m, l, ot, D, pp);
        (bf ? pv_block_bf16 : pv_block_f16)(pp, nk, v16.data<uint16_t>() + ((b * heads + h) * key_pairs + k0 / 2) * D * 2,
                                            D, ot);
      } else {
        softmax_block(s, nk, m, l, ot, D);
        pv_block(s, nk, v.f32() + (b * Nk + k0) * HD + h * D, HD, D, ot);
      }
    }
    store_outputs(ot, l, nq, D, out.f32() + (b * Nq + q0) * HD + h * D, HD);
  }
  return out;
}

}  // namespace otter::cpu
