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
