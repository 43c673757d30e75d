#pragma once
// The token <-> id table of a BPE vocabulary. Lookups by token run ~150 000 times while merges.txt
// is read, so the index is a flat open-addressing table rather than a node-based map: loading the
// whole tokenizer stays in the tens of milliseconds.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace otter {

class BpeVocab {
 public:
  // `tokens[id]` is the token of id; tokens must be distinct. Returns the index of the first
  // repeated token instead of building, so the caller can report where it came from.
  std::optional<size_t> assign(std::vector<std::string> tokens);

  std::optional<int> find(std::string_view token) const;
  const std::string& token(int id) const { return tokens_[static_cast<size_t>(id)]; }
  int size() const { return static_cast<int>(tokens_.size()); }

 private:
  struct Slot {
    uint32_t hash_check = 0;
    int32_t id = -1;  // -1: empty
  };
  static uint64_t hash(std::string_view token);

  std::vector<std::string> tokens_;
  std::vector<Slot> slots_;  // power-of-two size, at most half full
};

}  // namespace otter
