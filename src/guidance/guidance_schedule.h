#pragma once
// The guidance scale per denoising step: constant (the usual), ramped linearly or along a
// half-cosine from s_start to s_end, or an explicit list with one value per step.
#include <string>
#include <string_view>
#include <vector>

namespace otter {

class GuidanceSchedule {
 public:
  enum class Kind { Constant, Linear, Cosine, List };

  static GuidanceSchedule constant(float scale);
  static GuidanceSchedule linear(float start, float end);
  static GuidanceSchedule cosine(float start, float end);
  static GuidanceSchedule list(std::vector<float> scales);
  // Parses the CLI spelling: "7.5", "linear:7.5:1", "cosine:10:3", "list:9,8,7,6". The plain
  // number form is also what --cfg-scale takes.
  static GuidanceSchedule parse(std::string_view text);

  // Scale at step `step` of `steps` (0-based). Linear and cosine reach s_end at the last step.
  float at(int step, int steps) const;
  // Checks a list schedule has one value per step; throws an otter::Error otherwise.
  void validate(int steps) const;

  Kind kind() const { return kind_; }
  std::string describe() const;  // "7.5", "linear 7.5 -> 1", ...

 private:
  Kind kind_ = Kind::Constant;
  float start_ = 7.5f, end_ = 7.5f;
  std::vector<float> list_;
};

}  // namespace otter
