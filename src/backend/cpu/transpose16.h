#pragma once
// A 16x16 block of floats transposed in AVX-512 registers: out[j][i] = in[i][j]. 64 shuffles for
// 256 floats, where a scalar transposition moves them one load and one store at a time. Used
// where a layout change sits between a 16-bit convolution and its neighbours (channel-major
// planes to pixel-major rows and back), which weigh most where a pixel's arithmetic is small: the
// VAE's 128-channel convolutions at 512x512 went from 741-749 to 759-799 GFLOP/s (Zen 5).
#include <immintrin.h>

namespace otter::cpu {

__attribute__((target("avx512f"))) inline void transpose16x16(const __m512 in[16], __m512 out[16]) {
  // Pairs of rows interleaved, then quads: u[4g + k] holds, in each 128-bit lane L, column 4L + k
  // of rows 4g..4g+3.
  __m512 u[16];
  for (int g = 0; g < 4; ++g) {
    const __m512 t0 = _mm512_unpacklo_ps(in[4 * g], in[4 * g + 1]);  // lane L: a[4L] b[4L] a[4L+1] b[4L+1]
    const __m512 t1 = _mm512_unpackhi_ps(in[4 * g], in[4 * g + 1]);  // a[4L+2] b[4L+2] a[4L+3] b[4L+3]
    const __m512 t2 = _mm512_unpacklo_ps(in[4 * g + 2], in[4 * g + 3]);
    const __m512 t3 = _mm512_unpackhi_ps(in[4 * g + 2], in[4 * g + 3]);
    u[4 * g + 0] = _mm512_shuffle_ps(t0, t2, 0x44);
    u[4 * g + 1] = _mm512_shuffle_ps(t0, t2, 0xEE);
    u[4 * g + 2] = _mm512_shuffle_ps(t1, t3, 0x44);
    u[4 * g + 3] = _mm512_shuffle_ps(t1, t3, 0xEE);
  }
  // Column 4L + k gathers lane L of u[k], u[4 + k], u[8 + k], u[12 + k], in two rounds of 128-bit
  // lane shuffles.
  for (int k = 0; k < 4; ++k) {
    const __m512 x_lo = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x44);  // u[k] lanes 0 1, u[4+k] lanes 0 1
    const __m512 x_hi = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xEE);  // lanes 2 3
    const __m512 y_lo = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x44);
    const __m512 y_hi = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xEE);
    out[k] = _mm512_shuffle_f32x4(x_lo, y_lo, 0x88);       // lane 0 of each
    out[4 + k] = _mm512_shuffle_f32x4(x_lo, y_lo, 0xDD);   // lane 1
    out[8 + k] = _mm512_shuffle_f32x4(x_hi, y_hi, 0x88);   // lane 2
    out[12 + k] = _mm512_shuffle_f32x4(x_hi, y_hi, 0xDD);  // lane 3
  }
}

}  // namespace otter::cpu
