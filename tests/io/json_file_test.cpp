// Python-written JSON: NaN / Infinity / -Infinity tokens outside strings become doubles; inside
// strings they stay text; malformed JSON is an error naming the origin.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "io/json_file.h"

namespace otter {
namespace {

TEST(PythonJson, ReadsNonStandardFloats) {
  const auto j = parse_python_json(R"({"a": -Infinity, "b": Infinity, "c": NaN, "d": [1, -Infinity],
                                       "s": "NaN and -Infinity stay text", "e": "esc\"NaN"})",
                                   "test.json");
  EXPECT_TRUE(std::isinf(j["a"].get<double>()) && j["a"].get<double>() < 0);
  EXPECT_TRUE(std::isinf(j["b"].get<double>()) && j["b"].get<double>() > 0);
  EXPECT_TRUE(std::isnan(j["c"].get<double>()));
  EXPECT_TRUE(std::isinf(j["d"][1].get<double>()));
  EXPECT_EQ(j["s"].get<std::string>(), "NaN and -Infinity stay text");
  EXPECT_EQ(j["e"].get<std::string>(), "esc\"NaN");
}

TEST(PythonJson, MalformedNamesOrigin) {
  for (const char* bad : {"{", "{\"a\": Infinit}", "[1,,2]", ""}) {
    try {
      parse_python_json(bad, "scheduler_config.json");
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("scheduler_config.json"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(read_json_file("/nonexistent/config.json"), Error);
}

}  // namespace
}  // namespace otter

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "io/model_files.h"
#include "support/shared_data.h"

namespace otter {
namespace {

// diffusers writes "lambda_min_clipped": -Infinity into DPM-Solver scheduler configs; a model
// folder saved that way must open.
TEST(PythonJson, ModelFolderWithInfinityInSchedulerConfigOpens) {
  OTTER_REQUIRE_SHARED(shared);
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / cat("otter_inf_model_", ::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir / "scheduler");
  for (const char* part : {"model_index.json", "text_encoder", "tokenizer", "unet", "vae"})
    fs::create_symlink(shared / "models" / "tiny-sd1" / part, dir / part);
  std::ofstream(dir / "scheduler" / "scheduler_config.json")
      << R"({"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
            "beta_end": 0.012, "lambda_min_clipped": -Infinity, "steps_offset": 1})";
  const ModelFiles files = open_model(dir);
  EXPECT_TRUE(std::isinf(files.configs.scheduler["lambda_min_clipped"].get<double>()));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace otter

namespace otter {
namespace {

// A float where a config wants an integer: converted only when it is one (3.0); NaN, Infinity,
// 2.5 and 1e300 are errors naming the key — nlohmann would cast them, undefined behaviour (found
// by tests/fuzz/fuzz_model_config: NaN in block_out_channels).
TEST(ConfigValue, FloatsWhereIntegersAreWantedAreCheckedFirst) {
  const nlohmann::json j = parse_python_json(
      R"({"a": 3.0, "b": NaN, "c": 2.5, "d": 1e300, "e": [320, NaN], "f": [1, 2.0], "g": Infinity})", "cfg");
  EXPECT_EQ(config_value_or<int>(j, "a", 0, "cfg"), 3);
  EXPECT_EQ(config_value_or<std::vector<int>>(j, "f", {}, "cfg"), (std::vector<int>{1, 2}));
  for (const char* key : {"b", "c", "d", "g"}) {
    try {
      (void)config_value_or<int>(j, key, 0, "unet config");
      ADD_FAILURE() << key << " was converted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(cat("unet config: key '", key, "' must hold integers")), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW((void)config_value_or<std::vector<int>>(j, "e", {}, "cfg"), Error);
  EXPECT_EQ(config_value_or<float>(j, "c", 0.0f, "cfg"), 2.5f);
}

}  // namespace
}  // namespace otter
