#include "guidance/guider_prediction.h"

#include <vector>

#include "core/error.h"
#include "models/transformer_block_choice.h"

namespace otter {

std::optional<RowPerturbation> resolve_perturbation(const Guider& guider,
                                                    const std::vector<std::string>& transformer_blocks) {
  const std::optional<Perturbation> p = guider.perturbation();
  if (!p) return std::nullopt;
  OTTER_CHECK(!transformer_blocks.empty(), guider.name(), " changes transformer blocks, but this model has none");
  RowPerturbation r;
  r.kind = p->kind;
  r.blocks = choose_transformer_blocks(transformer_blocks, p->layers);
  r.blur_sigma = p->blur_sigma;
  r.blur_threshold_inf = p->blur_threshold_inf;
  return r;
}

namespace {

// [a; b; c] along dim 0, in one allocation.
Tensor concat_all(std::initializer_list<Tensor> parts) {
  std::vector<int64_t> shape = parts.begin()->shape().to_vector();
  shape[0] = 0;
  for (const Tensor& t : parts) shape[0] += t.dim(0);
  Tensor out = Tensor::empty(Shape(shape), parts.begin()->dtype());
  int64_t row = 0;
  for (const Tensor& t : parts) {
    out.slice(0, row, row + t.dim(0)).copy_from(t);
    row += t.dim(0);
  }
  return out;
}

}  // namespace

GuiderPrediction::GuiderPrediction(Tensor uncond, Tensor cond, std::unique_ptr<Guider> guider, CfgBatching batching,
                                   const std::vector<std::string>& transformer_blocks)
    : uncond_(std::move(uncond)), cond_(std::move(cond)), guider_(std::move(guider)), batching_(batching) {
  OTTER_CHECK(uncond_.shape() == cond_.shape(), "guidance: unconditional embeddings ", uncond_.describe(),
              " and conditional ", cond_.describe(), " must have the same shape");
  perturbation_ = resolve_perturbation(*guider_, transformer_blocks);
  perturb_uncond_ = perturbation_ && guider_->perturbation()->on_uncond;
  if (batching_ == CfgBatching::Batched) {
    context_uc_ = concat_rows(uncond_, cond_);
    if (perturbation_ && !perturb_uncond_) {
      context_ucp_ = concat_all({uncond_, cond_, cond_});
      context_cp_ = concat_rows(cond_, cond_);
    }
  }
  guider_->reset();
}

Tensor GuiderPrediction::predict(const Denoiser& model, const Tensor& x, float timestep, int step, int steps,
                                 float sigma) {
  const int64_t B = x.dim(0);
  OTTER_CHECK(B == cond_.dim(0), "guidance: ", B, " latent rows but ", cond_.dim(0), " prompt embeddings");
  const GuiderStep s{step, steps, timestep, sigma};
  const Needs needs = guider_->needs(s);
  OTTER_CHECK(!needs.perturbed || (perturbation_ && !perturb_uncond_), guider_->name(),
              " asks for a perturbed prediction but names no perturbation");
  if (!needs.uncond) ++skipped_uncond_steps_;
  // Row groups in order: [uncond] cond [perturbed]; which group is perturbed, if any.
  const int groups = 1 + needs.uncond + needs.perturbed;
  unet_rows_ += static_cast<uint64_t>(groups * B);
  const int perturbed_group = needs.perturbed ? groups - 1 : (needs.uncond && perturb_uncond_ ? 0 : -1);
  if (perturbed_group >= 0) perturbed_rows_ += static_cast<uint64_t>(B);

  // The perturbation's rows are set in place for this call (no copy of its block list per step).
  const auto perturb_rows = [&](int64_t begin) {
    perturbation_->row_begin = begin;
    perturbation_->row_end = begin + B;
    return &*perturbation_;
  };
  Predictions p;
  if (batching_ == CfgBatching::Split || groups == 1) {
    // One call per group, each with its own rows perturbed or not.
    int g = 0;
    const auto call = [&](const Tensor& context) {
      const Tensor out = model(x, timestep, context, g == perturbed_group ? perturb_rows(0) : nullptr);
      ++g;
      return out;
    };
    if (needs.uncond) p.uncond = call(uncond_);
    p.cond = call(cond_);
    if (needs.perturbed) p.perturbed = call(cond_);
    return finish(s, p);
  }
  const Tensor& context = groups == 3 ? context_ucp_ : needs.uncond ? context_uc_ : context_cp_;
  const Tensor xs = groups == 3 ? concat_all({x, x, x}) : concat_rows(x, x);
  const Tensor out = model(xs, timestep, context, perturbed_group >= 0 ? perturb_rows(perturbed_group * B) : nullptr);
  int g = 0;
  if (needs.uncond) p.uncond = out.slice(0, B * g, B * (g + 1)), ++g;
  p.cond = out.slice(0, B * g, B * (g + 1)), ++g;
  if (needs.perturbed) p.perturbed = out.slice(0, B * g, B * (g + 1));
  return finish(s, p);
}

Tensor GuiderPrediction::finish(const GuiderStep& s, const Predictions& p) {
  // CFG++ renoises with the unconditional prediction where it was evaluated (ordinary steps elsewhere).
  renoise_ = guider_->renoises_with_uncond() && p.uncond.defined() ? p.uncond.contiguous() : Tensor();
  return guider_->combine(s, p);
}

}  // namespace otter
