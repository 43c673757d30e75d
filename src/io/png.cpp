#include "io/png.h"

#include <png.h>

#include <cctype>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "io/atomic_file.h"

// libpng reports errors by longjmp-ing back to a setjmp in the caller. Jumping over C++ frames
// that own objects is undefined behaviour, so the code is split in two layers:
//   * "libpng steps" (run_*): small functions that call setjmp and then only libpng; all their
//     locals are trivial, and all memory they touch was allocated by the caller beforehand;
//   * C++ callers that own every buffer (RAII), run one step, and turn a failure into an
//     otter::Error with the message libpng gave.
// The I/O callbacks only touch memory and never throw through libpng either.

namespace otter {
namespace {

// Shared by the error callback and the steps; trivially destructible on purpose.
struct PngErrorSink {
  char message[256] = {};
};

[[noreturn]] void on_png_error(png_structp png, png_const_charp message) {
  auto* sink = static_cast<PngErrorSink*>(png_get_error_ptr(png));
  std::snprintf(sink->message, sizeof(sink->message), "%s", message ? message : "unknown libpng error");
  png_longjmp(png, 1);
}

// Warnings (an ancillary chunk with a bad CRC, an unknown sRGB profile…) do not stop decoding
// and are not the user's concern; libpng would print them to stderr otherwise.
void on_png_warning(png_structp, png_const_charp) {}

// ------------------------------------------------------------------------------------------
// Text encodings

bool is_ascii(std::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return false;
  }
  return true;
}

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int extra;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      extra = 1, cp = c & 0x1fu;
    } else if (c >= 0xe0 && c <= 0xef) {
      extra = 2, cp = c & 0x0fu;
    } else if (c >= 0xf0 && c <= 0xf4) {
      extra = 3, cp = c & 0x07u;
    } else {
      return false;
    }
    if (s.size() - i <= static_cast<size_t>(extra)) return false;  // truncated sequence
    for (int k = 1; k <= extra; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((cc & 0xc0u) != 0x80u) return false;
      cp = (cp << 6) | (cc & 0x3fu);
    }
    if ((extra == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (extra == 3 && (cp < 0x10000 || cp > 0x10ffff))) {
      return false;
    }
    i += static_cast<size_t>(extra) + 1;
  }
  return true;
}

std::string latin1_to_utf8(const char* text, size_t length) {
  std::string out;
  out.reserve(length);
  for (size_t i = 0; i < length; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xc0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
    }
  }
  return out;
}

// PNG keyword rules (spec 11.3.4.2), restricted to ASCII since our strings are UTF-8.
void check_keyword(const std::string& keyword) {
  OTTER_CHECK(!keyword.empty() && keyword.size() <= 79, "PNG text keyword '", keyword,
              "' must be 1 to 79 characters long (it has ", keyword.size(), ")");
  for (unsigned char c : keyword) {
    OTTER_CHECK(c >= 0x20 && c <= 0x7e, "PNG text keyword '", keyword,
                "' may only contain printable ASCII characters");
  }
  OTTER_CHECK(keyword.front() != ' ' && keyword.back() != ' ' && keyword.find("  ") == std::string::npos,
              "PNG text keyword '", keyword, "' must not start or end with a space or contain two spaces in a row");
}

// ------------------------------------------------------------------------------------------
// Encoding

struct EncodeJob {
  PngErrorSink errors;
  std::vector<uint8_t>* out = nullptr;
  bool out_of_memory = false;
  png_uint_32 width = 0, height = 0;
  png_textp texts = nullptr;
  int num_texts = 0;
  png_bytepp rows = nullptr;
};

void append_bytes(png_structp png, png_bytep data, size_t length) {
  auto* job = static_cast<EncodeJob*>(png_get_io_ptr(png));
  try {
    job->out->insert(job->out->end(), data, data + length);
  } catch (...) {
    job->out_of_memory = true;
  }
  if (job->out_of_memory) png_error(png, "out of memory while encoding");
}

void flush_nothing(png_structp) {}

bool run_encode(png_structp png, png_infop info, EncodeJob* job) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_write_fn(png, job, append_bytes, flush_nothing);
  png_set_IHDR(png, info, job->width, job->height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (job->num_texts > 0) png_set_text(png, info, job->texts, job->num_texts);
  png_write_info(png, info);
  png_write_image(png, job->rows);
  png_write_end(png, info);
  return true;
}

struct WriteStructs {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~WriteStructs() { png_destroy_write_struct(&png, &info); }
};

// ------------------------------------------------------------------------------------------
// Decoding

struct DecodeJob {
  PngErrorSink errors;
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t position = 0;
  // Filled by run_read_header.
  png_uint_32 width = 0, height = 0;
  int channels = 0;
  size_t row_bytes = 0;
  // Set by the caller before run_read_pixels.
  png_bytepp rows = nullptr;
  // Filled by run_read_pixels; points into libpng's info struct.
  png_textp texts = nullptr;
  int num_texts = 0;
};

void read_bytes(png_structp png, png_bytep out, size_t length) {
  auto* job = static_cast<DecodeJob*>(png_get_io_ptr(png));
  if (length > job->size - job->position) png_error(png, "the file is truncated");
  std::memcpy(out, job->data + job->position, length);
  job->position += length;
}

bool run_read_header(png_structp png, png_infop info, DecodeJob* job) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_read_fn(png, job, read_bytes);
  png_read_info(png, info);
  const int color_type = png_get_color_type(png, info);
  // Everything becomes 8-bit RGB or RGBA: palettes and low bit depths expand, transparency
  // (tRNS) becomes an alpha channel, 16-bit channels are scaled (rounded) to 8 bits.
  png_set_expand(png);
  if (png_get_bit_depth(png, info) == 16) png_set_scale_16(png);
  if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  job->width = png_get_image_width(png, info);
  job->height = png_get_image_height(png, info);
  job->channels = png_get_channels(png, info);
  job->row_bytes = png_get_rowbytes(png, info);
  return true;
}

bool run_read_pixels(png_structp png, png_infop info, DecodeJob* job) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_image(png, job->rows);
  png_read_end(png, info);  // text chunks after the image data land in `info` too
  png_get_text(png, info, &job->texts, &job->num_texts);
  return true;
}

struct ReadStructs {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~ReadStructs() { png_destroy_read_struct(&png, &info, nullptr); }
};

// Decoded size above which a file is refused rather than allocated (a corrupt or hostile
// header can claim a million by a million pixels).
constexpr uint64_t kMaxDecodedBytes = uint64_t{1} << 31;
// The most decoded bytes one byte of a valid file can become: deflate expands at most 1032:1,
// and the expansion to 8-bit RGBA at most 32:1 (a 1-bit palette pixel with transparency). A
// header claiming more than that for the bytes the file has is refused before the pixels are
// allocated: a file of at most 5 KB made the fuzzer allocate and zero 1.66 GB (over its limit).
constexpr uint64_t kMaxDecodedPerFileByte = uint64_t{1032} * 32;

// Every chunk, up to IEND, must lie inside the file: its 4-byte length, 4-byte type, data and
// 4-byte CRC. libpng reads a chunk's length before its data and allocates that length for text
// chunks (tEXt/zTXt/iTXt) without bounding it by what the stream still holds, so a 764-byte file
// whose tEXt claimed 838,860,943 bytes made it allocate 800 MB, and a length near 2^31 goes over
// the fuzzer's 2 GB limit (found by fuzz_png_parameters). Returns the first chunk that does not
// fit, or nothing when all fit; a file without IEND is left to libpng to report.
struct ChunkOverrun {
  std::string type;
  size_t offset = 0;
  uint64_t claimed = 0;
  size_t remaining = 0;
};

std::optional<ChunkOverrun> find_chunk_overrun(const uint8_t* data, size_t size, size_t offset) {
  constexpr size_t kHeaderBytes = 8, kCrcBytes = 4;
  while (size - offset >= kHeaderBytes) {
    const uint64_t length = png_get_uint_32(data + offset);  // big-endian, as libpng reads it
    const std::string type(reinterpret_cast<const char*>(data + offset + 4), 4);
    const size_t remaining = size - offset - kHeaderBytes;
    if (length + kCrcBytes > remaining) return ChunkOverrun{type, offset, length, remaining};
    if (type == "IEND") return std::nullopt;
    offset += kHeaderBytes + static_cast<size_t>(length) + kCrcBytes;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> PngImage::find_text(std::string_view keyword) const {
  for (const auto& [key, value] : text) {
    if (key == keyword) return value;
  }
  return std::nullopt;
}

std::vector<uint8_t> encode_png(const uint8_t* rgb, int width, int height, const PngTextChunks& text_chunks) {
  OTTER_CHECK(width > 0 && height > 0, "cannot encode a PNG of ", width, "x", height, " pixels");
  OTTER_CHECK(rgb != nullptr, "cannot encode a PNG without pixel data");

  // Own every string libpng will see (it wants mutable char*) before entering libpng.
  std::vector<std::string> keys, values;
  std::vector<png_text> texts(text_chunks.size());
  keys.reserve(text_chunks.size());
  values.reserve(text_chunks.size());
  for (size_t i = 0; i < text_chunks.size(); ++i) {
    const auto& [key, value] = text_chunks[i];
    check_keyword(key);
    OTTER_CHECK(value.find('\0') == std::string::npos, "PNG text chunk '", key, "' contains a NUL byte");
    OTTER_CHECK(is_valid_utf8(value), "PNG text chunk '", key, "' is not valid UTF-8");
    keys.push_back(key);
    values.push_back(value);
    png_text& t = texts[i];
    t.compression = is_ascii(value) ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
    t.key = keys.back().data();
    t.text = values.back().data();
    t.text_length = values.back().size();
    t.itxt_length = 0;
    t.lang = nullptr;
    t.lang_key = nullptr;
  }

  const size_t row_bytes = static_cast<size_t>(width) * 3;
  std::vector<png_bytep> rows(static_cast<size_t>(height));
  for (size_t y = 0; y < rows.size(); ++y) rows[y] = const_cast<png_bytep>(rgb + y * row_bytes);

  std::vector<uint8_t> out;
  out.reserve(row_bytes * static_cast<size_t>(height) / 2 + 1024);
  EncodeJob job;
  job.out = &out;
  job.width = static_cast<png_uint_32>(width);
  job.height = static_cast<png_uint_32>(height);
  job.texts = texts.data();
  job.num_texts = static_cast<int>(texts.size());
  job.rows = rows.data();

  WriteStructs s;
  s.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &job.errors, on_png_error, on_png_warning);
  OTTER_CHECK(s.png != nullptr, "cannot encode PNG: libpng could not allocate its state");
  s.info = png_create_info_struct(s.png);
  OTTER_CHECK(s.info != nullptr, "cannot encode PNG: libpng could not allocate its state");
  if (!run_encode(s.png, s.info, &job)) throw Error(cat("cannot encode PNG: ", job.errors.message));
  return out;
}

void write_png(const std::filesystem::path& path, const uint8_t* rgb, int width, int height,
               const PngTextChunks& text_chunks) {
  std::vector<uint8_t> bytes;
  try {
    bytes = encode_png(rgb, width, height, text_chunks);
  } catch (const Error& e) {
    throw Error(cat("cannot write PNG '", path.string(), "': ", e.what()));
  }
  write_file_atomically(path, bytes);
}

PngImage decode_png(const uint8_t* data, size_t size, const std::string& name_for_errors) {
  constexpr size_t kSignatureBytes = 8;
  if (size < kSignatureBytes || png_sig_cmp(data, 0, kSignatureBytes) != 0) {
    throw Error(cat("'", name_for_errors, "' is not a PNG file (",
                    size < kSignatureBytes ? "too short for the 8-byte PNG signature" : "the PNG signature is missing",
                    ")"));
  }

  if (const auto overrun = find_chunk_overrun(data, size, kSignatureBytes)) {
    std::string type;  // printable, as the type may be any 4 bytes
    for (char c : overrun->type) type += std::isalpha(static_cast<unsigned char>(c)) ? c : '?';
    throw Error(cat("cannot read PNG '", name_for_errors, "': the file is corrupt or truncated (its '", type,
                    "' chunk at byte ", overrun->offset, " claims ", overrun->claimed,
                    " bytes of data, but only ", overrun->remaining, " bytes follow its header, CRC included)"));
  }

  DecodeJob job;
  job.data = data;
  job.size = size;
  ReadStructs s;
  s.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &job.errors, on_png_error, on_png_warning);
  OTTER_CHECK(s.png != nullptr, "cannot read PNG '", name_for_errors, "': libpng could not allocate its state");
  s.info = png_create_info_struct(s.png);
  OTTER_CHECK(s.info != nullptr, "cannot read PNG '", name_for_errors, "': libpng could not allocate its state");
  const auto corrupt = [&] {
    return Error(cat("cannot read PNG '", name_for_errors, "': the file is corrupt (", job.errors.message, ")"));
  };

  if (!run_read_header(s.png, s.info, &job)) throw corrupt();
  OTTER_CHECK(job.channels == 3 || job.channels == 4, "cannot read PNG '", name_for_errors,
              "': unexpected channel count ", job.channels, " after conversion to RGB(A)");
  OTTER_CHECK(job.row_bytes == static_cast<size_t>(job.width) * static_cast<size_t>(job.channels),
              "cannot read PNG '", name_for_errors, "': unexpected row size ", job.row_bytes);
  const uint64_t decoded_bytes = uint64_t{job.row_bytes} * job.height;
  OTTER_CHECK(decoded_bytes <= kMaxDecodedBytes, "cannot read PNG '", name_for_errors, "': ", job.width, "x",
              job.height, " pixels is too large to decode (more than ", kMaxDecodedBytes >> 30, " GiB)");
  OTTER_CHECK(decoded_bytes / kMaxDecodedPerFileByte < size, "cannot read PNG '", name_for_errors,
              "': the file is corrupt (its header claims ", job.width, "x", job.height, " pixels, more than its ", size,
              " bytes can hold)");

  PngImage image;
  image.width = static_cast<int>(job.width);
  image.height = static_cast<int>(job.height);
  image.channels = job.channels;
  image.pixels.resize(static_cast<size_t>(decoded_bytes));
  std::vector<png_bytep> rows(job.height);
  for (size_t y = 0; y < rows.size(); ++y) rows[y] = image.pixels.data() + y * job.row_bytes;
  job.rows = rows.data();

  if (!run_read_pixels(s.png, s.info, &job)) throw corrupt();
  for (int i = 0; i < job.num_texts; ++i) {
    const png_text& t = job.texts[i];
    std::string key = latin1_to_utf8(t.key, std::strlen(t.key));
    const bool utf8 = t.compression == PNG_ITXT_COMPRESSION_NONE || t.compression == PNG_ITXT_COMPRESSION_zTXt;
    const char* text = t.text ? t.text : "";
    std::string value = utf8 ? std::string(text, t.itxt_length) : latin1_to_utf8(text, t.text_length);
    image.text.emplace_back(std::move(key), std::move(value));
  }
  return image;
}

PngImage read_png(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(cat("cannot read PNG '", path.string(), "': it is a folder"));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(cat("cannot read PNG '", path.string(), "': ", std::strerror(errno)));
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(cat("cannot read PNG '", path.string(), "': read error"));
  return decode_png(bytes.data(), bytes.size(), path.string());
}

}  // namespace otter
