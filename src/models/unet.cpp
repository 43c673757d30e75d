#include "models/unet.h"

#include <array>

#include "core/error.h"

namespace otter {

UNet::UNet(const UNetConfig& config, Weights& weights)
    : config_(config), block_names_(config.transformer_block_names()) {
  const UNetConfig& c = config_;
  ParamLoader root(weights, parameter_count_, "", &prepared_);
  const size_t n = c.num_blocks();
  const auto& ch = c.block_out_channels;
  const int64_t temb = c.time_embed_dim;
  const int groups = c.norm_num_groups;

  conv_in_ = load_conv(root, "conv_in", c.in_channels, ch[0], c.conv_in_kernel);
  time_linear_1_ = load_linear(root, "time_embedding.linear_1", ch[0], temb);
  time_linear_2_ = load_linear(root, "time_embedding.linear_2", temb, temb);

  // Down blocks: block i maps ch[i-1] -> ch[i] in its first resnet; all but the last halve H, W.
  for (size_t i = 0; i < n; ++i) {
    ParamLoader p = root.child(cat("down_blocks.", i));
    DownBlock block;
    const int64_t in = i == 0 ? ch[0] : ch[i - 1];
    const bool attn = c.down_blocks[i] == UNetDownBlockType::CrossAttnDown;
    for (int j = 0; j < c.layers_per_block[i]; ++j) {
      block.resnets.emplace_back(p.child(cat("resnets.", j)), j == 0 ? in : ch[i], ch[i], temb, groups, c.norm_eps,
                                 c.resnet_out_scale_factor);
      if (attn)
        block.attentions.emplace_back(p.child(cat("attentions.", j)), ch[i], c.cross_attention_dim[i],
                                      c.attention_heads[i], c.transformer_layers[i], groups, c.use_linear_projection,
                                      first_block_of(cat("down_blocks.", i, ".attentions.", j)));
    }
    if (i + 1 < n) block.downsampler.emplace(p.child("downsamplers.0"), ch[i], c.downsample_padding);
    down_.push_back(std::move(block));
  }

  if (c.has_mid_block) {
    ParamLoader p = root.child("mid_block");
    MidBlock mid;
    const int64_t width = ch[n - 1];
    const int layers = c.transformer_layers[n - 1];
    mid.resnets.emplace_back(p.child("resnets.0"), width, width, temb, groups, c.norm_eps, c.mid_block_scale_factor);
    // UNetMidBlock2DCrossAttn has num_layers = 1: one transformer, then one more resnet.
    mid.attentions.emplace_back(p.child("attentions.0"), width, c.cross_attention_dim[n - 1], c.mid_heads(), layers,
                                groups, c.use_linear_projection, first_block_of("mid_block.attentions.0"));
    mid.resnets.emplace_back(p.child("resnets.1"), width, width, temb, groups, c.norm_eps, c.mid_block_scale_factor);
    mid_ = std::move(mid);
  }

  // Up blocks, deepest first. Resnet j of up block i consumes the running features concatenated
  // with one skip connection: the skips of the matching down block in reverse, the last one
  // coming from the block above (or conv_in).
  for (size_t i = 0; i < n; ++i) {
    ParamLoader p = root.child(cat("up_blocks.", i));
    UpBlock block;
    const size_t d = n - 1 - i;  // the mirrored down block's index
    const int64_t out = ch[d];
    const int64_t prev_out = i == 0 ? ch[n - 1] : ch[d + 1];
    const int64_t skip_last = ch[d == 0 ? 0 : d - 1];  // channels of the skip that entered down block d
    const int layers = c.layers_per_block[d] + 1;
    const bool attn = c.up_blocks[i] == UNetUpBlockType::CrossAttnUp;
    for (int j = 0; j < layers; ++j) {
      const int64_t res_in = j == 0 ? prev_out : out;
      const int64_t skip = j == layers - 1 ? skip_last : out;
      block.resnets.emplace_back(p.child(cat("resnets.", j)), res_in + skip, out, temb, groups, c.norm_eps,
                                 c.resnet_out_scale_factor);
      if (attn)
        block.attentions.emplace_back(p.child(cat("attentions.", j)), out, c.cross_attention_dim[d], c.up_heads(i),
                                      c.up_transformer_layers[i], groups, c.use_linear_projection,
                                      first_block_of(cat("up_blocks.", i, ".attentions.", j)));
    }
    if (i + 1 < n) block.upsampler.emplace(p.child("upsamplers.0"), out);
    up_.push_back(std::move(block));
  }

  conv_norm_out_ = load_norm(root, "conv_norm_out", ch[0], c.norm_eps);
  conv_out_ = load_conv(root, "conv_out", ch[0], c.out_channels, c.conv_out_kernel);
}

int UNet::first_block_of(const std::string& transformer) const {
  const std::string first = transformer + ".transformer_blocks.0";
  for (size_t i = 0; i < block_names_.size(); ++i)
    if (block_names_[i] == first) return static_cast<int>(i);
  throw Error(cat("UNet: no transformer block named ", first));
}

void UNet::check_inputs(const Tensor& sample, const Tensor& context) const {
  OTTER_CHECK(sample.rank() == 4 && sample.dim(1) == config_.in_channels, "UNet: sample must be [B, ",
              config_.in_channels, ", H, W], got ", sample.describe());
  const int64_t div = config_.spatial_divisor();
  OTTER_CHECK(sample.dim(2) % div == 0 && sample.dim(3) % div == 0, "UNet: latent size ", sample.dim(2), "x",
              sample.dim(3), " is not a multiple of ", div, " (image height and width must be multiples of ",
              8 * div, " for an SD VAE)");
  const int64_t ctx_dim = config_.cross_attention_dim.front();
  OTTER_CHECK(context.rank() == 3 && context.dim(0) == sample.dim(0) && context.dim(2) == ctx_dim,
              "UNet: encoder_hidden_states must be [", sample.dim(0), ", tokens, ", ctx_dim, "] for a sample batch of ",
              sample.dim(0), ", got ", context.describe());
}

Tensor UNet::time_embedding(Backend& be, const Tensor& timesteps, int64_t batch, const DebugHook& hook) {
  Tensor t = timesteps.to(DType::F32).contiguous();
  t = t.reshape(Shape{t.numel()});
  OTTER_CHECK(t.numel() == 1 || t.numel() == batch, "UNet: ", t.numel(), " timesteps for a batch of ", batch,
              "; give one timestep, or one per batch row");
  // One distinct timestep (always the case in a sampling loop, CFG included): embed it once
  // and let each resnet's projection broadcast over the batch.
  bool all_equal = true;
  for (int64_t i = 1; i < t.numel(); ++i) all_equal = all_equal && t.f32()[i] == t.f32()[0];
  if (all_equal) t = t.slice(0, 0, 1);

  const Tensor proj = be.timestep_embedding(t, config_.block_out_channels[0], config_.flip_sin_to_cos,
                                            config_.freq_shift);
  if (hook) hook("time_proj", proj);
  // Several distinct timesteps (rows of different requests in one call): each row's embedding as
  // when its timestep is embedded alone, bit for bit (linear_per_distinct_row).
  const Tensor emb = linear_per_distinct_row(
      be, be.activation(linear_per_distinct_row(be, proj, time_linear_1_), Activation::SiLU), time_linear_2_);
  if (hook) hook("time_embedding", emb);
  return be.activation(emb, Activation::SiLU);
}

Tensor UNet::forward(Backend& be, const Tensor& sample_in, float timestep, const Tensor& context,
                     const DebugHook& hook, const RowPerturbation* perturbation) {
  return forward(be, sample_in, Tensor::full(Shape{1}, timestep), context, hook, perturbation);
}

Tensor UNet::forward(Backend& be, const Tensor& sample_in, const Tensor& timesteps, const Tensor& context_in,
                     const DebugHook& hook, const RowPerturbation* perturbation) {
  check_inputs(sample_in, context_in);
  for (const RowPerturbation* p = perturbation; p; p = p->next) {
    OTTER_CHECK(0 <= p->row_begin && p->row_begin <= p->row_end && p->row_end <= sample_in.dim(0), "UNet: perturbed rows [",
                p->row_begin, ", ", p->row_end, ") outside a batch of ", sample_in.dim(0));
    for (const RowPerturbation* q = p->next; q; q = q->next)
      OTTER_CHECK(q->row_end <= p->row_begin || q->row_begin >= p->row_end, "UNet: perturbed rows [", p->row_begin, ", ",
                  p->row_end, ") and [", q->row_begin, ", ", q->row_end, ") overlap");
    for (int b : p->blocks)
      OTTER_CHECK(b >= 0 && b < static_cast<int>(block_names_.size()), "UNet: no transformer block ", b, " (it has ",
                  block_names_.size(), ")");
  }
  const Tensor context = context_in.to(DType::F32).contiguous();
  Tensor sample = sample_in.to(DType::F32).contiguous();
  if (config_.center_input_sample) sample = be.add(be.scale(sample, 2.0f), Tensor::full(Shape{1}, -1.0f));
  const Tensor temb = time_embedding(be, timesteps, sample.dim(0), hook);

  Tensor h = be.conv2d(sample, conv_in_);
  if (hook) hook("conv_in", h);
  std::vector<Tensor> skips{h};

  for (size_t i = 0; i < down_.size(); ++i) {
    DownBlock& block = down_[i];
    for (size_t j = 0; j < block.resnets.size(); ++j) {
      h = block.resnets[j].forward(be, h, &temb);
      if (hook) hook(cat("down_blocks.", i, ".resnets.", j), h);
      if (!block.attentions.empty()) {
        h = block.attentions[j].forward(be, h, context, perturbation);
        if (hook) hook(cat("down_blocks.", i, ".attentions.", j), h);
      }
      skips.push_back(h);
    }
    if (block.downsampler) {
      h = block.downsampler->forward(be, h);
      skips.push_back(h);
    }
    if (hook) hook(cat("down_blocks.", i), h);
  }

  if (mid_) {
    h = mid_->resnets[0].forward(be, h, &temb);
    for (size_t j = 0; j < mid_->attentions.size(); ++j) {
      h = mid_->attentions[j].forward(be, h, context, perturbation);
      h = mid_->resnets[j + 1].forward(be, h, &temb);
    }
    if (hook) hook("mid_block", h);
  }

  for (size_t i = 0; i < up_.size(); ++i) {
    UpBlock& block = up_[i];
    for (size_t j = 0; j < block.resnets.size(); ++j) {
      OTTER_CHECK(!skips.empty(), "UNet: ran out of skip connections (inconsistent block layout)");
      const std::array<Tensor, 2> pair{h, skips.back()};
      skips.pop_back();
      h = block.resnets[j].forward(be, be.concat(pair, 1), &temb);
      if (hook) hook(cat("up_blocks.", i, ".resnets.", j), h);
      if (!block.attentions.empty()) {
        h = block.attentions[j].forward(be, h, context, perturbation);
        if (hook) hook(cat("up_blocks.", i, ".attentions.", j), h);
      }
    }
    if (block.upsampler) h = block.upsampler->forward(be, h);
    if (hook) hook(cat("up_blocks.", i), h);
  }

  // The SiLU is fused into the norm; the hook gets the plain norm output, as diffusers' hook does.
  if (hook) hook("conv_norm_out", be.group_norm(h, config_.norm_num_groups, conv_norm_out_));
  return be.conv2d(h, group_norm_silu(conv_norm_out_, config_.norm_num_groups), conv_out_);
}

}  // namespace otter
