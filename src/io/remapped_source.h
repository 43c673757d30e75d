#pragma once
// A TensorSource that presents a safetensors file's tensors under other names: the diffusers
// names models ask for, read from an original single-file checkpoint (or from a diffusers VAE
// with legacy attention names). Every tensor comes back as a zero-copy view of the mapped
// file: a renamed tensor as is, OpenCLIP's fused q/k/v projection as a row slice, and a 1x1
// conv weight [C, C, 1, 1] reshaped to the Linear [C, C] the model expects (or back).
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/ldm_key_map.h"
#include "io/safetensors.h"
#include "models/weights.h"

namespace otter {

class RemappedSource : public TensorSource {
 public:
  struct Entry {
    LdmTensorRef ref;
    std::optional<Shape> view_shape;  // reshape after slicing (same element count)
  };

  // `entries`: name -> tensor in `file` (entries whose tensor is absent from the file are kept
  // so has() is false but source_key() can still name what was looked for).
  // `passthrough`: file keys that no entry reads and that are not known to be unused; they stay
  // visible under their own key so Weights::check_all_used reports them as unexpected.
  RemappedSource(std::shared_ptr<const SafetensorsFile> file, std::map<std::string, Entry> entries,
                 std::vector<std::string> passthrough, std::string origin);

  bool has(const std::string& name) const override;
  Tensor get(const std::string& name) const override;
  std::vector<std::string> names() const override;
  std::string origin() const override { return origin_; }

  // The file key a name is read from ("model.diffusion_model.out.2.weight"), or nullopt.
  std::optional<std::string> source_key(const std::string& name) const;
  const SafetensorsFile& file() const { return *file_; }

 private:
  std::shared_ptr<const SafetensorsFile> file_;
  std::map<std::string, Entry> entries_;
  std::vector<std::string> passthrough_;
  std::string origin_;
};

// Builds the entries for `map`: decides for each tensor whether a reshape view is needed by
// comparing the stored shape with `expected` (the shape the config implies). Only a change
// between [C, C] and [C, C, 1, 1] (the 1x1-conv/Linear difference between layouts) becomes a
// view; any other difference is left for the shape check to report.
std::map<std::string, RemappedSource::Entry> make_remap_entries(const SafetensorsFile& file, const LdmKeyMap& map,
                                                                const std::map<std::string, Shape>& expected);

}  // namespace otter
