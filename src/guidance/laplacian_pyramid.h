#pragma once
// The Laplacian pyramid frequency-decoupled guidance splits predictions with: kornia's
// build_laplacian_pyramid / pyrup (border "reflect", align_corners False), which diffusers' FDG
// calls. Level 0 holds the highest frequencies, the last level the blurred, downsampled rest.
//   blur5(x)   5x5 correlation with outer([1,4,6,4,1])/256 after reflect padding by 2
//   pyrdown(x) blur5, then a bilinear resize to half the size (align_corners False)
//   pyrup(x)   a bilinear resize to twice the size, then blur5
//   P_k = G_k − pyrup(G_{k+1}),  P_{L−1} = G_{L−1},  G_0 = x, G_{k+1} = pyrdown(G_k)
#include <vector>

#include "core/tensor.h"

namespace otter {

// Throws, with the fix, unless a pyramid of `levels` can be built on H x W (see below).
void check_pyramid_size(int64_t H, int64_t W, int levels);
// x [B, C, H, W] f32 -> `levels` tensors, level k of size H/2^k x W/2^k. H and W must be multiples
// of 2^(levels−1), and one of them a power of two (kornia pads otherwise, and FDG then fails).
std::vector<Tensor> laplacian_pyramid(const Tensor& x, int levels);
// The inverse: y = P_{L−1}; y = pyrup(y) + P_k for k = L−2 … 0.
Tensor image_from_pyramid(const std::vector<Tensor>& pyramid);
// Twice the size, then blurred (kornia pyrup).
Tensor pyramid_up(const Tensor& x);

}  // namespace otter
