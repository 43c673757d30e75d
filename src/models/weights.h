#pragma once
// A model component's tensors, addressed by their diffusers names whatever layout the file on
// disk uses (a diffusers folder or an original single-file checkpoint renamed through the
// mapping table in src/io). Models ask for each tensor with the shape they expect; the source
// records what was used so loading can report tensors the model did not expect.
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace otter {

// A low-rank update of one weight kept apart from it (LoRA applied unmerged): the layer adds
// scale · up(down(x)) to its output. down [rank, in(, kh, kw)], up [out, rank(, 1, 1)], F32.
struct LoraBranch {
  Tensor down, up;
  float scale = 1.0f;
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual bool has(const std::string& name) const = 0;
  virtual Tensor get(const std::string& name) const = 0;  // as stored (any dtype), zero-copy where possible
  virtual std::vector<std::string> names() const = 0;
  virtual std::string origin() const = 0;  // a file or folder, for messages
  // The unmerged LoRA updates of weight `name` (none unless a LoRA is applied unmerged).
  virtual std::vector<LoraBranch> lora_branches(const std::string& /*name*/) const { return {}; }
};

class Weights {
 public:
  explicit Weights(const TensorSource& source, std::string prefix = "") : source_(source), prefix_(std::move(prefix)) {}

  // The tensor `prefix + name`, checked against the expected shape. Errors name the tensor, the file,
  // and expected vs actual.
  Tensor get(const std::string& name, const Shape& expected) {
    const std::string full = prefix_ + name;
    OTTER_CHECK(source_.has(full), "missing tensor '", full, "' in ", source_.origin(), " (expected shape ",
                expected.str(), "); is this the right model or --config?");
    Tensor t = source_.get(full);
    OTTER_CHECK(t.shape() == expected, "tensor '", full, "' in ", source_.origin(), " has shape ", t.shape().str(),
                ", expected ", expected.str(), " from the model config");
    used_.insert(full);
    return t;
  }
  bool has(const std::string& name) const { return source_.has(prefix_ + name); }
  std::vector<LoraBranch> lora_branches(const std::string& name) const { return source_.lora_branches(prefix_ + name); }

  // Throws if the source holds tensors under our prefix that no layer asked for (ignoring
  // the names in `ignored`, e.g. position_ids buffers).
  void check_all_used(const std::vector<std::string>& ignored = {}) const {
    std::vector<std::string> unexpected;
    for (const std::string& n : source_.names()) {
      if (n.rfind(prefix_, 0) != 0 || used_.count(n)) continue;
      bool skip = false;
      for (const std::string& ig : ignored)
        if (n.size() >= ig.size() && n.compare(n.size() - ig.size(), ig.size(), ig) == 0) skip = true;
      if (!skip) unexpected.push_back(n);
    }
    if (!unexpected.empty()) {
      std::string list;
      for (size_t i = 0; i < unexpected.size() && i < 10; ++i) list += "\n  " + unexpected[i];
      if (unexpected.size() > 10) list += cat("\n  ... and ", unexpected.size() - 10, " more");
      throw Error(cat(unexpected.size(), " unexpected tensor(s) in ", source_.origin(),
                      " that the model config does not use (wrong --config or model family?):", list));
    }
  }

 private:
  const TensorSource& source_;
  std::string prefix_;
  std::set<std::string> used_;
};

}  // namespace otter
