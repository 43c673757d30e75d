#include "support/golden.h"

#include <fstream>
#include <vector>

#include "core/error.h"
#include "io/json_file.h"

namespace otter::testing {

namespace {

nlohmann::json read_manifest(const std::filesystem::path& path) {
  // Manifests are written by Python and may hold -Infinity (e.g. DPM-Solver's lambda_min_clipped).
  nlohmann::json j = read_json_file(path);
  OTTER_CHECK(j.is_object() && j.contains("file") && j["file"].is_string(), "golden manifest '", path.string(),
              "' must be a JSON object with a string \"file\" key");
  return j;
}

}  // namespace

Golden::Golden(const std::filesystem::path& manifest_json)
    : manifest_path_(manifest_json),
      manifest_(read_manifest(manifest_json)),
      file_(SafetensorsFile::open(manifest_json.parent_path() / manifest_["file"].get<std::string>())) {}

Tensor Golden::tensor(const std::string& name) const { return file_.tensor(name); }

const nlohmann::json& Golden::case_by_id(const std::string& id) const {
  const auto it = manifest_.find("cases");
  OTTER_CHECK(it != manifest_.end() && it->is_array(), "golden manifest '", manifest_path_.string(),
              "' has no \"cases\" array");
  for (const nlohmann::json& c : *it) {
    const auto id_it = c.find("id");
    if (id_it != c.end() && id_it->is_string() && id_it->get<std::string>() == id) return c;
  }
  throw Error(cat("golden manifest '", manifest_path_.string(), "' has no case with id '", id, "'"));
}

Tensor Golden::tensor_ref(const nlohmann::json& ref) const {
  OTTER_CHECK(ref.is_object() && ref.contains("name") && ref["name"].is_string(), "golden manifest '",
              manifest_path_.string(), "': not a tensor reference {name, shape, dtype}: ", ref.dump());
  const std::string name = ref["name"].get<std::string>();
  Tensor t = file_.tensor(name);
  if (ref.contains("shape")) {
    const Shape expected(ref["shape"].get<std::vector<int64_t>>());
    OTTER_CHECK(t.shape() == expected, "golden tensor '", name, "' has shape ", t.shape().str(), " but manifest '",
                manifest_path_.string(), "' says ", expected.str());
  }
  if (ref.contains("dtype")) {
    const std::string dt = ref["dtype"].get<std::string>();
    OTTER_CHECK(dtype_name(t.dtype()) == dt, "golden tensor '", name, "' has dtype ", dtype_name(t.dtype()),
                " but manifest '", manifest_path_.string(), "' says ", dt);
  }
  return t;
}

}  // namespace otter::testing
