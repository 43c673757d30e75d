// PNG writing/reading with text chunks, the webui `parameters` text, and atomic file writes.
// Reader checks use PNGs built by an independent encoder (Python's zlib and hand-made chunks,
// embedded below); writer checks walk the chunk structure of the bytes we produce.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/generation_parameters.h"
#include "io/png.h"
#include "support/temp_dir.h"

namespace otter {
namespace {

namespace fs = std::filesystem;

using otter::testing::TempDir;

std::vector<uint8_t> random_rgb(int width, int height, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> rgb(static_cast<size_t>(width) * height * 3);
  for (auto& v : rgb) v = static_cast<uint8_t>(rng() & 0xff);
  return rgb;
}

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
}

// Expects `f` to throw otter::Error whose message contains every one of `needles`.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "expected otter::Error";
  } catch (const Error& e) {
    for (const auto& needle : needles) EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

struct Chunk {
  std::string type;
  std::string data;
};

// Splits PNG bytes into chunks (types and payloads), independently of libpng.
std::vector<Chunk> chunks_of(const std::vector<uint8_t>& png) {
  std::vector<Chunk> chunks;
  size_t pos = 8;
  while (pos + 12 <= png.size()) {
    const uint32_t length = (uint32_t{png[pos]} << 24) | (uint32_t{png[pos + 1]} << 16) |
                            (uint32_t{png[pos + 2]} << 8) | uint32_t{png[pos + 3]};
    const char* p = reinterpret_cast<const char*>(png.data() + pos + 4);
    chunks.push_back({std::string(p, 4), std::string(p + 4, length)});
    pos += 12 + length;
  }
  EXPECT_EQ(pos, png.size());
  return chunks;
}

// Made with Python's zlib and hand-built chunks: a 3x2 8-bit palette image with tRNS (entry 1
// half transparent); tEXt "Title" = "Caf\xe9" (Latin-1), zTXt "Comment" = "compressed text",
// and after IDAT an iTXt "parameters" = "猫 prompt".
const unsigned char kPaletteWithText[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x08, 0x03, 0x00, 0x00, 0x00, 0xaa, 0xaa, 0x96,
    0x28, 0x00, 0x00, 0x00, 0x0c, 0x50, 0x4c, 0x54, 0x45, 0xff, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00,
    0x00, 0xff, 0x0a, 0x14, 0x1e, 0x22, 0x88, 0x29, 0x04, 0x00, 0x00, 0x00, 0x02, 0x74, 0x52, 0x4e,
    0x53, 0xff, 0x80, 0x08, 0x0f, 0xb3, 0x6a, 0x00, 0x00, 0x00, 0x0a, 0x74, 0x45, 0x58, 0x74, 0x54,
    0x69, 0x74, 0x6c, 0x65, 0x00, 0x43, 0x61, 0x66, 0xe9, 0xa0, 0x99, 0x9c, 0x44, 0x00, 0x00, 0x00,
    0x20, 0x7a, 0x54, 0x58, 0x74, 0x43, 0x6f, 0x6d, 0x6d, 0x65, 0x6e, 0x74, 0x00, 0x00, 0x78, 0x9c,
    0x4b, 0xce, 0xcf, 0x2d, 0x28, 0x4a, 0x2d, 0x2e, 0x4e, 0x4d, 0x51, 0x28, 0x49, 0xad, 0x28, 0x01,
    0x00, 0x31, 0x50, 0x06, 0x1b, 0xec, 0x45, 0x83, 0x8f, 0x00, 0x00, 0x00, 0x10, 0x49, 0x44, 0x41,
    0x54, 0x78, 0x9c, 0x63, 0x60, 0x60, 0x64, 0x62, 0x60, 0x66, 0x60, 0x04, 0x00, 0x00, 0x22, 0x00,
    0x08, 0x65, 0x84, 0xd1, 0xa0, 0x00, 0x00, 0x00, 0x19, 0x69, 0x54, 0x58, 0x74, 0x70, 0x61, 0x72,
    0x61, 0x6d, 0x65, 0x74, 0x65, 0x72, 0x73, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe7, 0x8c, 0xab, 0x20,
    0x70, 0x72, 0x6f, 0x6d, 0x70, 0x74, 0xf2, 0x93, 0x23, 0x86, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
};

// Made the same way: 2x2 16-bit grey, values 0x0000 0xffff / 0x8080 0x1234.
const unsigned char kGrey16[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x10, 0x00, 0x00, 0x00, 0x00, 0x07, 0x4d, 0x8e,
    0xbb, 0x00, 0x00, 0x00, 0x12, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0x60, 0xf8, 0xff,
    0x9f, 0xa1, 0xa1, 0x41, 0xc8, 0x04, 0x00, 0x10, 0xd5, 0x03, 0x45, 0x0b, 0x85, 0x35, 0x5a, 0x00,
    0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
};

// ------------------------------------------------------------------------------------------
// PNG

TEST(Png, RoundTripsPixelsAndTextChunks) {
  TempDir dir("png");
  const fs::path path = dir.path() / "image.png";
  const auto rgb = random_rgb(7, 5, 1);
  const PngTextChunks text = {{"parameters", "an otter\nSteps: 20, Sampler: Euler, CFG scale: 7.5"},
                              {"Software", "otter"},
                              {"Comment", "unicode ✓ 猫 🦦"},
                              {"Empty", ""}};
  write_png(path, rgb.data(), 7, 5, text);

  const PngImage image = read_png(path);
  EXPECT_EQ(image.width, 7);
  EXPECT_EQ(image.height, 5);
  EXPECT_EQ(image.channels, 3);
  EXPECT_EQ(image.pixels, rgb);
  EXPECT_EQ(image.text, text);
  EXPECT_EQ(image.find_text("Software"), "otter");
  EXPECT_EQ(image.find_text("missing"), std::nullopt);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"image.png"}) << "no temporary file may be left behind";
}

TEST(Png, AsciiTextGoesToTextChunksAndUnicodeToInternationalChunks) {
  const auto rgb = random_rgb(2, 2, 2);
  const auto png = encode_png(rgb.data(), 2, 2, {{"parameters", "plain ascii"}, {"parameters2", "café 猫"}});
  const auto chunks = chunks_of(png);
  ASSERT_GE(chunks.size(), 5u);
  EXPECT_EQ(chunks.front().type, "IHDR");
  EXPECT_EQ(chunks.back().type, "IEND");
  std::vector<std::string> text_chunks;
  bool seen_idat = false;
  for (const Chunk& c : chunks) {
    if (c.type == "IDAT") seen_idat = true;
    if (c.type == "tEXt" || c.type == "iTXt" || c.type == "zTXt") {
      EXPECT_FALSE(seen_idat) << "text chunks go before the image data, as webui/PIL write them";
      text_chunks.push_back(c.type + ":" + c.data);
    }
  }
  // tEXt: keyword NUL text. iTXt: keyword NUL, compression flag 0, method 0, empty language
  // tag NUL, empty translated keyword NUL, UTF-8 text.
  const std::vector<std::string> expected = {std::string("tEXt:parameters\0plain ascii", 27),
                                             std::string("iTXt:parameters2\0\0\0\0\0café 猫", 30)};
  EXPECT_EQ(text_chunks, expected);
}

TEST(Png, ReadsIndependentlyEncodedPaletteImageWithAllTextChunkKinds) {
  const PngImage image = decode_png(kPaletteWithText, sizeof(kPaletteWithText), "palette.png");
  EXPECT_EQ(image.width, 3);
  EXPECT_EQ(image.height, 2);
  ASSERT_EQ(image.channels, 4) << "tRNS must become an alpha channel";
  const std::vector<uint8_t> expected = {255, 0, 0, 255, 0, 255, 0, 128, 0, 0, 255, 255,
                                         10, 20, 30, 255, 255, 0, 0, 255, 0, 255, 0, 128};
  EXPECT_EQ(image.pixels, expected);
  const PngTextChunks text = {{"Title", "Café"}, {"Comment", "compressed text"}, {"parameters", "猫 prompt"}};
  EXPECT_EQ(image.text, text);
}

TEST(Png, Reads16BitGreyAsRoundedRgb) {
  const PngImage image = decode_png(kGrey16, sizeof(kGrey16));
  EXPECT_EQ(image.channels, 3);
  // round(v · 255 / 65535): 0, 255, 128 (0x8080), 18 (0x1234).
  const std::vector<uint8_t> expected = {0, 0, 0, 255, 255, 255, 128, 128, 128, 18, 18, 18};
  EXPECT_EQ(image.pixels, expected);
  EXPECT_TRUE(image.text.empty());
}

TEST(Png, RejectsFilesThatAreNotPng) {
  TempDir dir("png");
  const fs::path text_file = dir.path() / "notes.png";
  write_bytes(text_file, "hello, this is not an image", 27);
  expect_error([&] { read_png(text_file); }, {text_file.string(), "not a PNG"});
  const fs::path empty = dir.path() / "empty.png";
  write_bytes(empty, "", 0);
  expect_error([&] { read_png(empty); }, {empty.string(), "not a PNG"});
  expect_error([&] { read_png(dir.path() / "missing.png"); }, {"missing.png", "No such file"});
  expect_error([&] { read_png(dir.path()); }, {"folder"});
}

TEST(Png, RejectsTruncatedAndCorruptFiles) {
  TempDir dir("png");
  const auto rgb = random_rgb(16, 16, 3);
  const auto png = encode_png(rgb.data(), 16, 16, {{"parameters", "x"}});

  const fs::path truncated = dir.path() / "truncated.png";
  write_bytes(truncated, png.data(), png.size() / 2);
  expect_error([&] { read_png(truncated); }, {truncated.string(), "corrupt"});

  // Flip a byte inside the IDAT payload: the chunk CRC no longer matches.
  auto damaged = png;
  const std::string bytes(damaged.begin(), damaged.end());
  const size_t idat = bytes.find("IDAT");
  ASSERT_NE(idat, std::string::npos);
  damaged[idat + 10] ^= 0x5a;
  const fs::path corrupt = dir.path() / "corrupt.png";
  write_bytes(corrupt, damaged.data(), damaged.size());
  expect_error([&] { read_png(corrupt); }, {corrupt.string(), "corrupt"});

  // Every truncation point fails cleanly (no crash, no leak under ASan).
  for (size_t n = 8; n < png.size() - 12; n += 7) {
    EXPECT_THROW(decode_png(png.data(), n), Error) << "truncated to " << n << " bytes";
  }
}

// CRC-32 as PNG chunks use it (ISO 3309, reflected polynomial 0xEDB88320), bit by bit.
uint32_t png_crc(const uint8_t* data, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    crc ^= data[i];
    for (int b = 0; b < 8; ++b) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void put_be32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

// A valid file whose IHDR (its CRC recomputed) claims far more pixels than its bytes can hold
// (found by the fuzzer: the reader allocated and zeroed 1.66 GB before libpng ran out of data).
TEST(Png, RejectsHeaderClaimingMorePixelsThanTheFileCanHoldBeforeAllocating) {
  const auto rgb = random_rgb(16, 16, 4);
  auto png = encode_png(rgb.data(), 16, 16, {});
  ASSERT_EQ(std::string(png.begin() + 12, png.begin() + 16), "IHDR");
  put_be32(&png[16], 96724);  // width
  put_be32(&png[20], 4293);   // height: 1.25 GB of RGB, under the 2 GiB size limit
  put_be32(&png[29], png_crc(&png[12], 4 + 13));
  expect_error([&] { decode_png(png.data(), png.size(), "claims.png"); },
               {"claims.png", "corrupt", "96724x4293", cat("more than its ", png.size(), " bytes can hold")});
  // The same header at its true size still decodes (the CRC routine above is right).
  auto same = encode_png(rgb.data(), 16, 16, {});
  put_be32(&same[29], png_crc(&same[12], 4 + 13));
  EXPECT_EQ(decode_png(same.data(), same.size()).width, 16);
}

// A chunk whose length field claims more bytes than the file has left (found by the fuzzer: a
// 764-byte file whose tEXt chunk claimed 838,860,943 bytes made libpng allocate 800 MB, and a
// length near 2^31 went over the fuzzer's 2 GB limit). The reader refuses it before libpng runs.
TEST(Png, RejectsChunkClaimingMoreBytesThanTheFileHoldsBeforeLibpngAllocates) {
  const auto rgb = random_rgb(4, 4, 3);
  for (const uint32_t claimed : {838860943u, 0x7fffffffu}) {
    auto png = encode_png(rgb.data(), 4, 4, {{"parameters", "Steps: 20"}});
    const std::string bytes(png.begin(), png.end());
    const size_t text = bytes.find("tEXt");
    ASSERT_NE(text, std::string::npos);
    put_be32(&png[text - 4], claimed);
    expect_error([&] { decode_png(png.data(), png.size(), "huge-text.png"); },
                 {"huge-text.png", "corrupt", cat("'tEXt' chunk at byte ", text - 4), cat("claims ", claimed, " bytes"),
                  cat("only ", png.size() - text - 4, " bytes follow")});
  }
  // A chunk that ends exactly at the end of the file fits; bytes after IEND are ignored, as by libpng.
  auto png = encode_png(rgb.data(), 4, 4, {{"parameters", "Steps: 20"}});
  png.insert(png.end(), {0xff, 0xff, 0xff, 0xff, 'j', 'u', 'n', 'k'});
  EXPECT_EQ(decode_png(png.data(), png.size()).find_text("parameters"), "Steps: 20");
}

TEST(Png, WriteFailsWithPathAndOsErrorAndLeavesNoFile) {
  TempDir dir("png");
  const auto rgb = random_rgb(4, 4, 4);

  const fs::path in_missing_folder = dir.path() / "no-such-folder" / "out.png";
  expect_error([&] { write_png(in_missing_folder, rgb.data(), 4, 4, {}); },
               {in_missing_folder.string(), "No such file or directory"});

  // The target is an existing folder: the temporary file is written, then rename() fails and
  // the temporary file must be removed again.
  const fs::path folder_target = dir.path() / "taken";
  fs::create_directory(folder_target);
  expect_error([&] { write_png(folder_target, rgb.data(), 4, 4, {}); }, {folder_target.string(), "directory"});
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"taken"});
}

TEST(Png, WriteIntoReadOnlyFolderFailsAndLeavesNoFile) {
  TempDir dir("png");
  const auto rgb = random_rgb(4, 4, 4);
  const fs::path read_only = dir.path() / "read-only";
  fs::create_directory(read_only);
  fs::permissions(read_only, fs::perms::owner_read | fs::perms::owner_exec);
  if (::access(read_only.c_str(), W_OK) == 0) {
    fs::permissions(read_only, fs::perms::owner_all);
    GTEST_SKIP() << "running with permission to write into read-only folders (root)";
  }
  expect_error([&] { write_png(read_only / "out.png", rgb.data(), 4, 4, {}); },
               {(read_only / "out.png").string(), "Permission denied"});
  fs::permissions(read_only, fs::perms::owner_all);
  EXPECT_TRUE(fs::is_empty(read_only));
}

TEST(Png, RejectsInvalidInputBeforeCreatingAnyFile) {
  TempDir dir("png");
  const auto rgb = random_rgb(2, 2, 5);
  const fs::path path = dir.path() / "out.png";
  expect_error([&] { write_png(path, rgb.data(), 2, 2, {{"", "v"}}); }, {path.string(), "keyword"});
  expect_error([&] { write_png(path, rgb.data(), 2, 2, {{" lead", "v"}}); }, {"keyword"});
  expect_error([&] { write_png(path, rgb.data(), 2, 2, {{std::string(80, 'k'), "v"}}); }, {"79"});
  expect_error([&] { write_png(path, rgb.data(), 2, 2, {{"café", "v"}}); }, {"ASCII"});
  expect_error([&] { write_png(path, rgb.data(), 2, 2, {{"k", std::string("a\0b", 3)}}); }, {"NUL"});
  expect_error([&] { write_png(path, rgb.data(), 2, 2, {{"k", "bad \xff utf8"}}); }, {"UTF-8"});
  expect_error([&] { write_png(path, rgb.data(), 0, 2, {}); }, {path.string(), "0x2"});
  EXPECT_TRUE(dir.entries().empty());
}

TEST(Png, OverwritesExistingFileCompletely) {
  TempDir dir("png");
  const fs::path path = dir.path() / "image.png";
  const auto big = random_rgb(32, 32, 6), small = random_rgb(3, 3, 7);
  write_png(path, big.data(), 32, 32, {{"parameters", "first"}});
  write_png(path, small.data(), 3, 3, {{"parameters", "second"}});
  const PngImage image = read_png(path);
  EXPECT_EQ(image.width, 3);
  EXPECT_EQ(image.pixels, small);
  EXPECT_EQ(image.find_text("parameters"), "second");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"image.png"});
}

// ------------------------------------------------------------------------------------------
// Atomic files

TEST(AtomicFile, UncommittedWriterLeavesTargetUntouched) {
  TempDir dir("png");
  const fs::path path = dir.path() / "data.bin";
  write_file_atomically(path, std::string_view("old"));
  {
    AtomicFileWriter writer(path);
    writer.write(std::string_view("new content"));
    EXPECT_TRUE(fs::exists(writer.temp_path()));
    EXPECT_EQ(writer.temp_path().parent_path(), path.parent_path());
  }  // destroyed without commit, e.g. by an exception while producing the content
  const auto bytes = read_bytes(path);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), "old");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"data.bin"});
}

TEST(AtomicFile, CommitReplacesContentAndRejectsLaterWrites) {
  TempDir dir("png");
  const fs::path path = dir.path() / "data.bin";
  AtomicFileWriter writer(path);
  writer.write(std::string_view("part one, "));
  writer.write(std::string_view("part two"));
  writer.commit();
  const auto bytes = read_bytes(path);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), "part one, part two");
  EXPECT_THROW(writer.write(std::string_view("more")), Error);
  EXPECT_THROW(writer.commit(), Error);
}

// ------------------------------------------------------------------------------------------
// webui generation parameters

GenerationParameters typical() {
  GenerationParameters p;
  p.prompt = "a watercolor painting of an otter";
  p.negative_prompt = "blurry";
  p.steps = 20;
  p.sampler = "Euler a";
  p.cfg_scale = 7.5;
  p.seed = 42;
  p.width = 512;
  p.height = 512;
  p.model = "tiny-sd1";
  return p;
}

TEST(GenerationParameters, FormatsWebuiLayout) {
  EXPECT_EQ(format_parameters(typical()),
            "a watercolor painting of an otter\n"
            "Negative prompt: blurry\n"
            "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: tiny-sd1");

  GenerationParameters p = typical();
  p.negative_prompt = "";
  p.cfg_scale = 7.0;
  p.seed = 4294967338u;
  p.extra = {{"CFG Rescale phi", "0.7"}, {"Lora hashes", "add_detail: 7c6bad76eb54"}, {"Note", "a, b"}};
  EXPECT_EQ(format_parameters(p),
            "a watercolor painting of an otter\n"
            "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 4294967338, Size: 512x512, Model: tiny-sd1, "
            "CFG Rescale phi: 0.7, Lora hashes: \"add_detail: 7c6bad76eb54\", Note: \"a, b\"");
}

TEST(GenerationParameters, RoundTrips) {
  std::vector<GenerationParameters> cases;
  cases.push_back(typical());
  GenerationParameters multi_line = typical();
  multi_line.prompt = "first line\n\nthird line, with: punctuation";
  multi_line.negative_prompt = "bad hands\nlow quality";
  cases.push_back(multi_line);
  GenerationParameters unicode = typical();
  unicode.prompt = "水彩画のカワウソ, café 🦦";
  unicode.negative_prompt = "";
  unicode.model = "モデル v1.5";
  cases.push_back(unicode);
  GenerationParameters tricky = typical();
  tricky.sampler = "DPM++ 2M Karras";
  tricky.model = "C:\\models\\sd15.safetensors";  // colon and backslashes: JSON-quoted
  tricky.extra = {{"Quoted", "\"starts with a quote\""}, {"Empty", ""}, {"Spaces", "  padded  "},
                  {"Schedule type", "Karras"}, {"Multi", "line\none"}, {"Guidance/Schedule-x", "linear"}};
  cases.push_back(tricky);
  GenerationParameters empty_prompt = typical();
  empty_prompt.prompt = "";
  cases.push_back(empty_prompt);

  for (const auto& p : cases) {
    const std::string text = format_parameters(p);
    EXPECT_EQ(parse_parameters(text), p) << text;
  }
}

TEST(GenerationParameters, ParsesWebuiInfotext) {
  // As written by stable-diffusion-webui 1.6 (keys otter does not know go to extra).
  const GenerationParameters p = parse_parameters(
      "masterpiece, best quality, otter\n"
      "Negative prompt: lowres, bad anatomy\n"
      "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7.0, Seed: 1234567890, Size: 512x768, "
      "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: \"add_detail: 7c6bad76eb54\", "
      "Version: v1.6.0\n");
  EXPECT_EQ(p.prompt, "masterpiece, best quality, otter");
  EXPECT_EQ(p.negative_prompt, "lowres, bad anatomy");
  EXPECT_EQ(p.steps, 28);
  EXPECT_EQ(p.sampler, "DPM++ 2M Karras");
  EXPECT_EQ(p.cfg_scale, 7.0);
  EXPECT_EQ(p.seed, 1234567890u);
  EXPECT_EQ(p.width, 512);
  EXPECT_EQ(p.height, 768);
  EXPECT_EQ(p.model, "v1-5-pruned-emaonly");
  const std::vector<std::pair<std::string, std::string>> extra = {
      {"Model hash", "6ce0161689"}, {"Lora hashes", "add_detail: 7c6bad76eb54"}, {"Version", "v1.6.0"}};
  EXPECT_EQ(p.extra, extra);
}

TEST(GenerationParameters, LastLineWithFewPairsIsPrompt) {
  const GenerationParameters p = parse_parameters("an otter\nstyle: watercolor, mood: calm");
  EXPECT_EQ(p.prompt, "an otter\nstyle: watercolor, mood: calm");
  EXPECT_FALSE(p.steps.has_value());
  EXPECT_TRUE(p.extra.empty());
}

TEST(GenerationParameters, RejectsMalformedValuesAndKeys) {
  expect_error([] { parse_parameters("p\nSteps: twenty, Sampler: Euler, Seed: 1"); }, {"'Steps'", "twenty"});
  expect_error([] { parse_parameters("p\nSteps: 20, Sampler: Euler, Seed: -1"); }, {"'Seed'", "-1"});
  expect_error([] { parse_parameters("p\nSteps: 20, Size: 512, Seed: 1"); }, {"'Size'", "WIDTHxHEIGHT"});
  GenerationParameters p = typical();
  p.extra = {{"x", "1"}};
  expect_error([&] { format_parameters(p); }, {"'x'", "cannot be a key"});
  p.extra = {{"Steps", "30"}};
  expect_error([&] { format_parameters(p); }, {"'Steps'", "field"});
  p.extra = {{"Key", "bad\xff, utf8"}};
  expect_error([&] { format_parameters(p); }, {"'Key'", "UTF-8"});
}

TEST(GenerationParameters, SurviveAPngRoundTrip) {
  TempDir dir("png");
  GenerationParameters p = typical();
  p.prompt = "カワウソ (otter), watercolor";  // non-ASCII: stored as iTXt
  const fs::path path = dir.path() / "otter.png";
  const auto rgb = random_rgb(8, 8, 8);
  write_png(path, rgb.data(), 8, 8, {{"parameters", format_parameters(p)}});
  const auto chunks = chunks_of(read_bytes(path));
  EXPECT_TRUE(std::any_of(chunks.begin(), chunks.end(), [](const Chunk& c) { return c.type == "iTXt"; }));
  const auto text = read_png(path).find_text("parameters");
  ASSERT_TRUE(text.has_value());
  EXPECT_EQ(parse_parameters(*text), p);
}

}  // namespace
}  // namespace otter
