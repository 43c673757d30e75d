# Finds oneDNN from its header and library directly and defines the imported target DNNL::dnnl.
#
# Why not oneDNN's own CMake package (find_package(dnnl CONFIG))? Debian builds libdnnl with its
# OpenCL GPU runtime, so dnnl-config.cmake calls find_dependency(OpenCL) and fails on a machine
# without the OpenCL development files (ocl-icd-opencl-dev, opencl-c-headers), which otter does
# not use: it runs oneDNN on the CPU engine only. The shared library links its OpenCL loader
# itself (libdnnl3 depends on ocl-icd-libopencl1), so the header and the .so are all we need.
find_path(ONEDNN_INCLUDE_DIR oneapi/dnnl/dnnl.hpp)
find_library(ONEDNN_LIBRARY NAMES dnnl)
if(ONEDNN_INCLUDE_DIR AND EXISTS "${ONEDNN_INCLUDE_DIR}/oneapi/dnnl/dnnl_version.h")
  file(STRINGS "${ONEDNN_INCLUDE_DIR}/oneapi/dnnl/dnnl_version.h" _onednn_version_lines
       REGEX "#define DNNL_VERSION_(MAJOR|MINOR|PATCH) ")
  foreach(part MAJOR MINOR PATCH)
    string(REGEX REPLACE ".*#define DNNL_VERSION_${part} ([0-9]+).*" "\\1" _onednn_${part} "${_onednn_version_lines}")
  endforeach()
  set(OneDNN_VERSION "${_onednn_MAJOR}.${_onednn_MINOR}.${_onednn_PATCH}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(OneDNN
  REQUIRED_VARS ONEDNN_LIBRARY ONEDNN_INCLUDE_DIR
  VERSION_VAR OneDNN_VERSION
  REASON_FAILURE_MESSAGE "install Debian's libdnnl-dev (tools/install-deps --run does)")

if(OneDNN_FOUND AND NOT TARGET DNNL::dnnl)
  add_library(DNNL::dnnl SHARED IMPORTED)
  set_target_properties(DNNL::dnnl PROPERTIES
    IMPORTED_LOCATION "${ONEDNN_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${ONEDNN_INCLUDE_DIR}")
endif()
mark_as_advanced(ONEDNN_INCLUDE_DIR ONEDNN_LIBRARY)
