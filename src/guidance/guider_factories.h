#pragma once
// One factory per guider file; make_guider (guider_registry.cpp) picks among them by name.
#include <memory>

#include <nlohmann/json.hpp>

#include "guidance/guider.h"

namespace otter {

std::unique_ptr<Guider> make_cfg_guider(const nlohmann::json& params);             // cfg_guider.cpp
std::unique_ptr<Guider> make_cfg_zero_star_guider(const nlohmann::json& params);   // cfg_zero_star_guider.cpp
std::unique_ptr<Guider> make_apg_guider(const nlohmann::json& params);             // apg_guider.cpp
std::unique_ptr<Guider> make_tcfg_guider(const nlohmann::json& params);            // tcfg_guider.cpp
std::unique_ptr<Guider> make_mambo_guider(const nlohmann::json& params);           // mambo_guider.cpp

namespace guider_detail {
// d = c - u, elementwise in f32.
Tensor difference(const Tensor& c, const Tensor& u);
}  // namespace guider_detail

}  // namespace otter
