// Every case of ../shared/golden/tokenizer_cases.jsonl (made with OpenAI's CLIP tokenizer without
// ftfy), through the shared tokenizer folder and both tiny models' own folders: the full BPE ids
// and the SD1 / SD2 77-id windows must match exactly.
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/shared_data.h"
#include "text/builtin_clip_vocab.h"
#include "text/clip_tokenizer.h"

namespace otter {
namespace {

struct GoldenCase {
  int index;
  std::string text;  // exact bytes, from text_utf8_hex
  std::vector<int> ids, sd1_input_ids, sd2_input_ids;
  bool truncated;
};

std::string from_hex(const std::string& hex) {
  std::string bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return bytes;
}

std::vector<GoldenCase> read_cases(const std::filesystem::path& file) {
  std::ifstream in(file);
  EXPECT_TRUE(in) << file;
  std::vector<GoldenCase> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    GoldenCase c{j.at("index").get<int>(),
                 from_hex(j.at("text_utf8_hex").get<std::string>()),
                 j.at("ids").get<std::vector<int>>(),
                 j.at("sd1_input_ids").get<std::vector<int>>(),
                 j.at("sd2_input_ids").get<std::vector<int>>(),
                 j.at("truncated").get<bool>()};
    EXPECT_EQ(c.text, j.at("text").get<std::string>()) << "case " << c.index << ": text and text_utf8_hex disagree";
    cases.push_back(std::move(c));
  }
  return cases;
}

TokenizeOptions quiet(std::optional<int> pad_id = std::nullopt) {
  TokenizeOptions o;
  o.pad_id = pad_id;
  o.warn = false;
  return o;
}

std::vector<int> as_vector(const ClipWindow& w) { return {w.begin(), w.end()}; }

class ClipTokenizerGolden : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto dir = ::otter::testing::shared_dir();
    if (!dir) GTEST_SKIP() << "reference data ../shared not found (set OTTER_SHARED_DIR)";
    shared_ = *dir;
    cases_ = read_cases(shared_ / "golden" / "tokenizer_cases.jsonl");
    ASSERT_EQ(cases_.size(), 167u);
  }
  std::filesystem::path shared_;
  std::vector<GoldenCase> cases_;
};

TEST_F(ClipTokenizerGolden, SharedClipFolderMatchesEveryCase) {
  const auto wall_start = std::chrono::steady_clock::now();
  const std::clock_t cpu_start = std::clock();
  const ClipTokenizer tok = ClipTokenizer::load(shared_ / "tokenizer" / "clip");
  const double cpu_ms = 1000.0 * static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
  const double wall_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - wall_start).count();
  std::cout << "[ info ] tokenizer load (vocab.json + merges.txt): " << wall_ms << " ms wall, " << cpu_ms
            << " ms CPU\n";
  EXPECT_EQ(tok.vocab_size(), 49408);
  EXPECT_EQ(tok.bos_id(), 49406);
  EXPECT_EQ(tok.eos_id(), 49407);
  EXPECT_EQ(tok.pad_id(), 49407);

  int matched = 0;
  for (const GoldenCase& c : cases_) {
    const std::vector<int> ids = tok.encode(c.text);
    EXPECT_EQ(ids, c.ids) << "case " << c.index << " '" << c.text << "'";
    const TokenizedPrompt p = tok.tokenize(c.text, quiet());
    ASSERT_EQ(p.windows.size(), 1u);
    EXPECT_EQ(as_vector(p.windows[0]), c.sd1_input_ids) << "case " << c.index;
    EXPECT_EQ(p.truncated, c.truncated) << "case " << c.index;
    // The SD 2.x window is the same with "!" as pad.
    const TokenizedPrompt p2 = tok.tokenize(c.text, quiet(tok.token_id("!")));
    EXPECT_EQ(as_vector(p2.windows[0]), c.sd2_input_ids) << "case " << c.index;
    matched +=
        (ids == c.ids && as_vector(p.windows[0]) == c.sd1_input_ids && as_vector(p2.windows[0]) == c.sd2_input_ids);
  }
  std::cout << "[ info ] golden cases matched: " << matched << " / " << cases_.size() << "\n";
}

TEST_F(ClipTokenizerGolden, ModelFoldersPadAsTheirFamily) {
  const ClipTokenizer sd1 = ClipTokenizer::load(shared_ / "models" / "tiny-sd1" / "tokenizer");
  const ClipTokenizer sd2 = ClipTokenizer::load(shared_ / "models" / "tiny-sd2" / "tokenizer");
  EXPECT_EQ(sd1.pad_id(), 49407);
  EXPECT_EQ(sd2.pad_id(), 0);
  for (const GoldenCase& c : cases_) {
    EXPECT_EQ(sd1.encode(c.text), c.ids) << "case " << c.index;
    EXPECT_EQ(sd2.encode(c.text), c.ids) << "case " << c.index;
    EXPECT_EQ(as_vector(sd1.tokenize(c.text, quiet()).windows[0]), c.sd1_input_ids) << "case " << c.index;
    EXPECT_EQ(as_vector(sd2.tokenize(c.text, quiet()).windows[0]), c.sd2_input_ids) << "case " << c.index;
  }
}

// The vocabulary built into otter is byte for byte the reference one, and with no tokenizer folder
// at all it passes every golden case (SD 1.x pads with EOS, SD 2.x with "!").
TEST_F(ClipTokenizerGolden, BuiltinVocabularyIsTheReferenceOne) {
  const auto read = [](const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    EXPECT_TRUE(in) << file;
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  const auto inflate_start = std::chrono::steady_clock::now();
  const BuiltinClipVocab& builtin = builtin_clip_vocab();
  const double inflate_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - inflate_start).count();
  EXPECT_TRUE(builtin.vocab_json == read(shared_ / "tokenizer" / "clip" / "vocab.json"))
      << "the built-in vocab.json differs from ../shared/tokenizer/clip/vocab.json";
  EXPECT_TRUE(builtin.merges_txt == read(shared_ / "tokenizer" / "clip" / "merges.txt"))
      << "the built-in merges.txt differs from ../shared/tokenizer/clip/merges.txt";

  const auto load_start = std::chrono::steady_clock::now();
  const ClipTokenizer tok = ClipTokenizer::builtin();
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start).count();
  std::cout << "[ info ] built-in vocabulary: " << builtin_clip_vocab_compressed_bytes() << " bytes gzipped in the "
            << "binary for " << builtin.vocab_json.size() + builtin.merges_txt.size() << "; inflate " << inflate_ms
            << " ms, tokenizer from it " << load_ms << " ms\n";
  EXPECT_TRUE(tok.dir().empty());
  EXPECT_EQ(tok.vocab_size(), 49408);
  EXPECT_EQ(tok.pad_id(), 49407);
  const int sd2_pad = *tok.token_id("!");
  EXPECT_EQ(sd2_pad, 0);
  for (const GoldenCase& c : cases_) {
    EXPECT_EQ(tok.encode(c.text), c.ids) << "case " << c.index;
    EXPECT_EQ(as_vector(tok.tokenize(c.text, quiet()).windows[0]), c.sd1_input_ids) << "case " << c.index;
    EXPECT_EQ(as_vector(tok.tokenize(c.text, quiet(sd2_pad)).windows[0]), c.sd2_input_ids) << "case " << c.index;
  }
}

TEST_F(ClipTokenizerGolden, CachedEncodingGivesTheSameIds) {
  const ClipTokenizer tok = ClipTokenizer::load(shared_ / "tokenizer" / "clip");
  for (int pass = 0; pass < 2; ++pass) {  // the second pass is served from the piece cache
    for (const GoldenCase& c : cases_) EXPECT_EQ(tok.encode(c.text), c.ids) << "pass " << pass << " case " << c.index;
  }
}

}  // namespace
}  // namespace otter
