#include "text/clip_tokenizer.h"

#include <algorithm>
#include <functional>
#include <iostream>
#include <mutex>

#include "core/error.h"
#include "text/builtin_clip_vocab.h"
#include "text/byte_symbols.h"
#include "text/clip_text_rules.h"
#include "text/utf8.h"

namespace otter {

namespace {

constexpr std::string_view kBosToken = "<|startoftext|>";
constexpr std::string_view kEosToken = "<|endoftext|>";
constexpr std::string_view kEndOfWord = "</w>";
constexpr size_t kMaxCachedPieces = 100'000;  // bounds memory for a long-running server

uint64_t pair_key(int left, int right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

int required_id(const BpeVocab& vocab, const std::filesystem::path& vocab_file, const std::string& token,
                std::string_view role) {
  const std::optional<int> id = vocab.find(token);
  OTTER_CHECK(id.has_value(), "tokenizer file '", vocab_file.string(), "' has no ", role, " token \"",
              utf8::sanitize(token), "\"; is it a CLIP vocabulary?");
  return *id;
}

}  // namespace

struct ClipTokenizer::Cache {
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int>> pieces;
};

ClipTokenizer::ClipTokenizer(ClipTokenizer&&) noexcept = default;
ClipTokenizer& ClipTokenizer::operator=(ClipTokenizer&&) noexcept = default;
ClipTokenizer::~ClipTokenizer() = default;

ClipTokenizer ClipTokenizer::load(const std::filesystem::path& dir) {
  const std::filesystem::path vocab_file = dir / "vocab.json";
  ClipTokenizer t = from_files(read_vocab_json(vocab_file), vocab_file, [&](const BpeVocab& vocab) {
    return read_merges_txt(dir / "merges.txt", vocab);
  });
  t.dir_ = dir;
  // OpenAI's tokenizer (no special-token files) pads with EOS, as SD 1.x does.
  if (const std::optional<std::string> pad = read_pad_token(dir)) {
    const std::optional<int> pad_id = t.vocab_.find(*pad);
    OTTER_CHECK(pad_id.has_value(), "the pad token \"", utf8::sanitize(*pad), "\" named in '", dir.string(),
                "/special_tokens_map.json' or 'tokenizer_config.json' is not in vocab.json");
    t.pad_id_ = *pad_id;
  }
  return t;
}

ClipTokenizer ClipTokenizer::builtin() {
  const BuiltinClipVocab& files = builtin_clip_vocab();
  const std::filesystem::path vocab_file = "<built-in>/vocab.json";
  return from_files(parse_vocab_json(files.vocab_json, vocab_file), vocab_file, [&](const BpeVocab& vocab) {
    return parse_merges_txt(files.merges_txt, "<built-in>/merges.txt", vocab);
  });
}

ClipTokenizer ClipTokenizer::from_files(BpeVocab vocab, const std::filesystem::path& vocab_file,
                                        const std::function<std::vector<BpeMerge>(const BpeVocab&)>& read_merges) {
  ClipTokenizer t;
  t.vocab_ = std::move(vocab);
  const std::vector<BpeMerge> merges = read_merges(t.vocab_);
  t.merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    // A pair listed twice gets its last rank, as in CLIP's dict(zip(merges, range(...))).
    t.merges_[pair_key(merges[rank].left, merges[rank].right)] = Merge{static_cast<int>(rank), merges[rank].merged};
  }

  for (unsigned byte = 0; byte < 256; ++byte) {
    std::string symbol;
    utf8::append(symbol, byte_to_symbol(static_cast<uint8_t>(byte)));
    t.byte_ids_[byte] = required_id(t.vocab_, vocab_file, symbol, "byte");
    t.byte_end_ids_[byte] = required_id(t.vocab_, vocab_file, symbol + std::string(kEndOfWord), "end-of-word byte");
  }
  t.bos_id_ = required_id(t.vocab_, vocab_file, std::string(kBosToken), "start-of-text");
  t.eos_id_ = required_id(t.vocab_, vocab_file, std::string(kEosToken), "end-of-text");
  t.pad_id_ = t.eos_id_;
  t.cache_ = std::make_unique<Cache>();
  return t;
}

std::optional<int> ClipTokenizer::token_id(std::string_view token) const { return vocab_.find(token); }

const ClipTokenizer::Merge* ClipTokenizer::find_merge(int left, int right) const {
  const auto it = merges_.find(pair_key(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

// CLIP's bpe(): repeatedly take the adjacent pair with the lowest rank and merge every
// occurrence of it, left to right, in one pass; stop when no adjacent pair is a merge.
//
// Done with a heap of candidate pairs over a linked list of symbols, so a pasted 50 000-letter
// "word" costs O(n log n) instead of CLIP's O(n^2). Exactly CLIP's result: all candidates of the
// lowest rank are taken out together and merged in position order (one pass), pairs that the pass
// creates wait until it ends, and every candidate is re-checked against the current symbols.
std::vector<int> ClipTokenizer::bpe(std::string_view piece) const {
  const int n = static_cast<int>(piece.size());
  std::vector<int> symbol(piece.size()), next(piece.size()), prev(piece.size());
  for (int i = 0; i < n; ++i) {
    const auto byte = static_cast<uint8_t>(piece[static_cast<size_t>(i)]);
    symbol[static_cast<size_t>(i)] = i + 1 == n ? byte_end_ids_[byte] : byte_ids_[byte];
    next[static_cast<size_t>(i)] = i + 1 < n ? i + 1 : -1;
    prev[static_cast<size_t>(i)] = i - 1;
  }
  struct Candidate {
    int rank;
    int pos;  // node of the pair's left symbol
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const auto candidate_at = [&](int pos, std::vector<Candidate>& into) {
    const int right = next[static_cast<size_t>(pos)];
    if (right < 0) return;
    if (const Merge* m = find_merge(symbol[static_cast<size_t>(pos)], symbol[static_cast<size_t>(right)]))
      into.push_back({m->rank, pos});
  };
  std::vector<Candidate> heap, level, created;
  for (int i = 0; i + 1 < n; ++i) candidate_at(i, heap);
  std::make_heap(heap.begin(), heap.end(), std::greater<>());

  while (!heap.empty()) {
    const int rank = heap.front().rank;
    level.clear();
    while (!heap.empty() && heap.front().rank == rank) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<>());
      level.push_back(heap.back());
      heap.pop_back();
    }
    std::sort(level.begin(), level.end(), std::greater<>());  // descending; walked from the back
    created.clear();
    for (auto c = level.rbegin(); c != level.rend(); ++c) {
      const auto pos = static_cast<size_t>(c->pos);
      if (symbol[pos] < 0 || next[pos] < 0) continue;  // merged away, or now the last symbol
      const auto right = static_cast<size_t>(next[pos]);
      const Merge* m = find_merge(symbol[pos], symbol[right]);
      if (m == nullptr || m->rank != rank) continue;  // a stale candidate: the symbols changed
      symbol[pos] = m->merged;
      symbol[right] = -1;
      next[pos] = next[right];
      if (next[pos] >= 0) prev[static_cast<size_t>(next[pos])] = c->pos;
      if (prev[pos] >= 0) candidate_at(prev[pos], created);
      candidate_at(c->pos, created);
    }
    for (const Candidate& c : created) {
      heap.push_back(c);
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  }
  std::vector<int> word;
  for (int i = 0; i >= 0; i = next[static_cast<size_t>(i)]) word.push_back(symbol[static_cast<size_t>(i)]);
  return word;
}

void ClipTokenizer::encode_piece(const std::string& piece, std::vector<int>& out) const {
  if (piece == kBosToken || piece == kEosToken) {  // CLIP seeds its BPE cache with these two
    out.push_back(piece == kBosToken ? bos_id_ : eos_id_);
    return;
  }
  {
    std::lock_guard lock(cache_->mutex);
    const auto it = cache_->pieces.find(piece);
    if (it != cache_->pieces.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int> ids = bpe(piece);
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard lock(cache_->mutex);
  if (cache_->pieces.size() >= kMaxCachedPieces) cache_->pieces.clear();
  cache_->pieces.emplace(piece, std::move(ids));
}

std::vector<int> ClipTokenizer::encode(std::string_view text) const {
  const std::u32string normalized = clip_normalize(utf8::decode(text, "prompt"));
  std::vector<int> ids;
  for (const std::string& piece : clip_split(normalized)) encode_piece(piece, ids);
  return ids;
}

std::string ClipTokenizer::decode(std::span<const int> ids) const {
  std::string bytes;
  for (const int id : ids) {
    OTTER_CHECK(id >= 0 && id < vocab_size(), "cannot decode token id ", id, ": the vocabulary has ids 0..",
                vocab_size() - 1);
    // Every token is byte symbols (the special tokens are printable ASCII, which stand for
    // themselves); "</w>" decodes to its own four bytes and is replaced below, as CLIP does.
    for (const char32_t symbol : utf8::decode(vocab_.token(id), "vocabulary token")) {
      const auto byte = symbol_to_byte(symbol);
      if (byte)
        bytes.push_back(static_cast<char>(*byte));
      else
        utf8::append(bytes, U'\uFFFD');
    }
  }
  std::string text = utf8::sanitize(bytes);
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    if (text.compare(pos, kEndOfWord.size(), kEndOfWord) == 0) {
      out.push_back(' ');
      pos += kEndOfWord.size();
    } else {
      out.push_back(text[pos++]);
    }
  }
  return out;
}

ClipWindow ClipTokenizer::window(std::span<const int> ids, int pad) const {
  ClipWindow w;
  w.fill(pad);
  w[0] = bos_id_;
  std::copy(ids.begin(), ids.end(), w.begin() + 1);
  w[ids.size() + 1] = eos_id_;
  return w;
}

TokenizedPrompt ClipTokenizer::tokenize(std::string_view text, const TokenizeOptions& options) const {
  const int pad = options.pad_id.value_or(pad_id_);
  OTTER_CHECK(pad >= 0 && pad < vocab_size(), "pad id ", pad, " is not in the vocabulary (0..", vocab_size() - 1, ")");
  TokenizedPrompt result;
  result.ids = encode(text);
  const std::span<const int> ids(result.ids);
  constexpr size_t kPerWindow = kClipMaxPromptTokens;

  if (options.long_prompt == LongPrompt::chunk) {
    for (size_t start = 0; start == 0 || start < ids.size(); start += kPerWindow)
      result.windows.push_back(window(ids.subspan(start, std::min(kPerWindow, ids.size() - start)), pad));
    return result;
  }

  result.windows.push_back(window(ids.first(std::min(kPerWindow, ids.size())), pad));
  if (ids.size() > kPerWindow) {
    result.truncated = true;
    result.cut_text = decode(ids.subspan(kPerWindow));
    while (!result.cut_text.empty() && result.cut_text.back() == ' ') result.cut_text.pop_back();
    if (options.warn) {
      std::cerr << "warning: prompt truncated: " << ids.size() << " tokens, the model sees " << kPerWindow
                << "; cut text: '" << result.cut_text << "'\n";
    }
  }
  return result;
}

}  // namespace otter
