#include "guidance/guidance_schedule.h"

#include <cmath>

#include "core/error.h"
#include "core/number_text.h"

namespace otter {
namespace {

float parse_float(std::string_view s, std::string_view whole) {
  // std::from_chars for float is in GCC 12's libstdc++.
  float v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  OTTER_CHECK(ec == std::errc() && ptr == s.data() + s.size() && std::isfinite(v), "guidance schedule '", whole,
              "': '", s, "' is not a number. Forms: 7.5 | linear:START:END | cosine:START:END | list:S1,S2,...");
  return v;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t pos = 0;
  while (true) {
    const size_t next = s.find(sep, pos);
    parts.push_back(s.substr(pos, next == std::string_view::npos ? std::string_view::npos : next - pos));
    if (next == std::string_view::npos) break;
    pos = next + 1;
  }
  return parts;
}

}  // namespace

GuidanceSchedule GuidanceSchedule::constant(float scale) {
  GuidanceSchedule g;
  g.kind_ = Kind::Constant;
  g.start_ = g.end_ = scale;
  return g;
}

GuidanceSchedule GuidanceSchedule::linear(float start, float end) {
  GuidanceSchedule g;
  g.kind_ = Kind::Linear;
  g.start_ = start;
  g.end_ = end;
  return g;
}

GuidanceSchedule GuidanceSchedule::cosine(float start, float end) {
  GuidanceSchedule g = linear(start, end);
  g.kind_ = Kind::Cosine;
  return g;
}

GuidanceSchedule GuidanceSchedule::list(std::vector<float> scales) {
  OTTER_CHECK(!scales.empty(), "guidance schedule list is empty");
  GuidanceSchedule g;
  g.kind_ = Kind::List;
  g.list_ = std::move(scales);
  return g;
}

GuidanceSchedule GuidanceSchedule::parse(std::string_view text) {
  const auto parts = split(text, ':');
  if (parts.size() == 1) return constant(parse_float(parts[0], text));
  if (parts[0] == "constant" && parts.size() == 2) return constant(parse_float(parts[1], text));
  if ((parts[0] == "linear" || parts[0] == "cosine") && parts.size() == 3) {
    const float a = parse_float(parts[1], text), b = parse_float(parts[2], text);
    return parts[0] == "linear" ? linear(a, b) : cosine(a, b);
  }
  if (parts[0] == "list" && parts.size() == 2) {
    std::vector<float> values;
    for (std::string_view v : split(parts[1], ',')) values.push_back(parse_float(v, text));
    return list(std::move(values));
  }
  throw Error(cat("cannot read guidance schedule '", text,
                  "'. Forms: 7.5 | linear:START:END | cosine:START:END | list:S1,S2,... (one value per step)"));
}

float GuidanceSchedule::at(int step, int steps) const {
  switch (kind_) {
    case Kind::Constant: return start_;
    case Kind::List: return list_.at(static_cast<size_t>(step));
    case Kind::Linear:
    case Kind::Cosine: {
      const double f = steps > 1 ? static_cast<double>(step) / (steps - 1) : 0.0;
      // Cosine eases from start to end: slow at both ends, like a cosine noise schedule.
      const double w = kind_ == Kind::Linear ? f : 0.5 * (1.0 - std::cos(M_PI * f));
      return static_cast<float>(start_ + (end_ - start_) * w);
    }
  }
  return start_;
}

void GuidanceSchedule::validate(int steps) const {
  if (kind_ == Kind::List)
    OTTER_CHECK(static_cast<int>(list_.size()) == steps, "guidance schedule lists ", list_.size(),
                " scales but the sampler runs ", steps, " steps: give exactly one scale per step");
}

std::string GuidanceSchedule::describe() const {
  // Each number in its shortest exact form: the PNG's schedule must reproduce the run.
  switch (kind_) {
    case Kind::Constant: return shortest_text(start_);
    case Kind::Linear: return "linear:" + shortest_text(start_) + ":" + shortest_text(end_);
    case Kind::Cosine: return "cosine:" + shortest_text(start_) + ":" + shortest_text(end_);
    case Kind::List: {
      std::string s = "list:";
      for (size_t i = 0; i < list_.size(); ++i) {
        // Appended piece by piece: `"," + shortest_text(...)` made GCC 12 warn falsely (-Wrestrict) in
        // the inlined std::string::insert.
        if (i) s += ',';
        s += shortest_text(list_[i]);
      }
      return s;
    }
  }
  return "";
}

}  // namespace otter
