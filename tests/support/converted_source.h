#pragma once
// A TensorSource that hands out another source's float tensors converted to a storage dtype,
// as an f16 (or bf16) checkpoint of the same weights would. Used to test reduced-precision storage.
#include "models/weights.h"

namespace otter::testing {

class ConvertedSource : public TensorSource {
 public:
  ConvertedSource(const TensorSource& inner, DType storage) : inner_(inner), storage_(storage) {}
  bool has(const std::string& name) const override { return inner_.has(name); }
  Tensor get(const std::string& name) const override {
    const Tensor t = inner_.get(name);
    return dtype_is_float(t.dtype()) ? t.to(storage_) : t;
  }
  std::vector<std::string> names() const override { return inner_.names(); }
  std::string origin() const override { return inner_.origin() + " (as " + std::string(dtype_name(storage_)) + ")"; }

 private:
  const TensorSource& inner_;
  DType storage_;
};

}  // namespace otter::testing
