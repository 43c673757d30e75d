// libFuzzer: a .safetensors file's header and layout (otter maps files; the input is written to
// an in-memory file). Anything may come in; the only acceptable outcomes are a file whose every
// tensor can be viewed, or an otter::Error.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "io/lora.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("fuzz.safetensors", 0);
  if (fd < 0) return 0;
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) return 0;
  try {
    const auto file = otter::SafetensorsFile::open("/proc/self/fd/" + std::to_string(fd));
    for (const std::string& name : file.names()) {
      const otter::Tensor t = file.tensor(name);
      (void)t.numel();
    }
    (void)file.metadata();
  } catch (const otter::Error&) {
  }
  try {  // the same bytes as a LoRA file
    const otter::LoraFile lora = otter::read_lora("/proc/self/fd/" + std::to_string(fd));
    (void)otter::describe_lora(lora);
  } catch (const otter::Error&) {
  }
  return 0;
}
