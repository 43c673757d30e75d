#pragma once
// PNG files for generated images, with their generation parameters in text chunks (the
// AUTOMATIC1111 webui convention: a `parameters` chunk, see io/generation_parameters.h).
//
// Text chunk encoding: PNG's tEXt and zTXt chunks are Latin-1, iTXt is UTF-8. The writer takes
// UTF-8 values and stores a value in tEXt when it is pure ASCII (identical bytes in both
// encodings, readable by every tool) and in an uncompressed iTXt chunk otherwise (e.g. a prompt
// with accents, CJK or emoji). The reader returns every value as UTF-8, converting tEXt/zTXt
// from Latin-1.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace otter {

using PngTextChunks = std::vector<std::pair<std::string, std::string>>;  // keyword, UTF-8 value

// Writes an 8-bit RGB image (`rgb`: height rows of width·3 bytes, top row first) with the given
// text chunks (before the image data, in order), atomically (io/atomic_file.h). Keywords must
// be 1–79 printable ASCII characters without leading, trailing or double spaces; values must be
// valid UTF-8 without NUL. Throws otter::Error naming the path and the problem.
void write_png(const std::filesystem::path& path, const uint8_t* rgb, int width, int height,
               const PngTextChunks& text_chunks);

// The same PNG bytes, in memory (what write_png puts in the file).
std::vector<uint8_t> encode_png(const uint8_t* rgb, int width, int height, const PngTextChunks& text_chunks);

struct PngImage {
  int width = 0;
  int height = 0;
  int channels = 0;             // 3 (RGB) or 4 (RGBA: the file had alpha or transparency)
  std::vector<uint8_t> pixels;  // height rows of width·channels bytes, 8 bits per channel
  PngTextChunks text;           // tEXt, zTXt and iTXt chunks in file order

  // The value of the first text chunk with this keyword.
  std::optional<std::string> find_text(std::string_view keyword) const;
};

// Reads any PNG (palette, grey, 16-bit, interlaced…), converting it to 8-bit RGB or RGBA.
// Throws otter::Error naming the path for missing, non-PNG, truncated or corrupt files.
PngImage read_png(const std::filesystem::path& path);
PngImage decode_png(const uint8_t* data, size_t size, const std::string& name_for_errors = "<memory>");

}  // namespace otter
