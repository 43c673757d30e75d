#pragma once
// Which of the UNet's transformer blocks a perturbed-guidance method changes (PAG, SEG, SLG,
// auto-guidance), chosen by the names `otter info MODEL` lists. `layers` is one entry or a list:
//
//   an integer   the block's index in UNet::transformer_block_names() (diffusers' guiders take
//                `*_layers` as indices);
//   a string     diffusers' pag_applied_layers rule: a regular expression searched in each block's
//                self-attention name ("down_blocks.1.attentions.0.transformer_blocks.0.attn1"), so
//                "mid", "down_blocks.1" or "up_blocks.2.attentions.0" work as in diffusers; otter's
//                short forms down.I, up.I (down_blocks.I, up_blocks.I) and down.I.J, up.I.J
//                (…_blocks.I.attentions.J) are expanded first.
//
// An entry that matches no block is an error that lists the names.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace otter {

std::vector<int> choose_transformer_blocks(const std::vector<std::string>& block_names, const nlohmann::json& layers);

// otter's short name of the Transformer2D a block belongs to: "down.1.0", "mid", "up.2.1".
std::string short_transformer_name(const std::string& block_name);

}  // namespace otter
