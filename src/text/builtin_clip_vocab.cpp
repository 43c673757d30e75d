#include "text/builtin_clip_vocab.h"

#include <zlib.h>

#include <cstdint>
#include <span>

#include "core/error.h"

// The gzip streams are made by cmake/gzip_file.cmake; src/CMakeLists.txt passes their paths as
// OTTER_CLIP_VOCAB_GZ / OTTER_CLIP_MERGES_GZ and makes this file depend on them. .incbin copies a
// file's bytes into the object as they are: no multi-megabyte array literal for the compiler.
#define OTTER_EMBED_FILE(symbol, path)                                        \
  __asm__(".pushsection .rodata\n"                                            \
          ".balign 16\n"                                                      \
          ".globl " #symbol "\n" #symbol ":\n"                                \
          ".incbin \"" path "\"\n"                                            \
          ".globl " #symbol "_end\n" #symbol "_end:\n"                        \
          ".popsection\n")

OTTER_EMBED_FILE(otter_clip_vocab_gz, OTTER_CLIP_VOCAB_GZ);
OTTER_EMBED_FILE(otter_clip_merges_gz, OTTER_CLIP_MERGES_GZ);

extern "C" {
extern const unsigned char otter_clip_vocab_gz[], otter_clip_vocab_gz_end[];
extern const unsigned char otter_clip_merges_gz[], otter_clip_merges_gz_end[];
}

namespace otter {

namespace {

std::span<const unsigned char> bytes(const unsigned char* begin, const unsigned char* end) {
  return {begin, static_cast<size_t>(end - begin)};
}

std::string gunzip(std::span<const unsigned char> in, const char* name) {
  OTTER_CHECK(in.size() >= 18, "the built-in ", name, " is not a gzip stream (", in.size(), " bytes); rebuild otter");
  // A gzip stream ends with the uncompressed size (mod 2^32, little-endian).
  const unsigned char* tail = in.data() + in.size() - 4;
  const uint32_t size = uint32_t{tail[0]} | uint32_t{tail[1]} << 8 | uint32_t{tail[2]} << 16 | uint32_t{tail[3]} << 24;
  std::string out(size, '\0');
  z_stream z{};
  OTTER_CHECK(inflateInit2(&z, 16 + MAX_WBITS) == Z_OK, "zlib could not start inflating the built-in ", name);
  z.next_in = const_cast<unsigned char*>(in.data());  // zlib's API is not const-correct; it only reads
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<unsigned char*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int status = inflate(&z, Z_FINISH);
  const uLong produced = z.total_out;
  inflateEnd(&z);
  OTTER_CHECK(status == Z_STREAM_END && produced == size, "the built-in ", name,
              " did not inflate (zlib status ", status, ", ", produced, " of ", size, " bytes); rebuild otter");
  return out;
}

}  // namespace

const BuiltinClipVocab& builtin_clip_vocab() {
  static const BuiltinClipVocab vocab{gunzip(bytes(otter_clip_vocab_gz, otter_clip_vocab_gz_end), "vocab.json"),
                                     gunzip(bytes(otter_clip_merges_gz, otter_clip_merges_gz_end), "merges.txt")};
  return vocab;
}

std::size_t builtin_clip_vocab_compressed_bytes() {
  return static_cast<size_t>(otter_clip_vocab_gz_end - otter_clip_vocab_gz) +
         static_cast<size_t>(otter_clip_merges_gz_end - otter_clip_merges_gz);
}

}  // namespace otter
