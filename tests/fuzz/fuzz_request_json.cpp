// libFuzzer: otter serve's request bodies — the JSON parser, the three APIs' field checks and the lab's.
// Anything may come in; the only acceptable outcomes are a spec or an ApiError.
#include <cstddef>
#include <cstdint>
#include <string>

#include "api_request.h"
#include "lab_api.h"

namespace {

class Models : public otter::serve::ModelCatalog {
 public:
  bool has(const std::string& name) const override { return name == "otter-shapes" || name == "sd15"; }
  std::vector<std::string> names() const override { return {"otter-shapes", "sd15"}; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace otter::serve;
  const std::string text(reinterpret_cast<const char*>(data), size);
  static const Models models;
  const Limits limits;
  try {
    const nlohmann::json body = parse_body(text);
    for (int api = 0; api < 4; ++api) {
      try {
        const GenerationSpec spec = api == 0   ? parse_webui_txt2img(body, limits, models, "")
                                    : api == 1 ? parse_openai_generation(body, limits, models)
                                    : api == 2 ? parse_native_job(body, limits, models)
                                               : parse_webui_img2img(body, limits, models, "");
        (void)spec.rows();
      } catch (const ApiError&) {
      }
    }
    try {
      (void)parse_lab_request(body, limits, models);
    } catch (const ApiError&) {
    }
  } catch (const ApiError&) {
  }
  return 0;
}
