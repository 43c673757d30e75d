#pragma once
// Seeded random weights for a model architecture, so the benchmark needs no downloaded
// checkpoint: every tensor the config defines (src/io/component_tensors.h) is filled with
// uniform values scaled by 1/sqrt(fan_in) (keeping activations in a realistic range through
// ~100 layers), norm scales near 1, and stored as f32, f16 or bf16.
#include <map>
#include <random>
#include <string>

#include "io/component_tensors.h"
#include "models/weights.h"

namespace otter::bench {

class RandomWeights final : public TensorSource {
 public:
  RandomWeights(const std::vector<TensorSpec>& specs, DType storage, uint32_t seed, std::string origin)
      : origin_(std::move(origin)) {
    std::mt19937 gen(seed);
    for (const TensorSpec& spec : specs) {
      Tensor t = Tensor::empty(spec.shape, DType::F32);
      const bool is_norm_scale = spec.shape.rank() == 1 && spec.name.find("norm") != std::string::npos &&
                                 spec.name.size() > 7 && spec.name.compare(spec.name.size() - 7, 7, ".weight") == 0;
      const int64_t fan_in = spec.shape.rank() >= 2 ? spec.shape.numel() / spec.shape[0] : 1;
      const float bound = spec.shape.rank() >= 2 ? 1.0f / std::sqrt(static_cast<float>(fan_in)) : 0.02f;
      std::uniform_real_distribution<float> dist(-bound, bound);
      for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = (is_norm_scale ? 1.0f : 0.0f) + dist(gen);
      tensors_.emplace(spec.name, t.to(storage));
    }
  }
  bool has(const std::string& name) const override { return tensors_.count(name) != 0; }
  Tensor get(const std::string& name) const override { return tensors_.at(name); }
  std::vector<std::string> names() const override {
    std::vector<std::string> n;
    for (const auto& [k, v] : tensors_) n.push_back(k);
    return n;
  }
  std::string origin() const override { return origin_; }

 private:
  std::string origin_;
  std::map<std::string, Tensor> tensors_;
};

}  // namespace otter::bench
