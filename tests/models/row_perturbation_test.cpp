// Row perturbations (PAG's identity attention, SEG's blurred queries, SLG's skipped blocks) against
// naive implementations written here from diffusers' description: plain loops in double for the
// projections, softmax attention and the 2-D Gaussian blur with reflect padding. The rows outside
// the perturbed range must be those of the ordinary computation; the layer names must pick the
// blocks diffusers' pag_applied_layers rule picks (../shared/golden/tiny-sd1_pag.json).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "backend/backend.h"
#include "models/blocks.h"
#include "models/transformer2d.h"
#include "models/transformer_block_choice.h"
#include "models/unet.h"
#include "pipeline/stable_diffusion.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

using testing::random_normal_tensor;

class MapSource : public TensorSource {
 public:
  void put(const std::string& name, Tensor t) { tensors_[name] = std::move(t); }
  bool has(const std::string& name) const override { return tensors_.count(name) > 0; }
  Tensor get(const std::string& name) const override { return tensors_.at(name); }
  std::vector<std::string> names() const override {
    std::vector<std::string> n;
    for (const auto& [k, v] : tensors_) n.push_back(k);
    return n;
  }
  std::string origin() const override { return "test weights"; }

 private:
  std::map<std::string, Tensor> tensors_;
};

constexpr int64_t kDim = 8;
constexpr int kHeads = 2;

// y[r] = W x[r] (+ b), rows of length in.
std::vector<double> naive_linear(const std::vector<double>& x, const Tensor& w, const Tensor* b) {
  const int64_t out = w.dim(0), in = w.dim(1), rows = static_cast<int64_t>(x.size()) / in;
  std::vector<double> y(static_cast<size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = b ? b->f32()[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) acc += w.f32()[o * in + i] * x[static_cast<size_t>(r * in + i)];
      y[static_cast<size_t>(r * out + o)] = acc;
    }
  return y;
}

// softmax(q kᵀ / sqrt(d)) v per head, for one batch row of N tokens.
std::vector<double> naive_attention(const std::vector<double>& q, const std::vector<double>& k,
                                    const std::vector<double>& v, int64_t N) {
  const int64_t d = kDim / kHeads;
  std::vector<double> out(static_cast<size_t>(N * kDim));
  for (int h = 0; h < kHeads; ++h)
    for (int64_t i = 0; i < N; ++i) {
      std::vector<double> s(static_cast<size_t>(N));
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j < N; ++j) {
        double dot = 0;
        for (int64_t e = 0; e < d; ++e) dot += q[static_cast<size_t>(i * kDim + h * d + e)] * k[static_cast<size_t>(j * kDim + h * d + e)];
        s[static_cast<size_t>(j)] = dot / std::sqrt(static_cast<double>(d));
        mx = std::max(mx, s[static_cast<size_t>(j)]);
      }
      for (double& x : s) sum += (x = std::exp(x - mx));
      for (int64_t e = 0; e < d; ++e) {
        double acc = 0;
        for (int64_t j = 0; j < N; ++j) acc += s[static_cast<size_t>(j)] / sum * v[static_cast<size_t>(j * kDim + h * d + e)];
        out[static_cast<size_t>(i * kDim + h * d + e)] = acc;
      }
    }
  return out;
}

// diffusers' _gaussian_blur_2d on one row's queries [N, C], from its description: the first side²
// tokens as a side x side grid per channel; a direct 2-D correlation with the outer product of a
// normalised Gaussian over linspace(-(k-1)/2, (k-1)/2, k), reflect padding (mirror without the
// edge); or, when sigma <= the threshold, the channel's mean.
std::vector<double> naive_blur(std::vector<double> q, int64_t N, double sigma, double threshold) {
  const auto side = static_cast<int64_t>(std::sqrt(static_cast<double>(N)));
  const auto refl = [&](int64_t i) { return i < 0 ? -i : i >= side ? 2 * (side - 1) - i : i; };
  std::vector<double> out = q;
  if (sigma > threshold) {
    const auto six = static_cast<int64_t>(std::ceil(6 * sigma));
    const int64_t k = std::min<int64_t>(six + 1 - six % 2, side - (side % 2 - 1));
    std::vector<double> g(static_cast<size_t>(k));
    double sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += g[static_cast<size_t>(i)] = std::exp(-0.5 * std::pow((i - (k - 1) / 2.0) / sigma, 2));
    for (double& x : g) x /= sum;
    for (int64_t c = 0; c < kDim; ++c)
      for (int64_t y = 0; y < side; ++y)
        for (int64_t x = 0; x < side; ++x) {
          double acc = 0;
          for (int64_t i = 0; i < k; ++i)
            for (int64_t j = 0; j < k; ++j)
              acc += g[static_cast<size_t>(i)] * g[static_cast<size_t>(j)] *
                     q[static_cast<size_t>((refl(y + i - k / 2) * side + refl(x + j - k / 2)) * kDim + c)];
          out[static_cast<size_t>((y * side + x) * kDim + c)] = acc;
        }
  } else {
    for (int64_t c = 0; c < kDim; ++c) {
      double mean = 0;
      for (int64_t t = 0; t < side * side; ++t) mean += q[static_cast<size_t>(t * kDim + c)];
      mean /= static_cast<double>(side * side);
      for (int64_t t = 0; t < side * side; ++t) out[static_cast<size_t>(t * kDim + c)] = mean;
    }
  }
  return out;
}

struct AttentionFixture {
  MapSource source;
  int64_t count = 0;
  Tensor wq, wk, wv, wo, bo;
  AttentionFixture() {
    wq = random_normal_tensor(Shape{kDim, kDim}, 11), wk = random_normal_tensor(Shape{kDim, kDim}, 12);
    wv = random_normal_tensor(Shape{kDim, kDim}, 13), wo = random_normal_tensor(Shape{kDim, kDim}, 14);
    bo = random_normal_tensor(Shape{kDim}, 15);
    source.put("attn1.to_q.weight", wq), source.put("attn1.to_k.weight", wk), source.put("attn1.to_v.weight", wv);
    source.put("attn1.to_out.0.weight", wo), source.put("attn1.to_out.0.bias", bo);
  }
};

std::vector<double> row_of(const Tensor& x, int64_t b) {
  const int64_t n = x.numel() / x.dim(0);
  return std::vector<double>(x.f32() + b * n, x.f32() + (b + 1) * n);
}

double max_diff(const std::vector<double>& a, const float* b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// One attention layer, 3 rows, the last perturbed; checked for every variant and two token counts
// (16: a 4x4 grid; 18: the grid plus two tokens the blur leaves alone).
TEST(RowPerturbation, AttentionVariantsMatchNaiveReferences) {
  auto be = make_cpu_backend(Precision::F32);
  AttentionFixture f;
  Weights weights(f.source);
  MultiHeadAttention attn(ParamLoader(weights, f.count).child("attn1"), kDim, kDim, kHeads);
  struct Variant {
    BlockPerturbation kind;
    double sigma, threshold;
  };
  const Variant variants[] = {{BlockPerturbation::IdentitySelfAttention, 0, 0},
                              {BlockPerturbation::BlurredQueries, 9999999.0, 9999.0},  // diffusers' default: Gaussian over the grid
                              {BlockPerturbation::BlurredQueries, 1.0, 9999.0},        // the mean
                              {BlockPerturbation::BlurredQueries, 0.5, 0.1}};          // a 3x3 Gaussian
  for (int64_t N : {16, 18})
    for (const Variant& v : variants) {
      const Tensor x = random_normal_tensor(Shape{3, N, kDim}, 20 + N);
      RowPerturbation p;
      p.kind = v.kind;
      p.row_begin = 2, p.row_end = 3;
      p.blur_sigma = v.sigma, p.blur_threshold_inf = v.threshold;
      const BlockPerturbations list{&p};
      const Tensor out = attn.forward(*be, x, nullptr, nullptr, &list).contiguous();
      for (int64_t b = 0; b < 3; ++b) {
        const std::vector<double> xr = row_of(x, b);
        std::vector<double> q = naive_linear(xr, f.wq, nullptr);
        const std::vector<double> k = naive_linear(xr, f.wk, nullptr), val = naive_linear(xr, f.wv, nullptr);
        std::vector<double> want;
        if (b == 2 && v.kind == BlockPerturbation::IdentitySelfAttention) {
          want = naive_linear(val, f.wo, &f.bo);
        } else {
          if (b == 2) q = naive_blur(q, N, v.sigma, v.threshold);
          want = naive_linear(naive_attention(q, k, val, N), f.wo, &f.bo);
        }
        EXPECT_LE(max_diff(want, out.f32() + b * N * kDim), 2e-5)
            << "N " << N << " variant " << static_cast<int>(v.kind) << " sigma " << v.sigma << " row " << b;
      }
    }
}

// SLG: a skipped block passes its input through on the perturbed rows; the other rows are the
// block's ordinary output.
TEST(RowPerturbation, SkippedBlockPassesItsInputThrough) {
  auto be = make_cpu_backend(Precision::F32);
  MapSource source;
  int64_t seed = 40;
  for (const char* n : {"norm1", "norm2", "norm3"}) {
    source.put(cat(n, ".weight"), random_normal_tensor(Shape{kDim}, ++seed));
    source.put(cat(n, ".bias"), random_normal_tensor(Shape{kDim}, ++seed));
  }
  for (const char* a : {"attn1", "attn2"}) {
    for (const char* w : {"to_q", "to_k", "to_v", "to_out.0"})
      source.put(cat(a, ".", w, ".weight"), random_normal_tensor(Shape{kDim, kDim}, ++seed));
    source.put(cat(a, ".to_out.0.bias"), random_normal_tensor(Shape{kDim}, ++seed));
  }
  source.put("ff.net.0.proj.weight", random_normal_tensor(Shape{8 * kDim, kDim}, ++seed));
  source.put("ff.net.0.proj.bias", random_normal_tensor(Shape{8 * kDim}, ++seed));
  source.put("ff.net.2.weight", random_normal_tensor(Shape{kDim, 4 * kDim}, ++seed));
  source.put("ff.net.2.bias", random_normal_tensor(Shape{kDim}, ++seed));
  Weights weights(source);
  int64_t count = 0;
  BasicTransformerBlock block(ParamLoader(weights, count), kDim, kDim, kHeads);
  const Tensor x = random_normal_tensor(Shape{3, 16, kDim}, 60), context = random_normal_tensor(Shape{3, 5, kDim}, 61);
  Tensor plain = x.clone(), skipped = x.clone();
  block.forward(*be, plain, context);
  RowPerturbation p;
  p.kind = BlockPerturbation::SkipBlock;
  p.row_begin = 1, p.row_end = 2;  // the middle row: groups before and after it run
  const BlockPerturbations list{&p};
  block.forward(*be, skipped, context, &list);
  EXPECT_EQ(testing::max_abs_diff(skipped.slice(0, 1, 2), x.slice(0, 1, 2)), 0.0);
  EXPECT_LE(testing::max_abs_diff(skipped.slice(0, 0, 1), plain.slice(0, 0, 1)), 1e-5);
  EXPECT_LE(testing::max_abs_diff(skipped.slice(0, 2, 3), plain.slice(0, 2, 3)), 1e-5);
  EXPECT_GT(testing::max_abs_diff(plain.slice(0, 1, 2), x.slice(0, 1, 2)), 0.1);
}

// The layer names pick what diffusers 0.30.3's pag_applied_layers rule picks (the golden's own
// examples on tiny-sd1), otter's short names pick the same blocks, and a name matching nothing
// is an error listing the layers.
TEST(RowPerturbation, LayerNamesPickWhatDiffusersPicks) {
  OTTER_REQUIRE_SHARED(shared);
  const testing::Golden golden(shared / "golden" / "tiny-sd1_pag.json");
  auto be = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *be);
  const std::vector<std::string>& names = model->unet().transformer_block_names();
  ASSERT_EQ(names.size(), golden.manifest()["unet_self_attention_layers"].size());
  for (size_t i = 0; i < names.size(); ++i)
    EXPECT_EQ(names[i] + ".attn1", golden.manifest()["unet_self_attention_layers"][i].get<std::string>());
  const auto picked = [&](const nlohmann::json& spec) {
    std::vector<std::string> out;
    for (int b : choose_transformer_blocks(names, spec)) out.push_back(names[static_cast<size_t>(b)] + ".attn1.processor");
    return out;
  };
  for (auto it = golden.manifest()["layer_spec_examples"].begin(); it != golden.manifest()["layer_spec_examples"].end(); ++it) {
    if (it.value().is_string()) {  // diffusers raised
      EXPECT_THROW((void)picked(it.key()), Error) << it.key();
      continue;
    }
    EXPECT_EQ(picked(it.key()), it.value().get<std::vector<std::string>>()) << it.key();
  }
  EXPECT_EQ(picked("down.1"), picked("down_blocks.1"));
  EXPECT_EQ(picked("up.2.1"), picked("up_blocks.2.attentions.1"));
  EXPECT_EQ(picked(nlohmann::json::array({6, "mid"})), picked("mid"));
  EXPECT_EQ(short_transformer_name(names[6]), "mid");
  EXPECT_EQ(short_transformer_name(names[0]), "down.0.0");
  try {
    (void)picked("down.7");
    ADD_FAILURE() << "down.7 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mid_block.attentions.0.transformer_blocks.0  (mid)"), std::string::npos) << e.what();
  }
}

// In the whole UNet the unperturbed rows are the plain forward's, whatever the perturbation does
// to the last rows.
TEST(RowPerturbation, UNetRowsOutsideThePerturbationAreUnchanged) {
  OTTER_REQUIRE_SHARED(shared);
  auto be = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *be);
  UNet& unet = model->unet();
  const Tensor x = random_normal_tensor(Shape{3, 4, 16, 16}, 70), context = random_normal_tensor(Shape{3, 77, 32}, 71);
  const Tensor plain = unet.forward(*be, x, 500.0f, context);
  for (BlockPerturbation kind : {BlockPerturbation::IdentitySelfAttention, BlockPerturbation::BlurredQueries,
                                 BlockPerturbation::SkipBlock}) {
    RowPerturbation p;
    p.kind = kind;
    p.blocks = choose_transformer_blocks(unet.transformer_block_names(), nlohmann::json::array({"down.0", "mid", "up.3"}));
    p.row_begin = 2, p.row_end = 3;
    const Tensor out = unet.forward(*be, x, 500.0f, context, {}, &p);
    EXPECT_LE(testing::max_abs_diff(out.slice(0, 0, 2), plain.slice(0, 0, 2)), 1e-5 * testing::max_abs(plain))
        << static_cast<int>(kind);
    EXPECT_GT(testing::max_abs_diff(out.slice(0, 2, 3), plain.slice(0, 2, 3)), 1e-3) << static_cast<int>(kind);
  }
}

// Several perturbations in one call (otter lab's experiments): a chain over disjoint rows, each
// with its own kind and layers, gives every row what a call with that row's perturbation alone
// gives (PAG, SEG and SLG rows between ordinary ones).
TEST(RowPerturbation, AChainGivesEachRowItsOwnPerturbation) {
  OTTER_REQUIRE_SHARED(shared);
  auto be = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *be);
  UNet& unet = model->unet();
  const Tensor x = random_normal_tensor(Shape{5, 4, 16, 16}, 80), context = random_normal_tensor(Shape{5, 77, 32}, 81);
  const auto& names = unet.transformer_block_names();
  RowPerturbation pag, seg, slg;
  pag.kind = BlockPerturbation::IdentitySelfAttention, pag.blocks = choose_transformer_blocks(names, "mid");
  seg.kind = BlockPerturbation::BlurredQueries, seg.blocks = choose_transformer_blocks(names, "down.0");
  slg.kind = BlockPerturbation::SkipBlock, slg.blocks = choose_transformer_blocks(names, nlohmann::json::array({"mid", "up.3"}));
  pag.row_begin = 1, pag.row_end = 2;
  seg.row_begin = 3, seg.row_end = 4;
  slg.row_begin = 4, slg.row_end = 5;
  pag.next = &slg;  // any order
  slg.next = &seg;
  const Tensor chained = unet.forward(*be, x, 500.0f, context, {}, &pag);
  const Tensor plain = unet.forward(*be, x, 500.0f, context);
  const double tol = 1e-5 * testing::max_abs(plain);
  for (int64_t r : {0, 2}) EXPECT_LE(testing::max_abs_diff(chained.slice(0, r, r + 1), plain.slice(0, r, r + 1)), tol) << r;
  for (RowPerturbation* p : {&pag, &seg, &slg}) {
    RowPerturbation alone = *p;
    alone.next = nullptr;
    const Tensor single = unet.forward(*be, x, 500.0f, context, {}, &alone);
    const int64_t r = p->row_begin;
    EXPECT_LE(testing::max_abs_diff(chained.slice(0, r, r + 1), single.slice(0, r, r + 1)), tol) << static_cast<int>(p->kind);
    EXPECT_GT(testing::max_abs_diff(chained.slice(0, r, r + 1), plain.slice(0, r, r + 1)), 1e-3) << static_cast<int>(p->kind);
  }
  RowPerturbation overlapping = seg;
  overlapping.row_begin = 1, overlapping.row_end = 3, overlapping.next = nullptr;
  slg.next = &overlapping;
  EXPECT_THROW((void)unet.forward(*be, x, 500.0f, context, {}, &pag), Error);
}

}  // namespace
}  // namespace otter
