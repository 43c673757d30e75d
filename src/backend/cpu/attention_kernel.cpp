// Fused scaled-dot-product attention in the flash-attention style: queries are processed in
// blocks, keys and values streamed in blocks, and the softmax is computed online (running max and
// running sum, rescaling the partial output when the max grows). Extra memory is O(block·D) per
// thread (plus, on the portable path, the keys transposed once), never the [Nq, Nk] score matrix
// — SD at 512x512 has Nq = Nk = 4096 per head.
//
// CPUs with AVX-512 run attention_avx512.cpp (queries in the vector lanes), CPUs with AVX2 and FMA
// its 8-lane port attention_avx2.cpp. This file is the entry point, its checks and threading, and
// the portable kernel for every other CPU: plain loops over keys transposed once per call,
// written for the compiler to vectorise.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/cpu/attention_avx2.h"
#include "backend/cpu/attention_avx512.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/vector_math.h"
#include "core/cpu_features.h"
#include "core/error.h"

namespace otter::cpu {
namespace {

constexpr int64_t kQueryBlock = 64;
constexpr int64_t kKeyBlock = 128;
constexpr int kTileRows = 4;  // query rows per call of the score / P·V loops

// s[r][j] = q[r]·k[j] for nr rows; kt points at the key block in the transposed keys [D][kt_stride].
OTTER_KERNEL void scores_portable(const float* q, int nr, const float* kt, int64_t kt_stride, int64_t D, int64_t nk,
                                  float* s) {
  for (int r = 0; r < nr; ++r) {
    float* row = s + r * kKeyBlock;
    for (int64_t j = 0; j < nk; ++j) row[j] = 0.0f;
    for (int64_t d = 0; d < D; ++d) {
      const float qd = q[r * D + d];
      const float* krow = kt + d * kt_stride;
      for (int64_t j = 0; j < nk; ++j) row[j] = std::fma(qd, krow[j], row[j]);
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

}  // namespace

Tensor attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, int heads, float scale, bool causal,
                 AttentionProducts products) {
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

  // Small problems (CLIP's 77 tokens, tiny models) run on the calling thread.
  const int64_t work = B * heads * Nq * Nk * D;
  const int threads =
      work < 64 * kParallelMinElements ? 1 : std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>(tasks)));
  if (cpu_features().avx512f) {
    // 16-bit products from one key block up: below it, converting the keys and values cost more
    // than the faster products saved (4096 queries x 77 keys: 113 GFLOP/s in f16, 130 in f32,
    // when the values were repacked by a scalar loop). bf16 products also take a short key
    // sequence once there are as many queries (the UNet's cross-attention over 77 text tokens;
    // not CLIP's 77 x 77): since the values are packed 16 dims at a time, 4096 queries x 77 keys
    // x 8 heads of 40 run at 330 GFLOP/s in bf16 against 225 in f32 (Zen 5, otter-microbench's
    // BM_Attention). f16 keeps the old rule: no CPU with AVX-512 FP16 has measured it since.
    const bool has = products == AttentionProducts::F16    ? cpu_features().avx512fp16
                     : products == AttentionProducts::BF16 ? cpu_features().avx512_bf16
                                                           : false;
    const bool long_enough = Nk >= kKeyBlock || (products == AttentionProducts::BF16 && Nq >= kKeyBlock);
    return attention_avx512(q, k, v, heads, scale, causal, threads,
                            has && long_enough ? products : AttentionProducts::F32);
  }
  if (cpu_features().avx2 && cpu_features().fma) return attention_avx2(q, k, v, heads, scale, causal, threads);
  const int64_t per_thread = 2 * kQueryBlock * D + kQueryBlock * kKeyBlock + 2 * kQueryBlock;
  Tensor scratch = Tensor::empty(Shape{threads, per_thread}, DType::F32);

  // Keys transposed once per call, keys_t[b·H + h][d][j], so the score loop runs along j.
  Tensor keys_t = Tensor::empty(Shape{B * heads, D, Nk}, DType::F32);
#pragma omp parallel for num_threads(threads)
  for (int64_t bh = 0; bh < B * heads; ++bh) {
    const int64_t b = bh / heads, h = bh % heads;
    float* kt = keys_t.f32() + bh * D * Nk;
    const float* ksrc = k.f32() + b * Nk * HD + h * D;
    for (int64_t j = 0; j < Nk; ++j)
      for (int64_t d = 0; d < D; ++d) kt[d * Nk + j] = ksrc[j * HD + d];
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

    const float* kt_head = keys_t.f32() + (b * heads + h) * D * Nk;
    const int64_t key_end = causal ? std::min(Nk, q0 + nq) : Nk;
    for (int64_t k0 = 0; k0 < key_end; k0 += kKeyBlock) {
      const int64_t nk = std::min(kKeyBlock, key_end - k0);
      const float* vsrc = v.f32() + (b * Nk + k0) * HD + h * D;
      for (int64_t r0 = 0; r0 < nq; r0 += kTileRows) {
        const int nr = static_cast<int>(std::min<int64_t>(kTileRows, nq - r0));
        scores_portable(qs + r0 * D, nr, kt_head + k0, Nk, D, nk, s + r0 * kKeyBlock);
        for (int r = 0; r < nr; ++r) {
          float* row = s + (r0 + r) * kKeyBlock;
          if (causal)
            for (int64_t j = 0; j < nk; ++j)
              if (k0 + j > q0 + r0 + r) row[j] = kNegInf;
          online_softmax_row_portable(row, nk, o + (r0 + r) * D, D, m[r0 + r], l[r0 + r]);
        }
        pv_portable(s + r0 * kKeyBlock, nr, nk, vsrc, HD, o + r0 * D, D);
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
