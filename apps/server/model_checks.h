#pragma once
// The request checks that need the loaded model (api_request.h has those that do not).
#include "api_request.h"

namespace otter::serve {

// The checks that need the model, before the job is queued: the size's divisibility by the UNet's,
// the sampler with the model's scheduler, the guider's layers and latent size. Fills in the
// model's own size where none was asked. Field names are the API's.
struct ModelFields {
  const char* width = "width";
  const char* height = "height";
  const char* sampler = "sampler";
  const char* guidance = "guidance";
};
struct LoadedModel;
void check_against_model(GenerationSpec& spec, const LoadedModel& model, const ModelFields& fields);

}  // namespace otter::serve
