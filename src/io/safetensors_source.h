#pragma once
// A TensorSource over one or more safetensors files whose names already are the names the
// model asks for (a diffusers component folder, or a file with a prefix stripped).
#include <filesystem>
#include <map>
#include <vector>

#include "io/safetensors.h"
#include "models/weights.h"

namespace otter {

class SafetensorsSource : public TensorSource {
 public:
  // `strip_prefix`: only tensors starting with it are visible, with it removed.
  explicit SafetensorsSource(const std::filesystem::path& path, std::string strip_prefix = "")
      : file_(SafetensorsFile::open(path)), prefix_(std::move(strip_prefix)) {
    for (const std::string& n : file_.names())
      if (n.rfind(prefix_, 0) == 0) names_.push_back(n.substr(prefix_.size()));
  }
  bool has(const std::string& name) const override { return file_.has(prefix_ + name); }
  Tensor get(const std::string& name) const override { return file_.tensor(prefix_ + name); }
  std::vector<std::string> names() const override { return names_; }
  std::string origin() const override { return file_.path().string(); }
  const SafetensorsFile& file() const { return file_; }

 private:
  SafetensorsFile file_;
  std::string prefix_;
  std::vector<std::string> names_;
};

}  // namespace otter
