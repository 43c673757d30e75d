# Turns every configs/**/*.json into a C++ string literal in one generated source file, so the
# built-in SD 1.x / 2.x configurations travel inside the otter binary and single-file
# checkpoints open from any working directory, installed or not.
# Usage: cmake -DROOT=<configs dir> -DOUT=<generated .cpp> -P embed_configs.cmake
file(GLOB_RECURSE files RELATIVE ${ROOT} ${ROOT}/*.json)
list(SORT files)
set(body "")
foreach(rel IN LISTS files)
  file(READ ${ROOT}/${rel} text)
  string(FIND "${text}" ")otter_json\"" clash)
  if(NOT clash EQUAL -1)
    message(FATAL_ERROR "${rel} contains the raw-string delimiter )otter_json\"")
  endif()
  string(APPEND body "    {\"${rel}\", R\"otter_json(${text})otter_json\"},\n")
endforeach()
file(WRITE ${OUT}.tmp
"// Generated from configs/ by configs/embed_configs.cmake; do not edit.
#include <cstddef>
#include <string_view>

namespace otter::embedded {

struct ConfigFile {
  std::string_view path;  // relative to configs/, e.g. \"sd1/unet.json\"
  std::string_view text;
};

extern const ConfigFile kConfigFiles[];
extern const std::size_t kConfigFileCount;

const ConfigFile kConfigFiles[] = {
${body}};
const std::size_t kConfigFileCount = sizeof(kConfigFiles) / sizeof(kConfigFiles[0]);

}  // namespace otter::embedded
")
# Only touch the output when it changed, so an unrelated re-run does not rebuild the library.
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
file(REMOVE ${OUT}.tmp)
