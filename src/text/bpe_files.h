#pragma once
// Readers for the HuggingFace tokenizer files of a CLIP BPE tokenizer. Every problem is an
// otter::Error naming the file and line, since a user who copied the wrong file needs to see which.
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "text/bpe_vocab.h"

namespace otter {

// vocab.json: one flat JSON object {"token": id, ...}. Ids must be unique and cover 0..N-1.
BpeVocab read_vocab_json(const std::filesystem::path& file);
// The same for text already in memory (the built-in vocabulary); `file` names it in errors.
BpeVocab parse_vocab_json(std::string_view text, const std::filesystem::path& file);

// One line of merges.txt, resolved against the vocabulary. The rank is the index in the list.
struct BpeMerge {
  int left;
  int right;
  int merged;  // id of left+right
};

// merges.txt: an optional "#version" first line, then "left right" lines in priority order. Both
// symbols and their concatenation must be vocabulary tokens.
std::vector<BpeMerge> read_merges_txt(const std::filesystem::path& file, const BpeVocab& vocab);
std::vector<BpeMerge> parse_merges_txt(std::string_view text, const std::filesystem::path& file,
                                       const BpeVocab& vocab);

// The pad token named by special_tokens_map.json, else tokenizer_config.json, in `dir` (a plain
// string or an {"content": ...} object, both of which HuggingFace writes); nullopt when neither
// file exists or names one.
std::optional<std::string> read_pad_token(const std::filesystem::path& dir);

}  // namespace otter
