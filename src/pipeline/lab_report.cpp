#include "pipeline/lab_report.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <sstream>

#include "core/error.h"
#include "io/base64.h"
#include "io/png.h"

namespace otter {
namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

// An [H, W, 3] image as an <img> with a data: URI, shown at `width` CSS pixels (nearest-neighbour).
std::string img(const Tensor& rgb, int width, const std::string& alt) {
  const Tensor t = rgb.contiguous();
  const std::vector<uint8_t> png =
      encode_png(t.data<uint8_t>(), static_cast<int>(t.dim(1)), static_cast<int>(t.dim(0)), {});
  return "<img src=\"data:image/png;base64," + base64_encode(png) + "\" width=\"" + std::to_string(width) + "\" alt=\"" +
         escape(alt) + "\">";
}

std::string number(double v) {
  std::ostringstream s;
  s.precision(4);
  s << v;
  return s.str();
}

// A line plot of several series over the steps, as inline SVG.
std::string svg_plot(const std::string& title, const std::vector<std::pair<std::string, std::vector<double>>>& series,
                     bool unit_range) {
  const int W = 360, H = 180, L = 44, R = 10, T = 22, B = 26;
  double lo = unit_range ? -1 : 0, hi = unit_range ? 1 : 0;
  size_t n = 0;
  for (const auto& [name, v] : series) {
    n = std::max(n, v.size());
    for (double x : v)
      if (std::isfinite(x)) lo = std::min(lo, x), hi = std::max(hi, x);
  }
  if (hi <= lo) hi = lo + 1;
  const auto px = [&](size_t i) { return L + (n > 1 ? static_cast<double>(i) / static_cast<double>(n - 1) : 0.5) * (W - L - R); };
  const auto py = [&](double v) { return T + (1 - (v - lo) / (hi - lo)) * (H - T - B); };
  static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(W) + "\" height=\"" +
                  std::to_string(H) + "\" role=\"img\"><title>" + escape(title) + "</title>";
  s += "<rect x=\"" + std::to_string(L) + "\" y=\"" + std::to_string(T) + "\" width=\"" + std::to_string(W - L - R) +
       "\" height=\"" + std::to_string(H - T - B) + "\" fill=\"none\" stroke=\"#999\"/>";
  s += "<text x=\"" + std::to_string(L) + "\" y=\"14\" font-size=\"12\">" + escape(title) + "</text>";
  s += "<text x=\"4\" y=\"" + number(py(hi) + 4) + "\" font-size=\"10\">" + number(hi) + "</text>";
  s += "<text x=\"4\" y=\"" + number(py(lo)) + "\" font-size=\"10\">" + number(lo) + "</text>";
  s += "<text x=\"" + number(W / 2.0 - 20) + "\" y=\"" + std::to_string(H - 6) + "\" font-size=\"10\">step 1 … " +
       std::to_string(n) + "</text>";
  for (size_t k = 0; k < series.size(); ++k) {
    std::string points;
    for (size_t i = 0; i < series[k].second.size(); ++i)
      points += number(px(i)) + "," + number(py(series[k].second[i])) + " ";
    s += "<polyline fill=\"none\" stroke=\"" + std::string(colours[k % 5]) + "\" stroke-width=\"1.5\" points=\"" +
         points + "\"/>";
    s += "<text x=\"" + number(W - R - 90) + "\" y=\"" + std::to_string(T + 12 + 12 * static_cast<int>(k)) +
         "\" font-size=\"10\" fill=\"" + colours[k % 5] + "\">" + escape(series[k].first) + "</text>";
  }
  return s + "</svg>";
}

}  // namespace

std::string lab_image_name(const std::string& experiment) {
  std::string out;
  for (char c : experiment) out.push_back(c == ' ' ? '_' : c);
  return out + ".png";
}

double max_delta_norm(const LabExperimentResult& r) {
  double max_delta = 0;
  for (const LabStep& s : r.steps)
    for (int64_t i = 0; i < s.delta.dim(1) * s.delta.dim(2); ++i) {
      double q = 0;
      for (int64_t c = 0; c < s.delta.dim(0); ++c) {
        const double v = s.delta.f32()[c * s.delta.dim(1) * s.delta.dim(2) + i];
        q += v * v;
      }
      max_delta = std::max(max_delta, std::sqrt(q));
    }
  return max_delta;
}

Tensor delta_heat_map(const Tensor& delta_in, double max_norm) {
  const Tensor d = delta_in.contiguous();
  const int64_t C = d.dim(0), h = d.dim(1), w = d.dim(2);
  Tensor out = Tensor::empty(Shape{h, w, 3}, DType::U8);
  for (int64_t i = 0; i < h * w; ++i) {
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += static_cast<double>(d.f32()[c * h * w + i]) * d.f32()[c * h * w + i];
    const double t = max_norm > 0 ? std::min(1.0, std::sqrt(s) / max_norm) : 0.0;
    // black -> red -> yellow -> white
    const double r = std::min(1.0, 3 * t), g = std::clamp(3 * t - 1, 0.0, 1.0), b = std::clamp(3 * t - 2, 0.0, 1.0);
    out.data<uint8_t>()[i * 3 + 0] = static_cast<uint8_t>(std::lround(255 * r));
    out.data<uint8_t>()[i * 3 + 1] = static_cast<uint8_t>(std::lround(255 * g));
    out.data<uint8_t>()[i * 3 + 2] = static_cast<uint8_t>(std::lround(255 * b));
  }
  return out;
}

std::string lab_report_html(const LabReportInput& in) {
  const LabRequest& rq = *in.request;
  const LabResult& rs = *in.result;
  OTTER_CHECK(rs.experiments.size() == rq.experiments.size() && in.decoded.size() == rq.experiments.size() &&
                  in.previews.size() == rq.experiments.size(),
              "lab report: results for ", rs.experiments.size(), " experiments, ", rq.experiments.size(), " asked");
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>otter lab: " +
                  escape(rq.prompt) + "</title>\n<style>\n"
                  "body{font-family:sans-serif;margin:1.5em;max-width:1100px}img{image-rendering:pixelated}"
                  "figure{display:inline-block;margin:0 .6em .8em 0;vertical-align:top;width:140px}"
                  "figcaption{font-size:11px}table{border-collapse:collapse}td,th{padding:2px 4px;font-size:11px}"
                  "section{border-top:1px solid #ccc;margin-top:1.2em}.caption{max-width:760px}"
                  ".strip{overflow-x:auto}.note{font-size:12px;color:#444;margin:.3em 0}\n</style>\n</head>\n<body>\n";
  h += "<h1>otter lab</h1>\n<p>Prompt <b>" + escape(rq.prompt) + "</b>; seed " + std::to_string(rq.seed) + ", " +
       std::to_string(rq.steps) + " steps (" + escape(rs.sampler) + "), " + std::to_string(rq.width) + "x" +
       std::to_string(rq.height) + ", model " + escape(in.model_name) + ", " + escape(in.precision) + ". Every experiment "
       "starts from the same noise; each step was one UNet call over all of them (" + std::to_string(rs.unet_rows) +
       " rows, " + std::to_string(rs.rows_asked - rs.unet_rows) + " shared rows computed once).</p>\n";
  h += "<p>At each step the model predicts the noise twice: for the prompt (cond, c) and for a baseline "
       "(uncond, u: the empty prompt, or a negative prompt). Guidance combines them; the difference "
       "&Delta; = c &minus; u is the direction the prompt adds.</p>\n<div id=\"grid\">\n";
  for (size_t e = 0; e < rq.experiments.size(); ++e) {
    const LabExperiment& x = rq.experiments[e];
    h += "<figure>" + img(rs.experiments[e].image.squeeze_front(), 128, x.name) + "<figcaption><b>" + escape(x.name) +
         "</b><br>" + escape(x.generate_options()) + "</figcaption></figure>\n";
  }
  h += "</div>\n";
  for (size_t e = 0; e < rq.experiments.size(); ++e) {
    const LabExperiment& x = rq.experiments[e];
    const LabExperimentResult& r = rs.experiments[e];
    h += "<section id=\"" + lab_image_name(x.name).substr(0, lab_image_name(x.name).size() - 4) + "\">\n<h2>" +
         escape(x.name) + "</h2>\n<p class=\"caption\">" + escape(x.caption) + " (<code>otter generate " +
         escape(x.generate_options()) + "</code>)</p>\n";
    const double max_delta = max_delta_norm(r);
    const char* rows[] = {"x&#770;0 (cond)", "x&#770;0 (uncond)", "&Delta; = c &minus; u", "x&#770;0 (guided)"};
    // A filmstrip: the four rows over `steps`, pictures from `pictures` (empty: Δ only).
    const auto filmstrip = [&](const std::vector<int>& steps, const std::vector<std::array<Tensor, 3>>& pictures,
                               int width) {
      std::string t = "<div class=\"strip\"><table>\n<tr><th></th>";
      for (int k : steps) t += "<th>" + std::to_string(k + 1) + "</th>";
      t += "</tr>\n";
      for (int row = 0; row < 4; ++row) {
        if (row != 2 && pictures.empty()) continue;
        t += std::string("<tr><th>") + rows[row] + "</th>";
        for (size_t j = 0; j < steps.size(); ++j) {
          const Tensor picture = row == 2 ? delta_heat_map(r.steps[static_cast<size_t>(steps[j])].delta, max_delta)
                                          : pictures[j][row == 3 ? 2 : static_cast<size_t>(row)];
          t += "<td>" + img(picture, width, rows[row]) + "</td>";
        }
        t += "</tr>\n";
      }
      return t + "</table></div>\n";
    };
    std::vector<int> every;
    for (size_t k = 0; k < r.steps.size(); ++k) every.push_back(static_cast<int>(k));
    h += "<p class=\"note\">Every step" + std::string(in.previews[e].empty() ? " (&Delta; only: previews off)" : ", " + escape(in.preview_note)) +
         ":</p>\n" + filmstrip(every, in.previews[e], 40);
    if (!in.decoded[e].empty())
      h += "<p class=\"note\">Decoded by the VAE at the steps above each column:</p>\n" +
           filmstrip(in.decode_steps, in.decoded[e], 72);
    std::vector<double> nc, nu, nd, ng, cos, scale;
    for (const LabStep& s : r.steps) {
      nc.push_back(s.norm_cond), nu.push_back(s.norm_uncond), nd.push_back(s.norm_delta), ng.push_back(s.norm_guided);
      cos.push_back(s.cosine), scale.push_back(s.scale);
    }
    h += svg_plot("norms of the predictions", {{"cond", nc}, {"uncond", nu}, {"delta", nd}, {"guided", ng}}, false);
    h += svg_plot("cos(cond, uncond) and the scale / 20", {{"cosine", cos}, {"scale/20", [&] {
                                                                             std::vector<double> v;
                                                                             for (double q : scale) v.push_back(q / 20);
                                                                             return v;
                                                                           }()}},
                  true);
    h += "\n</section>\n";
  }
  h += "<p>Made by <code>otter lab</code>; every number is in lab.json beside this file.</p>\n</body>\n</html>\n";
  return h;
}

}  // namespace otter
