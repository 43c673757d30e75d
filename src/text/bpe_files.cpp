#include "text/bpe_files.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/utf8.h"

namespace otter {

namespace {

std::string read_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary | std::ios::ate);
  OTTER_CHECK(in, "cannot open tokenizer file '", file.string(), "'");
  std::string content(static_cast<size_t>(in.tellg()), '\0');
  in.seekg(0);
  in.read(content.data(), static_cast<std::streamsize>(content.size()));
  OTTER_CHECK(in, "error while reading tokenizer file '", file.string(), "'");
  return content;
}

// A parser for exactly the shape of vocab.json: one object of string keys and integer values.
// Hand-written because it is ~10x faster than building a general JSON tree of 49k entries and
// because its errors can say "line L, column C".
class VocabJsonParser {
 public:
  VocabJsonParser(const std::filesystem::path& file, std::string_view text) : file_(file), text_(text) {}

  BpeVocab parse() {
    std::vector<std::pair<std::string, int64_t>> entries;
    entries.reserve(50000);
    skip_space();
    expect('{', "a '{' opening the token -> id object");
    skip_space();
    if (peek() == '}') {
      ++pos_;
    } else {
      while (true) {
        skip_space();
        const size_t key_pos = pos_;
        std::string key = parse_string();
        skip_space();
        expect(':', "':' after a token");
        skip_space();
        const int64_t id = parse_integer();
        if (id < 0 || id > 100'000'000) fail(key_pos, cat("token has id ", id, ", expected a non-negative id"));
        entries.emplace_back(std::move(key), id);
        positions_.push_back(key_pos);
        skip_space();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        expect('}', "',' or '}' after an id");
        break;
      }
    }
    skip_space();
    if (pos_ != text_.size()) fail(pos_, "unexpected text after the closing '}'");
    return build(std::move(entries));
  }

 private:
  [[noreturn]] void fail(size_t at, const std::string& what) const {
    const size_t end = std::min(at, text_.size());
    const size_t line =
        1 + static_cast<size_t>(std::count(text_.begin(), text_.begin() + static_cast<ptrdiff_t>(end), '\n'));
    const size_t line_start = text_.rfind('\n', end == 0 ? 0 : end - 1);
    const size_t column = end - (line_start == std::string_view::npos || end == 0 ? 0 : line_start + 1) + 1;
    throw Error(cat("tokenizer file '", file_.string(), "' line ", line, ", column ", column, ": ", what,
                    " (vocab.json must be a JSON object mapping each BPE token to its integer id)"));
  }

  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  void expect(char c, std::string_view what) {
    if (pos_ >= text_.size() || text_[pos_] != c) fail(pos_, cat("expected ", what));
    ++pos_;
  }

  void skip_space() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\n' || text_[pos_] == '\r' || text_[pos_] == '\t'))
      ++pos_;
  }

  unsigned parse_hex4() {
    if (text_.size() - pos_ < 4) fail(pos_, "truncated \\u escape");
    unsigned value = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text_[pos_++];
      value <<= 4;
      if (c >= '0' && c <= '9')
        value |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f')
        value |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        value |= static_cast<unsigned>(c - 'A' + 10);
      else
        fail(pos_ - 1, "bad hex digit in \\u escape");
    }
    return value;
  }

  std::string parse_string() {
    expect('"', "a '\"' opening a token string");
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) fail(pos_, "unterminated string");
      const char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) fail(pos_, "raw control character inside a string");
      if (c != '\\') {  // copy the plain run up to the next quote, escape or control byte at once
        const size_t start = pos_;
        while (pos_ < text_.size() && text_[pos_] != '"' && text_[pos_] != '\\' &&
               static_cast<unsigned char>(text_[pos_]) >= 0x20)
          ++pos_;
        out.append(text_, start, pos_ - start);
        continue;
      }
      const size_t escape_pos = pos_++;
      switch (peek()) {
        case '"':
          out.push_back('"');
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '/':
          out.push_back('/');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          ++pos_;
          unsigned cp = parse_hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // a UTF-16 surrogate pair spells one code point
            if (text_.substr(pos_, 2) != "\\u") fail(escape_pos, "high surrogate without its low half");
            pos_ += 2;
            const unsigned low = parse_hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail(escape_pos, "high surrogate without its low half");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail(escape_pos, "lone low surrogate in \\u escape");
          }
          utf8::append(out, static_cast<char32_t>(cp));
          continue;  // parse_hex4 already advanced
        }
        default:
          fail(escape_pos, "unknown escape sequence in a string");
      }
      ++pos_;
    }
  }

  int64_t parse_integer() {
    const size_t start = pos_;
    if (peek() == '-') ++pos_;
    int64_t value = 0;
    size_t digits = 0;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      value = std::min<int64_t>(value * 10 + (text_[pos_] - '0'), int64_t{1} << 40);
      ++pos_, ++digits;
    }
    if (digits == 0) fail(start, "expected an integer id");
    if (peek() == '.' || peek() == 'e' || peek() == 'E') fail(start, "expected an integer id, got a fraction");
    return text_[start] == '-' ? -value : value;
  }

  BpeVocab build(std::vector<std::pair<std::string, int64_t>> entries) const {
    std::vector<std::string> tokens(entries.size());
    std::vector<size_t> entry_of_id(entries.size(), SIZE_MAX);
    for (size_t i = 0; i < entries.size(); ++i) {
      auto& [token, id] = entries[i];
      if (static_cast<size_t>(id) >= entries.size())
        fail(positions_[i],
             cat("id ", id, " is out of range: ", entries.size(), " tokens need ids 0..", entries.size() - 1));
      if (entry_of_id[static_cast<size_t>(id)] != SIZE_MAX)
        fail(positions_[i], cat("id ", id, " is given to two tokens"));
      entry_of_id[static_cast<size_t>(id)] = i;
      tokens[static_cast<size_t>(id)] = std::move(token);
    }
    BpeVocab vocab;
    if (const auto repeated_id = vocab.assign(std::move(tokens))) {
      fail(positions_[entry_of_id[*repeated_id]],
           cat("token \"", utf8::sanitize(vocab.token(static_cast<int>(*repeated_id))), "\" appears twice"));
    }
    return vocab;
  }

  const std::filesystem::path& file_;
  std::string_view text_;
  size_t pos_ = 0;
  std::vector<size_t> positions_;  // byte offset of each entry's key, for errors found later
};

std::optional<std::string> pad_token_from(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file)) return std::nullopt;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(file));
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(cat("tokenizer file '", file.string(), "' is not valid JSON: ", e.what()));
  }
  const auto it = j.is_object() ? j.find("pad_token") : j.end();
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  throw Error(cat("tokenizer file '", file.string(),
                  "': \"pad_token\" must be a string or an object with a string \"content\""));
}

}  // namespace

BpeVocab read_vocab_json(const std::filesystem::path& file) { return parse_vocab_json(read_file(file), file); }

BpeVocab parse_vocab_json(std::string_view text, const std::filesystem::path& file) {
  return VocabJsonParser(file, text).parse();
}

std::vector<BpeMerge> read_merges_txt(const std::filesystem::path& file, const BpeVocab& vocab) {
  return parse_merges_txt(read_file(file), file, vocab);
}

std::vector<BpeMerge> parse_merges_txt(std::string_view text, const std::filesystem::path& file,
                                       const BpeVocab& vocab) {
  std::vector<BpeMerge> merges;
  merges.reserve(static_cast<size_t>(vocab.size()));
  std::string merged;
  size_t line_number = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line_number == 1 && line.starts_with("#version")) continue;
    if (line.empty()) {
      // Only trailing blank lines are allowed: an empty line in the middle would shift every rank.
      OTTER_CHECK(text.find_first_not_of("\r\n", pos) == std::string_view::npos, "tokenizer file '", file.string(),
                  "' line ", line_number, ": empty line before the end of the merge list");
      continue;
    }
    const size_t space = line.find(' ');
    OTTER_CHECK(space != std::string_view::npos && space > 0 && space + 1 < line.size() &&
                    line.find(' ', space + 1) == std::string_view::npos,
                "tokenizer file '", file.string(), "' line ", line_number,
                ": expected two BPE symbols separated by one space, got \"", utf8::sanitize(line), "\"");
    const std::string_view left = line.substr(0, space), right = line.substr(space + 1);
    const auto id_of = [&](std::string_view token) {
      const std::optional<int> id = vocab.find(token);
      OTTER_CHECK(id.has_value(), "tokenizer file '", file.string(), "' line ", line_number, ": \"",
                  utf8::sanitize(token),
                  "\" is not in vocab.json (are vocab.json and merges.txt from the same tokenizer?)");
      return *id;
    };
    merged.assign(left);
    merged.append(right);
    merges.push_back({id_of(left), id_of(right), id_of(merged)});
  }
  return merges;
}

std::optional<std::string> read_pad_token(const std::filesystem::path& dir) {
  if (auto pad = pad_token_from(dir / "special_tokens_map.json")) return pad;
  return pad_token_from(dir / "tokenizer_config.json");
}

}  // namespace otter
