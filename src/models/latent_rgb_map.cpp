#include "models/latent_rgb_map.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "models/vae.h"

namespace otter {
namespace {

// Images per VAE call while fitting: bounds the activations of a full-size VAE at 128².
constexpr int64_t kChunk = 4;

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) from the top 24 bits: exact in float on every machine.
float unit(uint64_t& state) { return static_cast<float>(splitmix64(state) >> 40) / 16777216.0f; }

// Bilinear source coordinate of output pixel `o` at upscale `scale`, as torch's interpolate with
// align_corners=False: the four taps' indices and the weight of the upper one.
struct Tap {
  int64_t lo, hi;
  float w;
};
Tap tap(int64_t o, int scale, int64_t n) {
  const float src = std::max((static_cast<float>(o) + 0.5f) / static_cast<float>(scale) - 0.5f, 0.0f);
  const int64_t lo = std::min(static_cast<int64_t>(src), n - 1);
  return {lo, std::min(lo + 1, n - 1), src - static_cast<float>(lo)};
}

// Latents [C, h, w] upsampled bilinearly by `scale` into `out` [C, h·scale, w·scale].
void upsample(const float* z, int64_t C, int64_t h, int64_t w, int scale, float* out) {
  const int64_t H = h * scale, W = w * scale;
  for (int64_t y = 0; y < H; ++y) {
    const Tap ty = tap(y, scale, h);
    for (int64_t x = 0; x < W; ++x) {
      const Tap tx = tap(x, scale, w);
      for (int64_t c = 0; c < C; ++c) {
        const float* p = z + c * h * w;
        const float top = p[ty.lo * w + tx.lo] * (1 - tx.w) + p[ty.lo * w + tx.hi] * tx.w;
        const float bottom = p[ty.hi * w + tx.lo] * (1 - tx.w) + p[ty.hi * w + tx.hi] * tx.w;
        out[(c * H + y) * W + x] = top * (1 - ty.w) + bottom * ty.w;
      }
    }
  }
}

uint8_t to_byte(double v) {  // [-1, 1] -> 0..255 as to_uint8_image rounds
  const double u = std::clamp(v / 2.0 + 0.5, 0.0, 1.0);
  return static_cast<uint8_t>(std::nearbyint(u * 255.0));
}

// Encoder mean -> sampler latents, the way img2img starts (without the sampling noise: the map
// should see typical latents, not one draw).
Tensor encode_to_latents(Backend& be, Vae& vae, const Tensor& images) {
  OTTER_CHECK(vae.has_encoder(), "the VAE has no encoder: the latent->RGB preview map is fitted on encoded images");
  return vae.scale_latents(be, vae.encode(be, images).mean).contiguous();
}

// Solves the symmetric positive (semi)definite system A x = b (n <= 8) by Gaussian elimination with
// partial pivoting, in double; a tiny ridge keeps a degenerate channel from blowing up.
std::vector<double> solve(std::vector<double> A, std::vector<double> b, int n) {
  for (int i = 0; i < n; ++i) A[static_cast<size_t>(i * n + i)] += 1e-9 * (1 + A[static_cast<size_t>(i * n + i)]);
  for (int col = 0; col < n; ++col) {
    int pivot = col;
    for (int r = col + 1; r < n; ++r)
      if (std::fabs(A[static_cast<size_t>(r * n + col)]) > std::fabs(A[static_cast<size_t>(pivot * n + col)])) pivot = r;
    for (int k = 0; k < n; ++k) std::swap(A[static_cast<size_t>(col * n + k)], A[static_cast<size_t>(pivot * n + k)]);
    std::swap(b[static_cast<size_t>(col)], b[static_cast<size_t>(pivot)]);
    for (int r = col + 1; r < n; ++r) {
      const double f = A[static_cast<size_t>(r * n + col)] / A[static_cast<size_t>(col * n + col)];
      for (int k = col; k < n; ++k) A[static_cast<size_t>(r * n + k)] -= f * A[static_cast<size_t>(col * n + k)];
      b[static_cast<size_t>(r)] -= f * b[static_cast<size_t>(col)];
    }
  }
  std::vector<double> x(static_cast<size_t>(n));
  for (int r = n - 1; r >= 0; --r) {
    double s = b[static_cast<size_t>(r)];
    for (int k = r + 1; k < n; ++k) s -= A[static_cast<size_t>(r * n + k)] * x[static_cast<size_t>(k)];
    x[static_cast<size_t>(r)] = s / A[static_cast<size_t>(r * n + r)];
  }
  return x;
}

}  // namespace

std::array<double, 3> LatentRgbMap::apply(const float* latent_pixel, int64_t channel_stride) const {
  std::array<double, 3> rgb{};
  for (int k = 0; k < 3; ++k) {
    double s = bias[static_cast<size_t>(k)];
    for (int c = 0; c < channels; ++c)
      s += static_cast<double>(weights[static_cast<size_t>(k * channels + c)]) * latent_pixel[c * channel_stride];
    rgb[static_cast<size_t>(k)] = s;
  }
  return rgb;
}

Tensor LatentRgbMap::preview(const Tensor& latents_in, int scale) const {
  const Tensor z = latents_in.contiguous();
  OTTER_CHECK(z.rank() == 3 && z.dim(0) == channels, "latent preview: latents ", z.shape().str(), " are not [",
              channels, ", h, w]");
  OTTER_CHECK(scale >= 1, "latent preview: scale ", scale, " < 1");
  const int64_t h = z.dim(1), w = z.dim(2);
  // Map at latent resolution (C multiply-adds per latent pixel), then upsample the RGB.
  std::vector<float> rgb(static_cast<size_t>(3 * h * w));
  for (int64_t i = 0; i < h * w; ++i) {
    const std::array<double, 3> v = apply(z.f32() + i, h * w);
    for (int k = 0; k < 3; ++k) rgb[static_cast<size_t>(k * h * w + i)] = static_cast<float>(v[static_cast<size_t>(k)]);
  }
  const int64_t H = h * scale, W = w * scale;
  std::vector<float> up(static_cast<size_t>(3 * H * W));
  upsample(rgb.data(), 3, h, w, scale, up.data());
  Tensor out = Tensor::empty(Shape{H, W, 3}, DType::U8);
  for (int64_t i = 0; i < H * W; ++i)
    for (int k = 0; k < 3; ++k) out.data<uint8_t>()[i * 3 + k] = to_byte(up[static_cast<size_t>(k * H * W + i)]);
  return out;
}

nlohmann::json LatentRgbMap::to_json() const {
  nlohmann::json rows = nlohmann::json::array();
  for (int k = 0; k < 3; ++k)
    rows.push_back(std::vector<float>(weights.begin() + k * channels, weights.begin() + (k + 1) * channels));
  return {{"channels", channels}, {"weights", rows}, {"bias", bias}};
}

LatentRgbMap LatentRgbMap::from_json(const nlohmann::json& j, const std::string& origin) {
  LatentRgbMap m;
  try {
    m.channels = j.at("channels").get<int>();
    OTTER_CHECK(m.channels >= 1 && m.channels <= 64, "channels ", m.channels, " is not in 1..64");
    const auto& rows = j.at("weights");
    OTTER_CHECK(rows.is_array() && rows.size() == 3, "weights must be 3 rows (R, G, B)");
    for (const auto& row : rows) {
      const auto v = row.get<std::vector<float>>();
      OTTER_CHECK(static_cast<int>(v.size()) == m.channels, "a weights row has ", v.size(), " values, not ", m.channels);
      m.weights.insert(m.weights.end(), v.begin(), v.end());
    }
    m.bias = j.at("bias").get<std::array<float, 3>>();
    for (float v : m.weights) OTTER_CHECK(std::isfinite(v), "a weight is not finite");
    for (float v : m.bias) OTTER_CHECK(std::isfinite(v), "a bias is not finite");
  } catch (const nlohmann::json::exception& e) {
    throw Error(cat(origin, ": not a latent->RGB map: ", e.what()));
  } catch (const Error& e) {
    throw Error(cat(origin, ": not a latent->RGB map: ", e.what()));
  }
  return m;
}

Tensor latent_rgb_fit_images(int count, int size, uint64_t seed) {
  OTTER_CHECK(count >= 1 && size >= 8, "fit images: ", count, " images of ", size, "²");
  Tensor out = Tensor::empty(Shape{count, 3, size, size}, DType::F32);
  uint64_t s = seed;
  const int64_t plane = static_cast<int64_t>(size) * size;
  for (int n = 0; n < count; ++n) {
    float* img = out.f32() + n * 3 * plane;
    // Background: a colour, or a gradient between two along a random direction.
    float a[3], b[3];
    for (int k = 0; k < 3; ++k) a[k] = unit(s), b[k] = unit(s);
    const bool gradient = unit(s) < 0.5f;
    const float angle = unit(s) * 6.2831853f, dx = std::cos(angle), dy = std::sin(angle);
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x) {
        const float t = gradient ? std::clamp(0.5f + ((x + 0.5f) / size - 0.5f) * dx + ((y + 0.5f) / size - 0.5f) * dy,
                                              0.0f, 1.0f)
                                 : 0.0f;
        for (int k = 0; k < 3; ++k) img[k * plane + y * size + x] = a[k] + (b[k] - a[k]) * t;
      }
    // One to three shapes.
    const int shapes = 1 + static_cast<int>(unit(s) * 3);
    for (int q = 0; q < shapes; ++q) {
      const int kind = static_cast<int>(unit(s) * 3);
      const float cx = unit(s), cy = unit(s), rx = 0.08f + 0.3f * unit(s), ry = 0.08f + 0.3f * unit(s);
      float colour[3];
      for (float& c : colour) c = unit(s);
      for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x) {
          const float u = ((x + 0.5f) / size - cx) / rx, v = ((y + 0.5f) / size - cy) / ry;
          const bool inside = kind == 0   ? u * u + v * v <= 1
                              : kind == 1 ? std::fabs(u) <= 1 && std::fabs(v) <= 1
                                          : v <= 1 && v >= -1 && std::fabs(u) <= (v + 1) / 2;  // triangle, apex up
          if (inside)
            for (int k = 0; k < 3; ++k) img[k * plane + y * size + x] = colour[k];
        }
    }
    for (int64_t i = 0; i < 3 * plane; ++i) img[i] = img[i] * 2 - 1;
  }
  return out;
}

LatentRgbMap fit_latent_rgb_map(Backend& be, Vae& vae, const Tensor& images) {
  const int C = vae.config().latent_channels, n = C + 1;
  const int scale = vae.config().downscale_factor();
  // Normal equations over every pixel: (XᵀX) w = Xᵀy, X = [upsampled latents, 1], y = decode.
  std::vector<double> xtx(static_cast<size_t>(n * n), 0.0), xty(static_cast<size_t>(n * 3), 0.0);
  for (int64_t first = 0; first < images.dim(0); first += kChunk) {
    const Tensor batch = images.slice(0, first, std::min(images.dim(0), first + kChunk)).contiguous();
    const Tensor latents = encode_to_latents(be, vae, batch);
    const Tensor decoded = vae.decode(be, latents).contiguous();
    const int64_t B = latents.dim(0), h = latents.dim(2), w = latents.dim(3), H = h * scale, W = w * scale;
    OTTER_CHECK(decoded.dim(2) == H && decoded.dim(3) == W, "latent preview fit: decode ", decoded.shape().str(),
                " is not ", scale, "x the latents ", latents.shape().str());
    std::vector<float> up(static_cast<size_t>(C * H * W));
    std::vector<double> x(static_cast<size_t>(n));
    for (int64_t b = 0; b < B; ++b) {
      upsample(latents.f32() + b * C * h * w, C, h, w, scale, up.data());
      const float* y = decoded.f32() + b * 3 * H * W;
      for (int64_t i = 0; i < H * W; ++i) {
        for (int c = 0; c < C; ++c) x[static_cast<size_t>(c)] = up[static_cast<size_t>(c * H * W + i)];
        x[static_cast<size_t>(C)] = 1.0;
        for (int r = 0; r < n; ++r)
          for (int k = 0; k < n; ++k) xtx[static_cast<size_t>(r * n + k)] += x[static_cast<size_t>(r)] * x[static_cast<size_t>(k)];
        for (int k = 0; k < 3; ++k) {
          const double target = std::clamp(static_cast<double>(y[k * H * W + i]), -1.0, 1.0);
          for (int r = 0; r < n; ++r) xty[static_cast<size_t>(k * n + r)] += x[static_cast<size_t>(r)] * target;
        }
      }
    }
  }
  LatentRgbMap m;
  m.channels = C;
  m.weights.resize(static_cast<size_t>(3 * C));
  for (int k = 0; k < 3; ++k) {
    const std::vector<double> sol = solve(xtx, std::vector<double>(xty.begin() + k * n, xty.begin() + (k + 1) * n), n);
    for (int c = 0; c < C; ++c) m.weights[static_cast<size_t>(k * C + c)] = static_cast<float>(sol[static_cast<size_t>(c)]);
    m.bias[static_cast<size_t>(k)] = static_cast<float>(sol[static_cast<size_t>(C)]);
  }
  return m;
}

LatentRgbError latent_rgb_error(Backend& be, Vae& vae, const LatentRgbMap& map, const Tensor& images) {
  const int scale = vae.config().downscale_factor();
  std::vector<uint32_t> histogram(256, 0);
  double sum = 0;
  uint64_t count = 0;
  for (int64_t first = 0; first < images.dim(0); first += kChunk) {
    const Tensor batch = images.slice(0, first, std::min(images.dim(0), first + kChunk)).contiguous();
    const Tensor latents = encode_to_latents(be, vae, batch);
    const Tensor decoded = vae.decode(be, latents).contiguous();
    const int64_t B = latents.dim(0), C = latents.dim(1), h = latents.dim(2), w = latents.dim(3);
    const int64_t H = h * scale, W = w * scale;
    for (int64_t b = 0; b < B; ++b) {
      const Tensor z = latents.slice(0, b, b + 1).reshape(Shape{C, h, w});
      const Tensor p = map.preview(z, scale);
      const float* y = decoded.f32() + b * 3 * H * W;
      for (int64_t i = 0; i < H * W; ++i)
        for (int k = 0; k < 3; ++k) {
          const int d = std::abs(static_cast<int>(p.data<uint8_t>()[i * 3 + k]) - static_cast<int>(to_byte(y[k * H * W + i])));
          sum += d;
          ++histogram[static_cast<size_t>(d)];
          ++count;
        }
    }
  }
  LatentRgbError e;
  e.images = static_cast<int>(images.dim(0));
  e.size = static_cast<int>(images.dim(3));
  e.mean_abs = count ? sum / static_cast<double>(count) : 0.0;
  uint64_t seen = 0;
  for (int d = 0; d < 256; ++d) {
    seen += histogram[static_cast<size_t>(d)];
    if (static_cast<double>(seen) >= 0.99 * static_cast<double>(count)) {
      e.p99_abs = d;
      break;
    }
  }
  return e;
}

}  // namespace otter
