// safetensors: round trips through the writer and reader, every way a file can be malformed
// (each with its own message), and the real tiny-sd1 UNet file from ../shared.
#include "io/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "support/shared_data.h"

namespace otter {
namespace {

namespace fs = std::filesystem;

// A fresh, empty folder per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / cat("otter_st_", ::getpid(), "_", info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes the 8-byte length (header.size() unless `claimed_len` is given), the header text and
  // `data` bytes.
  fs::path raw_file(const std::string& name, const std::string& header, size_t data_bytes = 0,
                    std::optional<uint64_t> claimed_len = std::nullopt) {
    const fs::path p = dir_ / name;
    std::ofstream out(p, std::ios::binary);
    const uint64_t n = claimed_len.value_or(header.size());
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
    out << header;
    for (size_t i = 0; i < data_bytes; ++i) out.put(static_cast<char>(i));
    return p;
  }

  // Expects open() to fail with a message containing every one of `parts`.
  static void expect_error(const fs::path& p, std::initializer_list<std::string> parts) {
    try {
      SafetensorsFile::open(p);
      ADD_FAILURE() << "opening " << p << " succeeded; expected an error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(p.string()), std::string::npos) << "message does not name the file: " << msg;
      for (const std::string& part : parts) EXPECT_NE(msg.find(part), std::string::npos) << "missing '" << part << "' in: " << msg;
    }
  }

  fs::path dir_;
};

template <class T>
Tensor from_values(const Shape& shape, DType dtype, const std::vector<T>& values) {
  Tensor t = Tensor::empty(shape, dtype);
  EXPECT_EQ(static_cast<size_t>(t.nbytes()), values.size() * sizeof(T));
  std::memcpy(t.raw(), values.data(), values.size() * sizeof(T));
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.contiguous().raw(), b.contiguous().raw(), a.nbytes()) == 0;
}

TEST_F(SafetensorsTest, RoundTripEveryDtypeScalarEmptyAndMetadata) {
  const std::vector<std::pair<std::string, Tensor>> tensors = {
      {"f32", from_values<float>({2, 3}, DType::F32, {1.f, -2.5f, 3.25f, 0.f, -0.f, 1e-30f})},
      {"f16", from_values<uint16_t>({3}, DType::F16, {f32_to_f16(1.f), f32_to_f16(-0.5f), f32_to_f16(65504.f)})},
      {"bf16", from_values<uint16_t>({1, 2}, DType::BF16, {f32_to_bf16(3.f), f32_to_bf16(-1e20f)})},
      {"f64", from_values<double>({2}, DType::F64, {3.141592653589793, -1e300})},
      {"i32", from_values<int32_t>({2, 1, 1}, DType::I32, {-7, 2147483647})},
      {"i64", from_values<int64_t>({3}, DType::I64, {0, -1, int64_t{1} << 60})},
      {"u8", from_values<uint8_t>({5}, DType::U8, {0, 1, 127, 128, 255})},
      {"scalar", from_values<float>(Shape{}, DType::F32, {42.f})},
      {"empty", Tensor::empty({0, 3}, DType::F32)},
      {"big5d", Tensor::full({1, 2, 1, 3, 2}, 0.75f)},
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "ünïcode \"quoted\""}};
  const fs::path p = dir_ / "rt.safetensors";
  write_safetensors(p, tensors, meta);

  const SafetensorsFile f = SafetensorsFile::open(p);
  EXPECT_EQ(f.metadata(), meta);
  EXPECT_EQ(f.size(), tensors.size());
  EXPECT_EQ(f.header_bytes() % 8, 0u);
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(f.has(name)) << name;
    const Tensor r = f.tensor(name);
    EXPECT_TRUE(same_bytes(r, t)) << name << ": " << r.describe() << " vs " << t.describe();
    EXPECT_EQ(f.info(name).nbytes, t.nbytes());
  }
  EXPECT_EQ(f.tensor("scalar").rank(), 0);
  EXPECT_EQ(f.tensor("scalar").f32()[0], 42.f);
  EXPECT_EQ(f.tensor("empty").numel(), 0);
  // Packed back to back in the order given.
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    EXPECT_EQ(f.info(name).offset, offset) << name;
    offset += t.nbytes();
  }
  EXPECT_EQ(f.file_bytes(), 8 + f.header_bytes() + offset);
}

TEST_F(SafetensorsTest, NamesAreSortedAndMetadataIsOptional) {
  const fs::path p = dir_ / "n.safetensors";
  write_safetensors(p, {{"zeta", Tensor::full({1}, 1.f)}, {"alpha", Tensor::full({1}, 2.f)}, {"mid", Tensor::full({1}, 3.f)}});
  const SafetensorsFile f = SafetensorsFile::open(p);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"alpha", "mid", "zeta"}));
  EXPECT_TRUE(f.metadata().empty());
}

TEST_F(SafetensorsTest, NonContiguousInputIsWrittenInRowMajorOrder) {
  Tensor t = from_values<float>({2, 3}, DType::F32, {0, 1, 2, 3, 4, 5});
  const fs::path p = dir_ / "perm.safetensors";
  write_safetensors(p, {{"t", t.permute({1, 0})}});
  const Tensor r = SafetensorsFile::open(p).tensor("t");
  ASSERT_EQ(r.shape(), Shape({3, 2}));
  const std::vector<float> expected = {0, 3, 1, 4, 2, 5};
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(r.f32()[i], expected[i]);
}

TEST_F(SafetensorsTest, ViewsOutliveTheFileObject) {
  const fs::path p = dir_ / "v.safetensors";
  write_safetensors(p, {{"x", Tensor::full({4}, 2.5f)}});
  Tensor view;
  {
    const SafetensorsFile f = SafetensorsFile::open(p);
    view = f.tensor("x");
  }
  fs::remove(p);  // the mapping survives unlinking too
  for (int i = 0; i < 4; ++i) EXPECT_EQ(view.f32()[i], 2.5f);
}

// Backends drop a weight's file pages once they hold their own copy; reading the tensor again must
// give the same values (re-read from the file), and memory that is not a file mapping is untouched.
TEST_F(SafetensorsTest, ReleasedFilePagesReadBackUnchanged) {
  const fs::path p = dir_ / "pages.safetensors";
  const int64_t n = 5 * 4096 + 7;  // several pages, not page-aligned at either end
  Tensor values = Tensor::empty({n}, DType::F32);
  for (int64_t i = 0; i < n; ++i) values.f32()[i] = static_cast<float>(i) * 0.5f - 3.0f;
  write_safetensors(p, {{"a", Tensor::full({3}, 1.0f)}, {"w", values}, {"z", Tensor::full({5}, -2.0f)}});
  const SafetensorsFile f = SafetensorsFile::open(p);
  const Tensor w = f.tensor("w"), a = f.tensor("a"), z = f.tensor("z");
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += w.f32()[i];  // make the pages resident
  w.release_file_pages();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(w.f32()[i], values.f32()[i]) << i;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a.f32()[i], 1.0f);   // neighbours sharing the edge pages
  for (int i = 0; i < 5; ++i) EXPECT_EQ(z.f32()[i], -2.0f);
  values.release_file_pages();  // allocator memory: a no-op
  EXPECT_EQ(values.f32()[n - 1], static_cast<float>(n - 1) * 0.5f - 3.0f);
  EXPECT_GT(sum, 0.0);
}

TEST_F(SafetensorsTest, MisalignedTensorIsCopiedWithCorrectValues) {
  // U8[1] at [0,1), then F32[2] at [1,9): legal, but the floats are not 4-byte aligned.
  const std::string header =
      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  const fs::path p = dir_ / "mis.safetensors";
  {
    std::ofstream out(p, std::ios::binary);
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
    out << header;
    out.put(7);
    const float v[2] = {1.5f, -3.f};
    out.write(reinterpret_cast<const char*>(v), sizeof v);
  }
  const SafetensorsFile f = SafetensorsFile::open(p);
  EXPECT_EQ(f.tensor("a").data<uint8_t>()[0], 7);
  const Tensor b = f.tensor("b");
  EXPECT_EQ(b.f32()[0], 1.5f);
  EXPECT_EQ(b.f32()[1], -3.f);
}

TEST_F(SafetensorsTest, MissingTensorNamesFileAndTensor) {
  const fs::path p = dir_ / "m.safetensors";
  write_safetensors(p, {{"x", Tensor::full({1}, 1.f)}});
  const SafetensorsFile f = SafetensorsFile::open(p);
  EXPECT_FALSE(f.has("y"));
  try {
    f.tensor("y");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p.string()), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("tensor 'y': no such tensor"), std::string::npos) << e.what();
  }
}

TEST_F(SafetensorsTest, FailedWriteLeavesNoFileAndKeepsOldContent) {
  const fs::path p = dir_ / "w.safetensors";
  write_safetensors(p, {{"old", Tensor::full({2}, 1.f)}});
  // Duplicate names are refused before anything is written.
  EXPECT_THROW(write_safetensors(p, {{"a", Tensor::full({1}, 1.f)}, {"a", Tensor::full({1}, 2.f)}}), Error);
  EXPECT_THROW(write_safetensors(p, {{"__metadata__", Tensor::full({1}, 1.f)}}), Error);
  EXPECT_THROW(write_safetensors(p, {{"undef", Tensor()}}), Error);
  EXPECT_TRUE(SafetensorsFile::open(p).has("old"));
  // Nothing but the original file is left in the folder (no temporaries).
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
  // A folder that does not exist: an error, and no file appears.
  EXPECT_THROW(write_safetensors(dir_ / "nope" / "x.safetensors", {{"a", Tensor::full({1}, 1.f)}}), Error);
  EXPECT_FALSE(fs::exists(dir_ / "nope"));
}

// ---- malformed files: each failure has its own message ------------------------------------

TEST_F(SafetensorsTest, MissingFileAndDirectory) {
  expect_error(dir_ / "absent.safetensors", {"cannot open"});
  expect_error(dir_, {"not a regular file"});
}

TEST_F(SafetensorsTest, ShorterThanLengthField) {
  const fs::path p = dir_ / "short.safetensors";
  std::ofstream(p, std::ios::binary) << "abcde";
  expect_error(p, {"file is 5 bytes", "shorter than the 8-byte header length"});
  const fs::path e = dir_ / "empty.safetensors";
  std::ofstream(e, std::ios::binary).flush();
  expect_error(e, {"file is 0 bytes"});
}

TEST_F(SafetensorsTest, HeaderLengthPastEndOfFile) {
  expect_error(raw_file("past.safetensors", "{}", 0, 1000), {"header length 1000", "past the end of the file (10 bytes)"});
}

TEST_F(SafetensorsTest, HundredMegabyteHeaderClaimIsRefused) {
  expect_error(raw_file("huge.safetensors", "{}", 0, 100ull << 20), {"header length 104857600", "exceeds the limit of 100000000"});
  expect_error(raw_file("max.safetensors", "{}", 0, ~0ull), {"exceeds the limit"});
}

TEST_F(SafetensorsTest, InvalidJson) {
  expect_error(raw_file("bad.safetensors", R"({"a": {"dtype": "F32",)"), {"header is not valid JSON"});
  expect_error(raw_file("zero.safetensors", ""), {"header is not valid JSON"});
  expect_error(raw_file("nul.safetensors", std::string("{}\0\0\0\0\0\0", 8)), {"header is not valid JSON: NUL byte at header offset 2"});
  expect_error(raw_file("trail.safetensors", "{} {}   "), {"header is not valid JSON"});
  expect_error(raw_file("utf8.safetensors", "{\"\xff\": 1}"), {"header is not valid JSON"});
}

TEST_F(SafetensorsTest, HeaderNotAnObject) {
  expect_error(raw_file("arr.safetensors", "[1, 2]  "), {"header must be a JSON object, got array"});
}

TEST_F(SafetensorsTest, UnknownDtype) {
  expect_error(raw_file("dt.safetensors", R"({"w8": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}})", 2),
               {"tensor 'w8'", "unsupported dtype \"F8_E4M3\"", "F32, F16, BF16, F64, I32, I64, U8"});
  expect_error(raw_file("nodt.safetensors", R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", 8),
               {"tensor 'w'", "missing or non-string \"dtype\""});
}

TEST_F(SafetensorsTest, WrongSizeForShape) {
  expect_error(raw_file("size.safetensors", R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", 20),
               {"tensor 'w'", "wrong size for shape", "needs 24 bytes", "span 20"});
  // A shape whose byte size overflows 64 bits must not wrap around to a matching size.
  expect_error(raw_file("ovf.safetensors",
                        R"({"w": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]}})"),
               {"tensor 'w'", "overflows"});
}

TEST_F(SafetensorsTest, OffsetsOutOfRange) {
  expect_error(raw_file("oor.safetensors", R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})", 16),
               {"tensor 'w'", "out of range", "holds only 16 bytes"});
  expect_error(raw_file("rev.safetensors", R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [4, 2]}})", 8),
               {"tensor 'w'", "begin after end"});
  expect_error(raw_file("three.safetensors", R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}})", 8),
               {"tensor 'w'", "must be [begin, end]"});
  expect_error(raw_file("negoff.safetensors", R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}})", 8),
               {"tensor 'w'", "must be [begin, end]"});
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  expect_error(raw_file("ovl.safetensors",
                        R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                        R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [24, 32]},)"
                        R"( "c": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
                        32),
               {"tensor 'c'", "overlap tensor 'a'"});
  // Touching ranges and zero-size tensors anywhere are fine.
  const SafetensorsFile f = SafetensorsFile::open(
      raw_file("touch.safetensors", R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                                    R"( "z": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},)"
                                    R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
               16));
  EXPECT_EQ(f.size(), 3u);
}

TEST_F(SafetensorsTest, BadShapes) {
  expect_error(raw_file("neg.safetensors", R"({"w": {"dtype": "F32", "shape": [-1, 2], "data_offsets": [0, 8]}})", 8),
               {"tensor 'w'", "non-negative integers, found -1"});
  expect_error(raw_file("frac.safetensors", R"({"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}})", 8),
               {"tensor 'w'", "non-negative integers, found 2.0"});
  expect_error(raw_file("str.safetensors", R"({"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}})", 8),
               {"tensor 'w'", "non-negative integers"});
  expect_error(raw_file("noshape.safetensors", R"({"w": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}})", 8),
               {"tensor 'w'", "not an array"});
  expect_error(raw_file("6d.safetensors", R"({"w": {"dtype": "U8", "shape": [1,1,1,1,1,2], "data_offsets": [0, 2]}})", 8),
               {"tensor 'w'", "6 dimensions", "at most 5"});
  expect_error(raw_file("entry.safetensors", R"({"w": [1, 2]})", 8), {"tensor 'w'", "entry must be a JSON object"});
}

TEST_F(SafetensorsTest, BadMetadata) {
  expect_error(raw_file("meta1.safetensors", R"({"__metadata__": {"format": 1}})"),
               {"\"__metadata__\" value for key 'format' must be a string"});
  expect_error(raw_file("meta2.safetensors", R"({"__metadata__": ["pt"]})"), {"\"__metadata__\" must be a JSON object"});
}

// ---- the real tiny SD1 UNet ------------------------------------------------------------------

TEST(SafetensorsReal, TinySd1Unet) {
  OTTER_REQUIRE_SHARED(shared);
  const SafetensorsFile f =
      SafetensorsFile::open(shared / "models" / "tiny-sd1" / "unet" / "diffusion_pytorch_model.safetensors");
  EXPECT_EQ(f.size(), 684u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  int64_t params = 0;
  for (const std::string& name : f.names()) params += f.info(name).shape.numel();
  EXPECT_EQ(params, 827476);

  EXPECT_EQ(f.tensor("conv_in.weight").shape(), Shape({16, 4, 3, 3}));
  EXPECT_EQ(f.tensor("down_blocks.0.attentions.0.proj_in.weight").shape(), Shape({16, 16, 1, 1}));
  EXPECT_EQ(f.tensor("time_embedding.linear_1.weight").shape(), Shape({64, 16}));
  // Values read with Python's struct module from the same file.
  const float* b = f.tensor("conv_in.bias").f32();
  EXPECT_EQ(b[0], -0.09769545495510101f);
  EXPECT_EQ(b[1], 0.14182797074317932f);
  EXPECT_EQ(b[3], -0.008474688045680523f);
  const float* o = f.tensor("conv_out.bias").f32();
  EXPECT_EQ(o[0], 0.1978321373462677f);
  EXPECT_EQ(o[3], 0.19771605730056763f);
}

}  // namespace
}  // namespace otter
