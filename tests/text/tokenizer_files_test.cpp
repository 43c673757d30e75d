// Loading the tokenizer files: every broken file is an otter::Error naming the file and line,
// the pad token comes from the special-token files, and choose_tokenizer's order.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "core/error.h"
#include "support/shared_data.h"
#include "support/temp_dir.h"
#include "text/bpe_files.h"
#include "text/clip_tokenizer.h"
#include "text/tokenizer_location.h"

namespace otter {
namespace {

namespace fs = std::filesystem;

using otter::testing::TempDir;

void write(const fs::path& file, const std::string& content) {
  fs::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary) << content;
}

// A tiny but complete CLIP-style vocabulary: the 512 byte symbols, a few merges, the specials.
struct TinyTokenizer {
  std::string vocab, merges;
};

TinyTokenizer tiny_tokenizer_files(const std::vector<std::string>& merged_tokens = {"ca", "cat</w>"},
                                   const std::string& merges = "#version: 0.2\nc a\nca t</w>\n") {
  // Byte symbols from the GPT-2 rule, listed in byte order (the real file lists '!'..'~' first).
  std::vector<std::string> symbols;
  int next = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const int cp = self ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    symbols.push_back(s);
  }
  const auto json_string = [](const std::string& s) {
    std::string out = "\"";
    for (const char c : s) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    return out + "\"";
  };
  std::string vocab = "{";
  int id = 0;
  const auto add = [&](const std::string& token) {
    vocab += (id == 0 ? "" : ",\n") + json_string(token) + ": " + std::to_string(id);
    ++id;
  };
  for (const auto& s : symbols) add(s);
  for (const auto& s : symbols) add(s + "</w>");
  for (const auto& token : merged_tokens) add(token);
  add("<|startoftext|>");
  add("<|endoftext|>");
  vocab += "}\n";
  return {vocab, merges};
}

TEST(TokenizerFiles, TinyVocabularyEncodesWithItsMerges) {
  TempDir dir("tokenizer");
  const TinyTokenizer files = tiny_tokenizer_files();
  write(dir.path() / "vocab.json", files.vocab);
  write(dir.path() / "merges.txt", files.merges);
  const ClipTokenizer tok = ClipTokenizer::load(dir.path());
  EXPECT_EQ(tok.vocab_size(), 516);
  EXPECT_EQ(tok.pad_id(), 515);  // no special-token files: OpenAI's tokenizer pads with EOS
  EXPECT_EQ(tok.encode("cat"), std::vector<int>({513}));
  EXPECT_EQ(tok.encode("cab"), std::vector<int>({512, *tok.token_id("b</w>")}));
  EXPECT_EQ(tok.encode("a cat"), std::vector<int>({*tok.token_id("a</w>"), 513}));
}

// CLIP merges every occurrence of the best pair in one pass before looking at the pairs that pass
// created, even when one of those has a better rank (possible only in a hand-made merge list).
TEST(TokenizerFiles, OnePassPerRankEvenWhenNewPairsRankBetter) {
  TempDir dir("tokenizer");
  const TinyTokenizer files = tiny_tokenizer_files({"ab", "aba"}, "#version: 0.2\nab a\na b\n");
  write(dir.path() / "vocab.json", files.vocab);
  write(dir.path() / "merges.txt", files.merges);
  const ClipTokenizer tok = ClipTokenizer::load(dir.path());
  // a b a b c</w>: pass "a b" -> ab ab c</w>; then ("ab","ab") and ("ab","c</w>") are no merges.
  // Merging greedily by rank instead would give aba b c</w>.
  EXPECT_EQ(tok.encode("ababc"), std::vector<int>({*tok.token_id("ab"), *tok.token_id("ab"), *tok.token_id("c</w>")}));
  // a b a</w>: pass "a b" -> ab a</w>; ("ab", "a</w>") is no merge either.
  EXPECT_EQ(tok.encode("aba"), std::vector<int>({*tok.token_id("ab"), *tok.token_id("a</w>")}));
}

TEST(TokenizerFiles, PadTokenFromSpecialTokensMapOrConfig) {
  TempDir dir("tokenizer");
  const TinyTokenizer files = tiny_tokenizer_files();
  write(dir.path() / "vocab.json", files.vocab);
  write(dir.path() / "merges.txt", files.merges);
  write(dir.path() / "tokenizer_config.json", R"({"pad_token": {"content": "!", "lstrip": false}})");
  EXPECT_EQ(ClipTokenizer::load(dir.path()).pad_id(), '!');  // the tiny vocabulary is in byte order
  write(dir.path() / "special_tokens_map.json", R"({"pad_token": "<|endoftext|>"})");
  EXPECT_EQ(ClipTokenizer::load(dir.path()).pad_id(), 515);
  write(dir.path() / "special_tokens_map.json", R"({"pad_token": "<pad>"})");
  EXPECT_THROW((void)ClipTokenizer::load(dir.path()), Error);
}

// Runs `load` and returns the error message ("" if none).
std::string load_error(const fs::path& dir) {
  try {
    (void)ClipTokenizer::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(TokenizerFiles, MissingFilesNameTheFile) {
  TempDir dir("tokenizer");
  std::string message = load_error(dir.path());
  EXPECT_TRUE(contains(message, "vocab.json")) << message;
  write(dir.path() / "vocab.json", tiny_tokenizer_files().vocab);
  message = load_error(dir.path());
  EXPECT_TRUE(contains(message, "merges.txt")) << message;
}

TEST(TokenizerFiles, MalformedMergesLineNamesFileAndLine) {
  TempDir dir("tokenizer");
  write(dir.path() / "vocab.json", tiny_tokenizer_files().vocab);
  write(dir.path() / "merges.txt", "#version: 0.2\nc a\ncat\n");
  std::string message = load_error(dir.path());
  EXPECT_TRUE(contains(message, "merges.txt' line 3")) << message;
  EXPECT_TRUE(contains(message, "two BPE symbols")) << message;

  write(dir.path() / "merges.txt", "#version: 0.2\nc a\nq z\n");  // "qz" is no vocabulary token
  message = load_error(dir.path());
  EXPECT_TRUE(contains(message, "merges.txt' line 3")) << message;
  EXPECT_TRUE(contains(message, "not in vocab.json")) << message;

  write(dir.path() / "merges.txt", "#version: 0.2\nc a\n\nca t</w>\n");  // a hole shifts ranks
  message = load_error(dir.path());
  EXPECT_TRUE(contains(message, "line 3")) << message;

  write(dir.path() / "merges.txt", "#version: 0.2\r\nc a\r\nca t</w>\r\n\r\n");  // CRLF, trailing blank: fine
  EXPECT_EQ(load_error(dir.path()), "");
}

TEST(TokenizerFiles, InvalidVocabJsonNamesFileLineAndColumn) {
  TempDir dir("tokenizer");
  write(dir.path() / "merges.txt", "#version: 0.2\n");
  const auto error_for = [&](const std::string& vocab) {
    write(dir.path() / "vocab.json", vocab);
    return load_error(dir.path());
  };
  std::string message = error_for("{\"a\": 0,\n\"b\" 1}");
  EXPECT_TRUE(contains(message, "vocab.json' line 2, column 5")) << message;
  message = error_for("{\"a\": 0,\n\"b\": 1.5}");
  EXPECT_TRUE(contains(message, "line 2")) << message;
  EXPECT_TRUE(contains(message, "integer")) << message;
  message = error_for("{\"a\": 0, \"a\": 1}");
  EXPECT_TRUE(contains(message, "appears twice")) << message;
  message = error_for("{\"a\": 0, \"b\": 0}");
  EXPECT_TRUE(contains(message, "two tokens")) << message;
  message = error_for("{\"a\": 0, \"b\": 7}");
  EXPECT_TRUE(contains(message, "out of range")) << message;
  message = error_for("[1, 2]");
  EXPECT_TRUE(contains(message, "line 1, column 1")) << message;
  message = error_for("{\"a\": 0");
  EXPECT_TRUE(contains(message, "',' or '}'")) << message;
  message = error_for("{\"\\ud800\": 0}");
  EXPECT_TRUE(contains(message, "surrogate")) << message;
  // Valid JSON that is not a CLIP vocabulary: the byte symbols are missing.
  message = error_for("{\"\\u0041\\n\": 0}");
  EXPECT_TRUE(contains(message, "byte token")) << message;
}

TEST(TokenizerFiles, VocabJsonEscapesAreDecoded) {
  TempDir dir("tokenizer");
  write(dir.path() / "vocab.json", "{\"\\u00e9\\/\\\"\": 1, \"\\ud83d\\udc31\": 0, \"x\\ty\": 2}");
  const BpeVocab vocab = read_vocab_json(dir.path() / "vocab.json");
  ASSERT_EQ(vocab.size(), 3);
  EXPECT_EQ(vocab.token(0), "\xF0\x9F\x90\xB1");
  EXPECT_EQ(vocab.token(1), "\xC3\xA9/\"");
  EXPECT_EQ(vocab.token(2), "x\ty");
}

TEST(TokenizerLocation, ModelFolderThenOverrideThenBuiltin) {
  TempDir dir("tokenizer");
  const TinyTokenizer files = tiny_tokenizer_files();
  const auto make = [&](const fs::path& d) {
    write(d / "vocab.json", files.vocab);
    write(d / "merges.txt", files.merges);
  };
  const fs::path model_tok = dir.path() / "model" / "tokenizer", override_dir = dir.path() / "override";

  // Nothing given, or a model tokenizer/ folder without the files: the built-in vocabulary.
  EXPECT_EQ(choose_tokenizer(std::nullopt, std::nullopt).origin, TokenizerChoice::Origin::builtin);
  fs::create_directories(model_tok);
  const TokenizerChoice builtin = choose_tokenizer(model_tok, std::nullopt);
  EXPECT_EQ(builtin.origin, TokenizerChoice::Origin::builtin);
  EXPECT_FALSE(builtin.dir.has_value());
  EXPECT_TRUE(contains(builtin.describe(), "built-in")) << builtin.describe();
  EXPECT_EQ(load_tokenizer(builtin).vocab_size(), 49408);

  // An override without the files is an error, not a silent fall-back.
  try {
    (void)choose_tokenizer(model_tok, override_dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_TRUE(contains(message, override_dir.string())) << message;
    EXPECT_TRUE(contains(message, "vocab.json and merges.txt")) << message;
  }
  make(override_dir);
  const TokenizerChoice overridden = choose_tokenizer(model_tok, override_dir);
  EXPECT_EQ(overridden.origin, TokenizerChoice::Origin::user_override);
  EXPECT_EQ(overridden.dir, override_dir);
  EXPECT_EQ(load_tokenizer(overridden).vocab_size(), 516);  // 512 byte symbols, 2 merges, 2 specials

  // The model's own folder wins over both, and an ignored override is reported.
  make(model_tok);
  ::testing::internal::CaptureStderr();
  const TokenizerChoice own = choose_tokenizer(model_tok, override_dir);
  EXPECT_TRUE(contains(::testing::internal::GetCapturedStderr(), "is ignored"));
  EXPECT_EQ(own.origin, TokenizerChoice::Origin::model_folder);
  EXPECT_EQ(own.dir, model_tok);
  EXPECT_EQ(choose_tokenizer(model_tok, std::nullopt).dir, model_tok);
}

TEST(TokenizerLocation, SharedModelFoldersHaveTheirOwnTokenizer) {
  OTTER_REQUIRE_SHARED(shared);
  const fs::path tok = shared / "models" / "tiny-sd2" / "tokenizer";
  EXPECT_EQ(choose_tokenizer(tok, std::nullopt).dir, tok);
}

}  // namespace
}  // namespace otter
