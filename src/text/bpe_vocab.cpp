#include "text/bpe_vocab.h"

#include <bit>

namespace otter {

uint64_t BpeVocab::hash(std::string_view token) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a: tokens are short, this beats a block hash
  for (const char c : token) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  return h ^ (h >> 29);
}

std::optional<size_t> BpeVocab::assign(std::vector<std::string> tokens) {
  tokens_ = std::move(tokens);
  slots_.assign(std::bit_ceil(std::max<size_t>(16, tokens_.size() * 2)), Slot{});
  const size_t mask = slots_.size() - 1;
  for (size_t id = 0; id < tokens_.size(); ++id) {
    const uint64_t h = hash(tokens_[id]);
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      Slot& slot = slots_[i];
      if (slot.id < 0) {
        slot = Slot{static_cast<uint32_t>(h >> 32), static_cast<int32_t>(id)};
        break;
      }
      if (slot.hash_check == static_cast<uint32_t>(h >> 32) && tokens_[static_cast<size_t>(slot.id)] == tokens_[id]) {
        return id;
      }
    }
  }
  return std::nullopt;
}

std::optional<int> BpeVocab::find(std::string_view token) const {
  if (slots_.empty()) return std::nullopt;
  const uint64_t h = hash(token);
  const size_t mask = slots_.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const Slot& slot = slots_[i];
    if (slot.id < 0) return std::nullopt;
    if (slot.hash_check == static_cast<uint32_t>(h >> 32) && tokens_[static_cast<size_t>(slot.id)] == token)
      return slot.id;
  }
}

}  // namespace otter
