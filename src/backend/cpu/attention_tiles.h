#pragma once
// How the queries-in-lanes attention kernels (attention_avx512.cpp, attention_avx2.cpp) cover a
// block of keys or value dims with register tiles of compile-time size.
#include <cstdint>
#include <type_traits>

namespace otter::cpu {

// fn(tile size as an integral_constant, start) over [0, n): tiles of kTile (at most 6), then one
// remainder.
template <int kTile, class Fn>
void for_tiles(int64_t n, Fn&& fn) {
  static_assert(kTile >= 1 && kTile <= 6, "the remainder switch covers tiles of up to 6");
  int64_t i = 0;
  for (; i + kTile <= n; i += kTile) fn(std::integral_constant<int, kTile>{}, i);
  switch (n - i) {
    case 5: fn(std::integral_constant<int, 5>{}, i); break;
    case 4: fn(std::integral_constant<int, 4>{}, i); break;
    case 3: fn(std::integral_constant<int, 3>{}, i); break;
    case 2: fn(std::integral_constant<int, 2>{}, i); break;
    case 1: fn(std::integral_constant<int, 1>{}, i); break;
    default: break;
  }
}

}  // namespace otter::cpu
