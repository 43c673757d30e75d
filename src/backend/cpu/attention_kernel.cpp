// Fused scaled-dot-product attention in the flash-attention style: queries are processed in
// blocks, keys and values streamed in blocks, and the softmax is computed online (running max and
// running sum, rescaling the partial output when the max grows). Extra memory is O(block·D) per
// thread, never the [Nq, Nk] score matrix — SD at 512x512 has Nq = Nk = 4096 per head.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/cpu/kernels.h"
#include "backend/cpu/vector_math.h"
#include "core/error.h"

namespace otter::cpu {
namespace {

constexpr int64_t kQueryBlock = 64;
constexpr int64_t kKeyBlock = 128;

struct Scratch {
  float* q;   // [kQueryBlock][D], pre-scaled queries
  float* kt;  // [D][kKeyBlock], keys transposed so score rows vectorise over keys
  float* s;   // [kQueryBlock][kKeyBlock] scores, then probabilities
  float* o;   // [kQueryBlock][D] running output
  float* m;   // [kQueryBlock] running max
  float* l;   // [kQueryBlock] running sum
};

OTTER_KERNEL void score_row(const float* q, const float* kt, float* s, int64_t D, int64_t nk) {
  for (int64_t j = 0; j < nk; ++j) s[j] = 0.0f;
  for (int64_t d = 0; d < D; ++d) {
    const float qd = q[d];
    const float* krow = kt + d * kKeyBlock;
    for (int64_t j = 0; j < nk; ++j) s[j] = std::fma(qd, krow[j], s[j]);
  }
}

// Online-softmax update of one query row: folds scores s[0..nk) and values v into (m, l, o).
OTTER_KERNEL void softmax_accumulate(float* s, int64_t nk, const float* v, int64_t v_stride, float* o, int64_t D,
                                     float& m, float& l) {
  float block_max = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < nk; ++j) block_max = std::fmax(block_max, s[j]);
  if (block_max == -std::numeric_limits<float>::infinity()) return;  // fully masked block
  const float m_new = std::fmax(m, block_max);
  const float correction = fast_exp(m - m_new);  // 0 on the first block (m = -inf)
  float sum = 0.0f;
  for (int64_t j = 0; j < nk; ++j) {
    s[j] = fast_exp(s[j] - m_new);
    sum += s[j];
  }
  l = l * correction + sum;
  m = m_new;
  for (int64_t d = 0; d < D; ++d) o[d] *= correction;
  for (int64_t j = 0; j < nk; ++j) {
    const float p = s[j];
    const float* vrow = v + j * v_stride;
    for (int64_t d = 0; d < D; ++d) o[d] = std::fma(p, vrow[d], o[d]);
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

  // Small problems (CLIP's 77 tokens, tiny models) run on the calling thread.
  const int64_t work = B * heads * Nq * Nk * D;
  const int threads =
      work < 64 * kParallelMinElements ? 1 : std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>(tasks)));
  const int64_t per_thread = kQueryBlock * D * 2 + D * kKeyBlock + kQueryBlock * kKeyBlock + 2 * kQueryBlock;
  Tensor scratch = Tensor::empty(Shape{threads, per_thread}, DType::F32);

#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t task = 0; task < tasks; ++task) {
    float* base = scratch.f32() + omp_get_thread_num() * per_thread;
    Scratch sc{base, base + kQueryBlock * D, base + kQueryBlock * D + D * kKeyBlock,
               base + kQueryBlock * D + D * kKeyBlock + kQueryBlock * kKeyBlock, nullptr, nullptr};
    sc.m = sc.o + kQueryBlock * D;
    sc.l = sc.m + kQueryBlock;

    const int64_t qb = task % q_blocks, h = (task / q_blocks) % heads, b = task / (q_blocks * heads);
    const int64_t q0 = qb * kQueryBlock, nq = std::min(kQueryBlock, Nq - q0);
    const float* qsrc = q.f32() + (b * Nq + q0) * HD + h * D;
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t d = 0; d < D; ++d) sc.q[i * D + d] = qsrc[i * HD + d] * scale;
    std::fill(sc.o, sc.o + nq * D, 0.0f);
    std::fill(sc.m, sc.m + nq, -std::numeric_limits<float>::infinity());
    std::fill(sc.l, sc.l + nq, 0.0f);

    const int64_t key_end = causal ? std::min(Nk, q0 + nq) : Nk;
    for (int64_t k0 = 0; k0 < key_end; k0 += kKeyBlock) {
      const int64_t nk = std::min(kKeyBlock, key_end - k0);
      const float* ksrc = k.f32() + (b * Nk + k0) * HD + h * D;
      for (int64_t j = 0; j < nk; ++j)
        for (int64_t d = 0; d < D; ++d) sc.kt[d * kKeyBlock + j] = ksrc[j * HD + d];
      const float* vsrc = v.f32() + (b * Nk + k0) * HD + h * D;
      for (int64_t i = 0; i < nq; ++i) {
        float* s = sc.s + i * kKeyBlock;
        score_row(sc.q + i * D, sc.kt, s, D, nk);
        if (causal)
          for (int64_t j = 0; j < nk; ++j)
            if (k0 + j > q0 + i) s[j] = -std::numeric_limits<float>::infinity();
        softmax_accumulate(s, nk, vsrc, HD, sc.o + i * D, D, sc.m[i], sc.l[i]);
      }
    }
    float* dst = out.f32() + (b * Nq + q0) * HD + h * D;
    for (int64_t i = 0; i < nq; ++i) {
      const float inv = 1.0f / sc.l[i];
      for (int64_t d = 0; d < D; ++d) dst[i * HD + d] = sc.o[i * D + d] * inv;
    }
  }
  return out;
}

}  // namespace otter::cpu
