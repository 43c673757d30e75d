#pragma once
// Reader for the diffusers reference outputs in ../shared/golden: a JSON manifest `X.json`
// describing cases, and the safetensors file it names holding every tensor a case refers to.
// A case refers to tensors through TENSORREF objects {"name", "shape", "dtype"}.
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace otter::testing {

class Golden {
 public:
  // Reads `manifest_json` and opens the safetensors file named by its "file" key (relative
  // to the manifest's folder). Throws otter::Error if either is missing or malformed.
  explicit Golden(const std::filesystem::path& manifest_json);

  const nlohmann::json& manifest() const { return manifest_; }
  const SafetensorsFile& file() const { return file_; }
  // A tensor of the golden file by name (zero-copy view).
  Tensor tensor(const std::string& name) const;
  // The case whose "id" equals `id`; throws naming the manifest if there is none.
  const nlohmann::json& case_by_id(const std::string& id) const;
  // The tensor a TENSORREF points to, after checking its shape and dtype match the reference.
  Tensor tensor_ref(const nlohmann::json& ref) const;

 private:
  std::filesystem::path manifest_path_;
  nlohmann::json manifest_;
  SafetensorsFile file_;
};

}  // namespace otter::testing
