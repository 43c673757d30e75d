// `otter lab` end to end on the bundled model: one PNG per experiment with its generate
// parameters, lab.json with every step's numbers, and index.html — well-formed (its elements
// balance), self-contained (no external resource), holding every experiment, its filmstrips and
// plots. Where Debian's chromium is installed, the page is rendered headless and the screenshot
// must show the grid (non-blank pixels where it is).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/png.h"
#include "models/latent_rgb_map.h"
#include "pipeline/default_model.h"
#include "run_otter.h"

namespace otter {
namespace {

namespace fs = std::filesystem;

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A small well-formedness check: every non-void element closes, in order.
void expect_balanced(const std::string& html) {
  static const std::regex tag(R"(<(/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*?(/?)>)");
  static const std::vector<std::string> void_elements{"meta", "img", "br", "rect", "polyline", "link", "hr"};
  std::vector<std::string> open;
  for (std::sregex_iterator it(html.begin(), html.end(), tag), end; it != end; ++it) {
    const std::string name = (*it)[2], closing = (*it)[1], self = (*it)[3];
    if (name == "DOCTYPE" || !self.empty()) continue;
    if (std::find(void_elements.begin(), void_elements.end(), name) != void_elements.end() && closing.empty()) continue;
    if (closing.empty()) {
      open.push_back(name);
    } else {
      ASSERT_FALSE(open.empty()) << "</" << name << "> closes nothing";
      ASSERT_EQ(open.back(), name) << "</" << name << "> closes <" << open.back() << ">";
      open.pop_back();
    }
  }
  EXPECT_TRUE(open.empty()) << open.size() << " elements left open, innermost <" << (open.empty() ? "" : open.back()) << ">";
}

TEST(OtterLab, WritesImagesNumbersAndASelfContainedReport) {
  const fs::path dir = fs::temp_directory_path() / cat("otter_lab_", ::getpid());
  fs::remove_all(dir);
  const testing::OtterRun r = testing::run_otter(
      cat("lab -p 'a red circle on a blue background' --seed 1 --steps 8 --decode-steps 1,4,8 -o '", dir.string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(testing::contains(r.err, "one UNet call")) << r.err;
  const std::vector<std::string> names{"cond", "uncond", "cfg", "negative", "reversed", "scheduled", "scale_15"};
  for (const std::string& n : names) {
    const PngImage png = read_png(dir / (n + ".png"));
    EXPECT_TRUE(png.find_text("parameters").has_value()) << n;
  }
  EXPECT_TRUE(testing::contains(read_png(dir / "negative.png").find_text("parameters").value(),
                                "Negative prompt: solar system with 9 planets"));
  const PngImage sheet = read_png(dir / "contact_sheet.png");
  // Seven images side by side at the bundled model's native size (sample_size latents x 8).
  const int native =
      nlohmann::json::parse(std::ifstream(find_default_model() / "unet" / "config.json")).at("sample_size").get<int>() * 8;
  EXPECT_EQ(sheet.width, 7 * native + 8 * 4);
  EXPECT_EQ(sheet.height, native + 8);
  const nlohmann::json lab = nlohmann::json::parse(read(dir / "lab.json"));
  ASSERT_EQ(lab["experiments"].size(), names.size());
  for (const auto& e : lab["experiments"]) EXPECT_EQ(e["steps"].size(), 8u) << e["name"];

  const std::string html = read(dir / "index.html");
  expect_balanced(html);
  EXPECT_FALSE(std::regex_search(html, std::regex(R"((src|href)\s*=\s*"(https?:)?//)"))) << "external resource";
  EXPECT_FALSE(testing::contains(html, "<script"));
  for (const char* n : {"cond", "uncond", "cfg", "negative", "reversed", "scheduled", "scale 15"})
    EXPECT_TRUE(testing::contains(html, cat("<h2>", n, "</h2>"))) << n;
  EXPECT_TRUE(testing::contains(html, "<div id=\"grid\">"));
  // 7 grid images + per experiment 4 rows x 8 steps (the every-step filmstrip, from the cheap
  // latent->RGB map) + 4 rows x 3 steps (the VAE's decodes).
  const auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = html.find(what); at != std::string::npos; at = html.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("<img "), 7u + 7u * 4u * 8u + 7u * 4u * 3u);
  EXPECT_TRUE(testing::contains(r.err, "168 latent->RGB previews and 63 VAE decodes")) << r.err;
  EXPECT_TRUE(testing::contains(html, "levels of 255 against this VAE's decodes"));
  // lab.json has the map used and its error, as in the cache file beside the model.
  const LatentRgbMap map = LatentRgbMap::from_json(lab.at("preview_map").at("map"), "lab.json");
  EXPECT_EQ(map.channels, 4);
  EXPECT_GT(lab["preview_map"]["held_out_mean_abs_error"].get<double>(), 0.0);
  EXPECT_EQ(count("<svg "), 14u);

  // Rendered by a real browser, where one is installed (Debian's chromium; CI may lack it).
  const char* chromium = fs::exists("/usr/bin/chromium") ? "/usr/bin/chromium" : nullptr;
  if (chromium) {
    const fs::path shot = dir / "shot.png";
    const std::string cmd = cat(chromium, " --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1000,700 "
                                "--screenshot='", shot.string(), "' 'file://", (dir / "index.html").string(), "' >/dev/null 2>&1");
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const PngImage page = read_png(shot);
    ASSERT_GE(page.height, 400);
    // The grid sits below the two paragraphs, from about y = 150: the images there are not all white.
    int64_t coloured = 0;
    for (int y = 150; y < 320 && y < page.height; ++y)
      for (int x = 0; x < 1000 && x < page.width; ++x) {
        const uint8_t* p = &page.pixels[(static_cast<size_t>(y) * page.width + x) * page.channels];
        coloured += !(p[0] > 240 && p[1] > 240 && p[2] > 240);
      }
    EXPECT_GT(coloured, 20000) << "the grid does not show in the rendered page";
  } else {
    std::printf("[ lab      ] chromium not installed: the page was checked but not rendered\n");
  }
  fs::remove_all(dir);
}

// --no-previews: neither map pictures nor VAE decodes, the filmstrips show Δ only.
TEST(OtterLab, NoPreviewsShowsTheDifferenceOnly) {
  const fs::path dir = fs::temp_directory_path() / cat("otter_lab_np_", ::getpid());
  fs::remove_all(dir);
  const testing::OtterRun r = testing::run_otter(cat("lab -p 'a red circle' --seed 1 --steps 4 --experiments cfg,uncond "
                                                     "--no-previews -o '", dir.string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(testing::contains(r.err, "0 latent->RGB previews and 0 VAE decodes")) << r.err;
  const std::string html = read(dir / "index.html");
  size_t images = 0;
  for (size_t at = html.find("<img "); at != std::string::npos; at = html.find("<img ", at + 1)) ++images;
  EXPECT_EQ(images, 2u + 2u * 4u);  // the grid, then Δ at each of 4 steps per experiment
  expect_balanced(html);
  fs::remove_all(dir);
}

TEST(OtterLab, BadOptionsFailBeforeAnyWork) {
  const fs::path dir = fs::temp_directory_path() / cat("otter_lab_bad_", ::getpid());
  fs::remove_all(dir);
  const struct {
    const char* options;
    const char* message;
  } cases[] = {
      {"--decode-steps 1,x", "--decode-steps: 'x' is not a step number"},
      {"--experiments cfg,nonsense", "--experiments: no experiment 'nonsense'"},
      {"--guidance 'apg:sigma=1'", "AdaptiveProjectedGuidance has no parameter sigma"},
  };
  for (const auto& c : cases) {
    const testing::OtterRun r = testing::run_otter(cat("lab -p x --steps 2 ", c.options, " -o '", dir.string(), "'"));
    EXPECT_NE(r.status, 0) << c.options;
    EXPECT_TRUE(testing::contains(r.err, c.message)) << c.options << ": " << r.err;
    EXPECT_FALSE(fs::exists(dir)) << c.options;
  }
}

}  // namespace
}  // namespace otter
