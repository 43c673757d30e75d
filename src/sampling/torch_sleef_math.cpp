#include "sampling/torch_sleef_math.h"

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>

namespace otter::torch_sleef {

namespace {

// ln 2 split in a part with trailing zero bits and the rest, and 1/ln 2.
constexpr float kLn2Hi = 0.693145751953125f;
constexpr float kLn2Lo = 1.428606765330187045e-06f;
constexpr float kInvLn2 = 1.442695040888963407359924681001892137426645954152985934135449406931f;

float fma(float a, float b, float c) { return std::fma(a, b, c); }
int32_t bits(float x) { return std::bit_cast<int32_t>(x); }
float from_bits(int32_t i) { return std::bit_cast<float>(i); }

// 2^q for q in the normal exponent range.
float pow2i(int32_t q) { return from_bits((q + 0x7f) << 23); }
// x * 2^q as two exact scalings, so that q up to twice the normal range works.
float ldexp2(float x, int32_t q) { return x * pow2i(q >> 1) * pow2i(q - (q >> 1)); }
// x * 2^q by adding to the exponent field (x normal, result normal).
float ldexp3(float x, int32_t q) { return from_bits(bits(x) + (q << 23)); }
// floor(log2(x)) for normal x.
int32_t ilogb2(float x) { return ((bits(x) >> 23) & 0xff) - 0x7f; }
// Round to nearest, ties to even, as the vector float->int conversion.
int32_t rint_i(float x) { return static_cast<int32_t>(std::nearbyint(x)); }

// A float pair x + y carrying about 48 bits ("double-float" arithmetic).
struct F2 {
  float x, y;
};

F2 add2(float x, float y) {  // exact sum of two floats
  const float s = x + y;
  const float v = s - x;
  return {s, (x - (s - v)) + (y - v)};
}
F2 add2(F2 x, float y) {
  const float s = x.x + y;
  const float v = s - x.x;
  return {s, ((x.x - (s - v)) + (y - v)) + x.y};
}
F2 add2(F2 x, F2 y) {
  const float s = x.x + y.x;
  const float v = s - x.x;
  return {s, ((x.x - (s - v)) + (y.x - v)) + (x.y + y.y)};
}
F2 add(float x, F2 y) {  // |x| >= |y|
  const float s = x + y.x;
  return {s, ((x - s) + y.x) + y.y};
}
F2 add(F2 x, float y) {  // |x| >= |y|
  const float s = x.x + y;
  return {s, ((x.x - s) + y) + x.y};
}
F2 add(F2 x, F2 y) {  // |x| >= |y|
  const float s = x.x + y.x;
  return {s, (((x.x - s) + y.x) + x.y) + y.y};
}
F2 mul(F2 x, float y) {
  const float s = x.x * y;
  return {s, fma(x.y, y, fma(x.x, y, -s))};
}
F2 mul(F2 x, F2 y) {
  const float s = x.x * y.x;
  return {s, fma(x.x, y.y, fma(x.y, y.x, fma(x.x, y.x, -s)))};
}
F2 square(F2 x) {
  const float s = x.x * x.x;
  return {s, fma(x.x + x.x, x.y, fma(x.x, x.x, -s))};
}
F2 scale(F2 x, float s) { return {x.x * s, x.y * s}; }
F2 div(F2 n, F2 d) {
  const float t = 1.0f / d.x;
  const float q = n.x * t;
  const float u = fma(t, n.x, -q);
  const float v = fma(-d.y, t, fma(-d.x, t, 1.0f));
  return {q, fma(q, v, fma(n.y, t, u))};
}

// e^(d.x + d.y) as a float pair (SLEEF's expk2f).
F2 exp_pair(F2 d) {
  const int32_t q = rint_i((d.x + d.y) * kInvLn2);
  const auto qf = static_cast<float>(q);
  F2 s = add2(d, qf * -kLn2Hi);
  s = add2(s, qf * -kLn2Lo);
  float u = 0.1980960224e-3f;
  u = fma(u, s.x, 0.1394256484e-2f);
  u = fma(u, s.x, 0.8333456703e-2f);
  u = fma(u, s.x, 0.4166637361e-1f);
  F2 t = add2(mul(s, u), 0.166666659414234244790680580464e+0f);
  t = add2(mul(s, t), 0.5f);
  t = add2(s, mul(square(s), t));
  t = add(1.0f, t);
  t.x = ldexp2(t.x, q);
  t.y = ldexp2(t.y, q);
  if (d.x < -104) t = {0.0f, 0.0f};
  return t;
}

}  // namespace

float exp(float d) {
  // SLEEF computes everything and selects; returning early gives the same values without
  // converting out-of-range floats to int.
  if (std::isnan(d)) return d;
  if (d < -104) return 0.0f;
  if (100 < d) return std::numeric_limits<float>::infinity();
  const int32_t q = rint_i(d * kInvLn2);
  const auto qf = static_cast<float>(q);
  float s = fma(qf, -kLn2Hi, d);
  s = fma(qf, -kLn2Lo, s);
  float u = 0.000198527617612853646278381f;
  u = fma(u, s, 0.00139304355252534151077271f);
  u = fma(u, s, 0.00833336077630519866943359f);
  u = fma(u, s, 0.0416664853692054748535156f);
  u = fma(u, s, 0.166666671633720397949219f);
  u = fma(u, s, 0.5f);
  u = 1.0f + fma(s * s, u, s);
  return ldexp2(u, q);
}

float log(float d) {
  const bool tiny = d < FLT_MIN;
  if (tiny) d = d * (static_cast<float>(int64_t{1} << 32) * static_cast<float>(int64_t{1} << 32));
  int32_t e = ilogb2(d * (1.0f / 0.75f));
  const float m = ldexp3(d, -e);
  if (tiny) e -= 64;
  F2 s = mul(F2{0.69314718246459960938f, -1.904654323148236017e-09f}, static_cast<float>(e));

  const F2 x = div(add2(-1.0f, m), add2(1.0f, m));
  const float x2 = x.x * x.x;
  float t = +0.3027294874e+0f;
  t = fma(t, x2, +0.3996108174e+0f);
  t = fma(t, x2, +0.6666694880e+0f);
  s = add(s, scale(x, 2.0f));
  s = add(s, x2 * x.x * t);
  float r = s.x + s.y;

  if (std::isinf(d) && d > 0) r = std::numeric_limits<float>::infinity();
  if (d < 0 || std::isnan(d)) r = std::numeric_limits<float>::quiet_NaN();
  if (d == 0) r = -std::numeric_limits<float>::infinity();
  return r;
}

float expm1(float a) {
  if (std::isnan(a)) return a;
  if (a > 88.72283172607421875f) return std::numeric_limits<float>::infinity();
  if (a < -16.635532333438687426013570f) return -1.0f;
  if (a == 0 && std::signbit(a)) return -0.0f;
  const F2 d = add2(exp_pair(F2{a, 0.0f}), -1.0f);
  return d.x + d.y;
}

}  // namespace otter::torch_sleef
