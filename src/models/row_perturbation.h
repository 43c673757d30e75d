#pragma once
// A change to some of the UNet's transformer blocks that applies to a range of batch rows only:
// what the perturbed-guidance methods contrast a prediction with. One UNet call then evaluates
// ordinary rows and perturbed rows together ([uncond…, cond…, perturbed…]), each row computed
// as if it were alone in its batch.
//
//   IdentitySelfAttention  PAG (Ahn et al. 2024): the self-attention's output is its value
//                          projection, out = to_out(to_v(x)); q and k are not used.
//   BlurredQueries         SEG (Hong 2024): the self-attention's queries are blurred over the
//                          latent's 2-D grid before the attention (diffusers' _gaussian_blur_2d).
//   SkipBlock              SLG / auto-guidance: the whole transformer block is skipped (its input
//                          passes through), as diffusers' LayerSkipConfig defaults do.
#include <cstdint>
#include <vector>

namespace otter {

enum class BlockPerturbation { IdentitySelfAttention, BlurredQueries, SkipBlock };

struct RowPerturbation {
  BlockPerturbation kind = BlockPerturbation::IdentitySelfAttention;
  // The transformer blocks it applies to, as indices into UNet::transformer_block_names().
  std::vector<int> blocks;
  // The batch rows it applies to: [row_begin, row_end).
  int64_t row_begin = 0, row_end = 0;
  // SEG's blur (diffusers' seg_blur_sigma, seg_blur_threshold_inf).
  double blur_sigma = 9999999.0, blur_threshold_inf = 9999.0;

  // Further perturbations of other rows (disjoint ranges), each with its own kind and blocks: what
  // one call over several experiments needs (otter lab). Not owned.
  const RowPerturbation* next = nullptr;

  bool applies_to_block(int block) const {
    for (int b : blocks)
      if (b == block) return true;
    return false;
  }
};

// The perturbations of a chain that apply to one transformer block.
using BlockPerturbations = std::vector<const RowPerturbation*>;

}  // namespace otter
