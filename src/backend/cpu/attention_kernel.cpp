// Fused scaled-dot-product attention in the flash-attention style: queries are processed in
// blocks, keys and values streamed in blocks, and the softmax is computed online (running max and
// running sum, rescaling the partial output when the max grows). Extra memory is O(block·D) per
// thread, never the [Nq, Nk] score matrix — SD at 512x512 has Nq = Nk = 4096 per head.
//
// Keys are transposed once per call into [B·H][D][Nk'] (Nk' = Nk rounded up to 32, zero padded),
// not once per query block: with SD's 64 query blocks per head, re-transposing them per block cost
// a quarter of the kernel's time. The two products (Q·K^T and P·V) run in register tiles of up to
// eight query rows: with AVX-512 each key (or value) vector loaded feeds eight FMAs. Other CPUs use
// the portable loops.
// GCC 12 warns about its own AVX-512 intrinsic headers (a known false positive on the
// reduce/extract helpers); the intrinsics are used as documented.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/cpu/kernels.h"
#include "backend/cpu/vector_math.h"
#include "core/cpu_features.h"
#include "core/error.h"

namespace otter::cpu {
namespace {

// Register tiles are arrays of vectors indexed by compile-time loops; unless those loops are
// unrolled GCC keeps the arrays on the stack (measured: 2.6x slower P·V).
#define OTTER_UNROLL _Pragma("GCC unroll 8")

constexpr int64_t kQueryBlock = 64;
constexpr int64_t kKeyBlock = 128;
constexpr int kTileRows = 8;
constexpr int64_t kKeyPad = 32;  // the score tile's width: packed keys are padded to it
static_assert(kKeyBlock % kKeyPad == 0, "key blocks must start on a padded tile");
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---- portable kernels ----

// s[r][j] = q[r]·k[j] for nr rows; kt points at the key block's first tile of packed keys
// ([tile][D][kKeyPad], see attention()).
OTTER_KERNEL void scores_portable(const float* q, int nr, const float* kt, int64_t D, int64_t nk, float* s) {
  for (int r = 0; r < nr; ++r) {
    float* row = s + r * kKeyBlock;
    for (int64_t j = 0; j < nk; ++j) row[j] = 0.0f;
    for (int64_t d = 0; d < D; ++d) {
      const float qd = q[r * D + d];
      for (int64_t j = 0; j < nk; ++j)
        row[j] = std::fma(qd, kt[(j / kKeyPad * D + d) * kKeyPad + j % kKeyPad], row[j]);
    }
  }
}

// o[r] += sum_j p[r][j] · v[j] for nr rows.
OTTER_KERNEL void pv_portable(const float* p, int nr, int64_t nk, const float* v, int64_t v_stride, float* o,
                              int64_t D) {
  for (int r = 0; r < nr; ++r)
    for (int64_t j = 0; j < nk; ++j) {
      const float pj = p[r * kKeyBlock + j];
      const float* vrow = v + j * v_stride;
      for (int64_t d = 0; d < D; ++d) o[r * D + d] = std::fma(pj, vrow[d], o[r * D + d]);
    }
}

// ---- AVX-512 register tiles ----

__attribute__((target("avx512f"))) inline __mmask16 lanes(int64_t count) {
  return count >= 16 ? static_cast<__mmask16>(0xFFFF) : count <= 0 ? 0 : static_cast<__mmask16>((1u << count) - 1);
}

// Whole 32-key chunks: the packed keys are zero past Nk (and s has room), so no masks are needed;
// the softmax reads only the first nk scores.
template <int NR>
__attribute__((target("avx512f"))) void scores_avx512_tile(const float* q, const float* kt, int64_t D, int64_t nk,
                                                           float* s) {
  for (int64_t j = 0; j < nk; j += kKeyPad) {
    __m512 acc[NR][2];
    OTTER_UNROLL for (int r = 0; r < NR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; ++d) {
      const float* krow = kt + (j / kKeyPad * D + d) * kKeyPad;
      const __m512 k0 = _mm512_loadu_ps(krow), k1 = _mm512_loadu_ps(krow + 16);
      OTTER_UNROLL for (int r = 0; r < NR; ++r) {
        const __m512 qb = _mm512_set1_ps(q[r * D + d]);
        acc[r][0] = _mm512_fmadd_ps(qb, k0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(qb, k1, acc[r][1]);
      }
    }
    OTTER_UNROLL for (int r = 0; r < NR; ++r) {
      _mm512_storeu_ps(s + r * kKeyBlock + j, acc[r][0]);
      _mm512_storeu_ps(s + r * kKeyBlock + j + 16, acc[r][1]);
    }
  }
}

// One pass over NV vectors (16·NV outputs, the last one masked by m_last) of NR rows. NR and NV
// are compile-time so the accumulators stay in registers (8 rows x 3 vectors + 3 values + 1
// broadcast fit the 32); runtime vector counts made GCC spill them to the stack.
template <int NR, int NV>
__attribute__((target("avx512f"))) void pv_avx512_pass(const float* p, int64_t nk, const float* v, int64_t v_stride,
                                                       float* o, int64_t D, __mmask16 m_last) {
  __mmask16 m[NV];
  OTTER_UNROLL for (int c = 0; c < NV; ++c) m[c] = c == NV - 1 ? m_last : static_cast<__mmask16>(0xFFFF);
  __m512 acc[NR][NV];
  OTTER_UNROLL for (int r = 0; r < NR; ++r)
    OTTER_UNROLL for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_maskz_loadu_ps(m[c], o + r * D + 16 * c);
  for (int64_t j = 0; j < nk; ++j) {
    const float* vrow = v + j * v_stride;
    __m512 vv[NV];
    OTTER_UNROLL for (int c = 0; c < NV; ++c) vv[c] = _mm512_maskz_loadu_ps(m[c], vrow + 16 * c);
    OTTER_UNROLL for (int r = 0; r < NR; ++r) {
      const __m512 pb = _mm512_set1_ps(p[r * kKeyBlock + j]);
      OTTER_UNROLL for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_fmadd_ps(pb, vv[c], acc[r][c]);
    }
  }
  OTTER_UNROLL for (int r = 0; r < NR; ++r)
    OTTER_UNROLL for (int c = 0; c < NV; ++c) _mm512_mask_storeu_ps(o + r * D + 16 * c, m[c], acc[r][c]);
}

// Up to three vectors (48 outputs) per pass: SD1's head size 40 takes one pass, 64 two.
template <int NR>
__attribute__((target("avx512f"))) void pv_avx512_tile(const float* p, int64_t nk, const float* v, int64_t v_stride,
                                                       float* o, int64_t D) {
  for (int64_t d0 = 0; d0 < D; d0 += 48) {
    const int64_t left = D - d0;
    const __mmask16 m_last = lanes(left >= 48 ? 16 : left - (left - 1) / 16 * 16);
    switch (std::min<int64_t>(3, (left + 15) / 16)) {
      case 3: pv_avx512_pass<NR, 3>(p, nk, v + d0, v_stride, o + d0, D, m_last); break;
      case 2: pv_avx512_pass<NR, 2>(p, nk, v + d0, v_stride, o + d0, D, m_last); break;
      default: pv_avx512_pass<NR, 1>(p, nk, v + d0, v_stride, o + d0, D, m_last); break;
    }
  }
}

// Tiles of 8 rows; a tail of fewer rows runs as 4 + 2 + 1.
void scores_avx512(const float* q, int nr, const float* kt, int64_t D, int64_t nk, float* s) {
  for (int r0 = 0; r0 < nr;) {
    const int left = nr - r0, rows = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
    const float* qr = q + r0 * D;
    float* sr = s + r0 * kKeyBlock;
    switch (rows) {
      case 8: scores_avx512_tile<8>(qr, kt, D, nk, sr); break;
      case 4: scores_avx512_tile<4>(qr, kt, D, nk, sr); break;
      case 2: scores_avx512_tile<2>(qr, kt, D, nk, sr); break;
      default: scores_avx512_tile<1>(qr, kt, D, nk, sr); break;
    }
    r0 += rows;
  }
}

void pv_avx512(const float* p, int nr, int64_t nk, const float* v, int64_t v_stride, float* o, int64_t D) {
  for (int r0 = 0; r0 < nr;) {
    const int left = nr - r0, rows = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
    const float* pr = p + r0 * kKeyBlock;
    float* orow = o + r0 * D;
    switch (rows) {
      case 8: pv_avx512_tile<8>(pr, nk, v, v_stride, orow, D); break;
      case 4: pv_avx512_tile<4>(pr, nk, v, v_stride, orow, D); break;
      case 2: pv_avx512_tile<2>(pr, nk, v, v_stride, orow, D); break;
      default: pv_avx512_tile<1>(pr, nk, v, v_stride, orow, D); break;
    }
    r0 += rows;
  }
}

// Online-softmax update of one query row: turns scores s[0..nk) into unnormalised probabilities
// against the new running max (zeros for a fully masked block), rescales the row's partial
// output o and running sum l by exp(old max - new max).
OTTER_KERNEL void online_softmax_row_portable(float* s, int64_t nk, float* o, int64_t D, float& m, float& l) {
  float block_max = kNegInf;
  for (int64_t j = 0; j < nk; ++j) block_max = s[j] > block_max ? s[j] : block_max;
  if (block_max == kNegInf) {
    for (int64_t j = 0; j < nk; ++j) s[j] = 0.0f;
    return;
  }
  const float m_new = std::fmax(m, block_max);
  const float correction = fast_exp(m - m_new);  // 0 on the first block (m = -inf)
  for (int64_t j = 0; j < nk; ++j) s[j] = fast_exp(s[j] - m_new);  // kept apart from the sum so it vectorises
  float sum = 0.0f;
  for (int64_t j = 0; j < nk; ++j) sum += s[j];
  l = l * correction + sum;
  m = m_new;
  for (int64_t d = 0; d < D; ++d) o[d] *= correction;
}

// fast_exp (vector_math.h) sixteen lanes at a time.
__attribute__((target("avx512f"))) inline __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
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
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

__attribute__((target("avx512f"))) void online_softmax_row_avx512(float* s, int64_t nk, float* o, int64_t D, float& m,
                                                                  float& l) {
  __m512 vmax = _mm512_set1_ps(kNegInf);
  for (int64_t j = 0; j < nk; j += 16)
    vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(_mm512_set1_ps(kNegInf), lanes(nk - j), s + j));
  const float block_max = _mm512_reduce_max_ps(vmax);
  if (block_max == kNegInf) {
    for (int64_t j = 0; j < nk; ++j) s[j] = 0.0f;
    return;
  }
  const float m_new = std::fmax(m, block_max);
  const float correction = m == kNegInf ? 0.0f : fast_exp(m - m_new);
  const __m512 vm = _mm512_set1_ps(m_new);
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t j = 0; j < nk; j += 16) {
    const __mmask16 mask = lanes(nk - j);
    const __m512 p = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, s + j), vm));
    _mm512_mask_storeu_ps(s + j, mask, p);
    vsum = _mm512_mask_add_ps(vsum, mask, vsum, p);
  }
  l = l * correction + _mm512_reduce_add_ps(vsum);
  m = m_new;
  const __m512 vc = _mm512_set1_ps(correction);
  for (int64_t d = 0; d < D; d += 16) {
    const __mmask16 mask = lanes(D - d);
    _mm512_mask_storeu_ps(o + d, mask, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, o + d), vc));
  }
}

}  // namespace

Tensor attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, int heads, float scale, bool causal) {
  OTTER_CHECK(q_in.rank() == 3 && k_in.rank() == 3 && v_in.rank() == 3,
              "attention needs q, k, v as [B, N, H*D], got ", q_in.describe(), ", ", k_in.describe(), ", ",
              v_in.describe());
  const int64_t B = q_in.dim(0), Nq = q_in.dim(1), Nk = k_in.dim(1), HD = q_in.dim(2);
  OTTER_CHECK(k_in.dim(0) == B && v_in.dim(0) == B && k_in.dim(2) == HD && v_in.dim(2) == HD && v_in.dim(1) == Nk,
              "attention: q ", q_in.describe(), " k ", k_in.describe(), " v ", v_in.describe(), " do not agree");
  OTTER_CHECK(heads > 0 && HD % heads == 0, "attention: ", HD, " channels do not split into ", heads, " heads");
  const int64_t D = HD / heads;
  const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  Tensor out = Tensor::empty(Shape{B, Nq, HD}, DType::F32);
  const int64_t q_blocks = (Nq + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = B * heads * q_blocks;
  const bool avx512 = cpu_features().avx512f;
  const auto scores = avx512 ? scores_avx512 : scores_portable;
  const auto pv = avx512 ? pv_avx512 : pv_portable;
  const auto online_softmax_row = avx512 ? online_softmax_row_avx512 : online_softmax_row_portable;

  // Small problems (CLIP's 77 tokens, tiny models) run on the calling thread.
  const int64_t work = B * heads * Nq * Nk * D;
  const int threads =
      work < 64 * kParallelMinElements ? 1 : std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>(tasks)));
  const int64_t per_thread = 2 * kQueryBlock * D + kQueryBlock * kKeyBlock + 2 * kQueryBlock;
  Tensor scratch = Tensor::empty(Shape{threads, per_thread}, DType::F32);

  // Keys transposed once, in tiles of kKeyPad keys: keys_t[b·H + h][tile][d][j], zero past Nk. A
  // tile's D rows are contiguous (5 KiB for D = 40); rows a whole key-row apart (16 KiB at
  // Nk = 4096) all fell into one L1 set and thrashed it.
  const int64_t tiles = (Nk + kKeyPad - 1) / kKeyPad, head_size = tiles * D * kKeyPad;
  Tensor keys_t = Tensor::empty(Shape{B * heads, head_size}, DType::F32);
#pragma omp parallel for num_threads(threads)
  for (int64_t bh = 0; bh < B * heads; ++bh) {
    const int64_t b = bh / heads, h = bh % heads;
    float* kt = keys_t.f32() + bh * head_size;
    const float* ksrc = k.f32() + b * Nk * HD + h * D;
    std::fill(kt + (tiles - 1) * D * kKeyPad, kt + head_size, 0.0f);
    for (int64_t t = 0; t < tiles; ++t)
      for (int64_t d = 0; d < D; ++d)
        for (int64_t j = t * kKeyPad; j < std::min(Nk, (t + 1) * kKeyPad); ++j)
          kt[(t * D + d) * kKeyPad + j % kKeyPad] = ksrc[j * HD + d];
  }

#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t task = 0; task < tasks; ++task) {
    float* qs = scratch.f32() + omp_get_thread_num() * per_thread;  // [kQueryBlock][D] scaled queries
    float* s = qs + kQueryBlock * D;                                 // [kQueryBlock][kKeyBlock] scores
    float* o = s + kQueryBlock * kKeyBlock;                          // [kQueryBlock][D] running output
    float* m = o + kQueryBlock * D;                                  // running max per row
    float* l = m + kQueryBlock;                                      // running sum per row

    const int64_t qb = task % q_blocks, h = (task / q_blocks) % heads, b = task / (q_blocks * heads);
    const int64_t q0 = qb * kQueryBlock, nq = std::min(kQueryBlock, Nq - q0);
    const float* qsrc = q.f32() + (b * Nq + q0) * HD + h * D;
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t d = 0; d < D; ++d) qs[i * D + d] = qsrc[i * HD + d] * scale;
    std::fill(o, o + nq * D, 0.0f);
    std::fill(m, m + nq, kNegInf);
    std::fill(l, l + nq, 0.0f);

    const float* kt_head = keys_t.f32() + (b * heads + h) * head_size;
    const int64_t key_end = causal ? std::min(Nk, q0 + nq) : Nk;
    for (int64_t k0 = 0; k0 < key_end; k0 += kKeyBlock) {
      const int64_t nk = std::min(kKeyBlock, key_end - k0);
      const float* vsrc = v.f32() + (b * Nk + k0) * HD + h * D;
      for (int64_t r0 = 0; r0 < nq; r0 += kTileRows) {
        const int nr = static_cast<int>(std::min<int64_t>(kTileRows, nq - r0));
        scores(qs + r0 * D, nr, kt_head + k0 * D, D, nk, s + r0 * kKeyBlock);
        for (int r = 0; r < nr; ++r) {
          float* row = s + (r0 + r) * kKeyBlock;
          if (causal)
            for (int64_t j = 0; j < nk; ++j)
              if (k0 + j > q0 + r0 + r) row[j] = kNegInf;
          online_softmax_row(row, nk, o + (r0 + r) * D, D, m[r0 + r], l[r0 + r]);
        }
        pv(s + r0 * kKeyBlock, nr, nk, vsrc, HD, o + r0 * D, D);
      }
    }
    float* dst = out.f32() + (b * Nq + q0) * HD + h * D;
    for (int64_t i = 0; i < nq; ++i) {
      const float inv = 1.0f / l[i];
      for (int64_t d = 0; d < D; ++d) dst[i * HD + d] = o[i * D + d] * inv;
    }
  }
  return out;
}

}  // namespace otter::cpu
