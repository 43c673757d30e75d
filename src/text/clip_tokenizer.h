#pragma once
// The CLIP BPE tokenizer of SD 1.x/2.x: prompt text -> the 77-id windows the text encoder reads.
//
// It reproduces OpenAI's reference tokenizer (simple_tokenizer.py without ftfy), which is what
// ../shared/golden/tokenizer_cases.jsonl holds: html-unescape twice, whitespace clean-up, Unicode
// lower-casing, CLIP's split regex, then byte-level BPE (clip_text_rules.h has steps 1-4).
// HuggingFace's CLIPTokenizer differs only for prompts with html entities (it keeps "&amp;") or
// that are not NFC.
//
// A window is [BOS] + up to 75 prompt ids + [EOS], then padding to 77. SD 1.x pads with EOS
// (49407), SD 2.x with "!" (id 0); the pad token comes from the tokenizer folder's
// special_tokens_map.json / tokenizer_config.json. A caller that knows better (an SD 2.x
// single-file checkpoint read with a shared SD 1.x tokenizer folder) passes TokenizeOptions::pad_id.
#include <array>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/bpe_files.h"

namespace otter {

inline constexpr int kClipContextLength = 77;    // ids the text encoder reads per window
inline constexpr int kClipMaxPromptTokens = 75;  // prompt ids per window, between BOS and EOS

using ClipWindow = std::array<int, kClipContextLength>;

enum class LongPrompt {
  truncate,  // diffusers: keep the first 75 ids, drop the rest (with a warning on stderr)
  chunk,     // webui: one window per 75 ids; the caller concatenates the windows' embeddings
};

struct TokenizeOptions {
  LongPrompt long_prompt = LongPrompt::truncate;
  std::optional<int> pad_id;  // overrides the tokenizer folder's pad token
  bool warn = true;           // print the truncation warning on stderr
};

struct TokenizedPrompt {
  std::vector<ClipWindow> windows;  // one when truncating; ceil(ids/75) (at least one) when chunking
  std::vector<int> ids;             // every BPE id of the prompt, no BOS/EOS, not truncated
  bool truncated = false;           // ids beyond the first 75 were dropped
  std::string cut_text;             // the dropped part, decoded (lower-cased, cleaned), when truncated
};

class ClipTokenizer {
 public:
  // Reads vocab.json + merges.txt (+ the pad token, see above) from `dir`; throws otter::Error
  // naming the file and line of any problem.
  static ClipTokenizer load(const std::filesystem::path& dir);

  // The CLIP vocabulary built into otter (data/clip-tokenizer), padding with EOS like SD 1.x; an
  // SD 2.x caller passes its pad id in TokenizeOptions.
  static ClipTokenizer builtin();

  ClipTokenizer(ClipTokenizer&&) noexcept;
  ClipTokenizer& operator=(ClipTokenizer&&) noexcept;
  ~ClipTokenizer();

  // BPE ids of `text` (UTF-8), without BOS/EOS and without truncation. The literals
  // "<|startoftext|>" and "<|endoftext|>" in the text become BOS/EOS ids. Thread-safe.
  std::vector<int> encode(std::string_view text) const;

  // The text encoder's input windows; see LongPrompt.
  TokenizedPrompt tokenize(std::string_view text, const TokenizeOptions& options = {}) const;

  // CLIP's decode: tokens joined, byte symbols back to bytes (invalid UTF-8 as U+FFFD), each
  // end-of-word mark as a space.
  std::string decode(std::span<const int> ids) const;

  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int pad_id() const { return pad_id_; }
  int vocab_size() const { return vocab_.size(); }
  std::optional<int> token_id(std::string_view token) const;
  const std::filesystem::path& dir() const { return dir_; }  // empty for the built-in vocabulary

 private:
  struct Merge {
    int rank;
    int merged;
  };
  struct Cache;

  ClipTokenizer() = default;
  static ClipTokenizer from_files(BpeVocab vocab, const std::filesystem::path& vocab_file,
                                  const std::function<std::vector<BpeMerge>(const BpeVocab&)>& read_merges);
  void encode_piece(const std::string& piece, std::vector<int>& out) const;
  std::vector<int> bpe(std::string_view piece) const;
  const Merge* find_merge(int left, int right) const;
  ClipWindow window(std::span<const int> ids, int pad) const;

  std::filesystem::path dir_;
  BpeVocab vocab_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> rank, result
  std::array<int, 256> byte_ids_{};             // byte symbol
  std::array<int, 256> byte_end_ids_{};         // byte symbol + "</w>" (the last symbol of a piece)
  int bos_id_ = -1, eos_id_ = -1, pad_id_ = -1;
  std::unique_ptr<Cache> cache_;  // piece -> ids; CLIP prompts repeat words a lot
};

}  // namespace otter
