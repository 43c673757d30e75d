#include "io/lora.h"

#include <charconv>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/number_text.h"
#include "io/ldm_key_map.h"
#include "io/safetensors.h"

namespace otter {
namespace {

std::string underscored(std::string s) {
  for (char& c : s)
    if (c == '.') c = '_';
  return s;
}

// The parts of one layer while the file is read.
struct Pending {
  std::string component, module;
  Tensor down, up;
  std::optional<double> alpha;
};

Tensor owned_f32(const SafetensorsFile& f, const std::string& key) { return f.tensor(key).to(DType::F32).contiguous().clone(); }

// diffusers' older attention-processor names inside a PEFT-style module name.
std::string plain_module(std::string module, const std::string& component) {
  static const std::pair<const char*, const char*> kProcessor[] = {
      {".processor.to_q_lora", ".to_q"}, {".processor.to_k_lora", ".to_k"}, {".processor.to_v_lora", ".to_v"},
      {".processor.to_out_lora", ".to_out.0"}, {".to_q_lora", ".to_q"}, {".to_k_lora", ".to_k"},
      {".to_v_lora", ".to_v"}, {".to_out_lora", ".to_out.0"}};
  for (const auto& [from, to] : kProcessor)
    if (module.ends_with(from)) {
      module = module.substr(0, module.size() - std::string_view(from).size()) + to;
      break;
    }
  if (component == "text_encoder") {  // the text encoder's projections under attention-processor names
    static const std::pair<const char*, const char*> kClip[] = {{"self_attn.to_q", "self_attn.q_proj"},
                                                                {"self_attn.to_k", "self_attn.k_proj"},
                                                                {"self_attn.to_v", "self_attn.v_proj"},
                                                                {"self_attn.to_out.0", "self_attn.out_proj"}};
    for (const auto& [from, to] : kClip)
      if (module.ends_with(from)) module = module.substr(0, module.size() - std::string_view(from).size()) + to;
  }
  if (module.ends_with(".lora_linear_layer")) module = module.substr(0, module.size() - 18);
  return module;
}

}  // namespace

const char* lora_format_name(LoraFormat f) { return f == LoraFormat::Kohya ? "kohya/webui" : "diffusers/PEFT"; }

bool is_lora_file(const std::filesystem::path& path) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  const std::vector<std::string> names = f.names();
  if (names.empty()) return false;
  for (const std::string& n : names)
    if (!(n.starts_with("lora_unet_") || n.starts_with("lora_te") ||
          ((n.starts_with("unet.") || n.starts_with("text_encoder.")) && n.find("lora") != std::string::npos)))
      return false;
  return true;
}

LoraFile read_lora(const std::filesystem::path& path) {
  OTTER_CHECK(path.extension() != ".ckpt" && path.extension() != ".pt" && path.extension() != ".bin", path.string(),
              ": a pickle file; otter loads LoRAs from .safetensors only (loading a pickle can run arbitrary code). "
              "Convert it with a trusted tool first");
  const SafetensorsFile f = SafetensorsFile::open(path);
  LoraFile lora;
  lora.path = path;
  std::map<std::string, Pending> pending;  // by layer key
  bool kohya = false, peft = false;
  for (const std::string& key : f.names()) {
    std::string stem, part;
    for (const char* suffix : {".lora_down.weight", ".lora_up.weight", ".alpha", ".lora_A.weight", ".lora_B.weight",
                               ".lora.down.weight", ".lora.up.weight", ".down.weight", ".up.weight"}) {
      if (key.ends_with(suffix)) {
        stem = key.substr(0, key.size() - std::string_view(suffix).size());
        part = suffix;
        break;
      }
    }
    OTTER_CHECK(key.find("dora_scale") == std::string::npos && key.find("hada_") == std::string::npos &&
                    key.find("lokr_") == std::string::npos,
                path.string(), ": tensor '", key, "' is from a LyCORIS/DoRA variant (LoHa, LoKr, DoRA); otter applies "
                "plain LoRA (lora_down/lora_up or lora_A/lora_B) only");
    OTTER_CHECK(!stem.empty(), path.string(), ": tensor '", key, "' is not part of a LoRA layer (expected names ending "
                "in .lora_down.weight/.lora_up.weight/.alpha or .lora_A.weight/.lora_B.weight)");
    Pending& p = pending[stem];
    if (stem.starts_with("lora_unet_") || stem.starts_with("lora_te")) {
      kohya = true;
      if (stem.starts_with("lora_unet_")) {
        p.component = "unet";
        p.module = stem.substr(10);
      } else {
        OTTER_CHECK(!stem.starts_with("lora_te2_"), path.string(), ": '", key, "' is for SDXL's second text encoder; "
                    "otter runs SD 1.x and 2.x models (SDXL is on the roadmap)");
        p.component = "text_encoder";
        p.module = stem.substr(stem.starts_with("lora_te1_") ? 9 : 8);
      }
    } else if (stem.starts_with("unet.") || stem.starts_with("text_encoder.")) {
      peft = true;
      OTTER_CHECK(!stem.starts_with("text_encoder_2."), path.string(), ": '", key, "' is for SDXL's second text encoder");
      p.component = stem.starts_with("unet.") ? "unet" : "text_encoder";
      p.module = plain_module(stem.substr(p.component.size() + 1), p.component);
    } else {
      throw Error(cat(path.string(), ": tensor '", key, "' names no model part: kohya LoRAs start with lora_unet_ or "
                      "lora_te_, diffusers/PEFT ones with unet. or text_encoder."));
    }
    if (part == ".alpha") {
      const Tensor a = f.tensor(key).to(DType::F32).contiguous();
      OTTER_CHECK(a.numel() == 1, path.string(), ": '", key, "' holds ", a.numel(), " values; an alpha is one number");
      p.alpha = a.f32()[0];
    } else if (part == ".lora_down.weight" || part == ".lora_A.weight" || part == ".lora.down.weight" || part == ".down.weight") {
      p.down = owned_f32(f, key);
    } else {
      p.up = owned_f32(f, key);
    }
  }
  OTTER_CHECK(!(kohya && peft), path.string(), ": mixes kohya (lora_unet_…) and diffusers (unet.…) names");
  OTTER_CHECK(!pending.empty(), path.string(), ": no LoRA layers in the file");
  lora.format = kohya ? LoraFormat::Kohya : LoraFormat::Peft;
  for (auto& [stem, p] : pending) {
    OTTER_CHECK(p.down.defined() && p.up.defined(), path.string(), ": layer '", stem, "' has ",
                p.down.defined() ? "a down" : "an up", " matrix but no ", p.down.defined() ? "up" : "down", " matrix");
    OTTER_CHECK((p.down.rank() == 2 || p.down.rank() == 4) && p.up.rank() == p.down.rank(), path.string(), ": layer '",
                stem, "' has down ", p.down.shape().str(), " and up ", p.up.shape().str(),
                "; expected [rank, in] and [out, rank] (or their 4-D conv forms)");
    const int64_t rank = p.down.dim(0);
    OTTER_CHECK(p.up.dim(1) == rank && (p.up.rank() == 2 || (p.up.dim(2) == 1 && p.up.dim(3) == 1)), path.string(),
                ": layer '", stem, "': up ", p.up.shape().str(), " does not match down ", p.down.shape().str(),
                " (rank ", rank, ")");
    lora.layers.push_back({stem, p.component, p.module, p.down, p.up, rank, p.alpha.value_or(static_cast<double>(rank))});
  }
  return lora;
}

std::string describe_lora(const LoraFile& lora) {
  std::map<std::string, int> by_kind;
  std::set<int64_t> ranks;
  std::set<double> alphas;
  int64_t text_width = 0, context_width = 0;
  for (const LoraLayer& l : lora.layers) {
    by_kind[cat(l.component == "unet" ? "UNet" : "text encoder", l.down.rank() == 4 ? " conv" : " linear",
                l.down.rank() == 4 ? cat(" ", l.down.dim(2), "x", l.down.dim(3)) : std::string())]++;
    ranks.insert(l.rank);
    alphas.insert(l.alpha);
    const std::string& m = l.module;
    if (l.component == "text_encoder" && (m.ends_with("q_proj") || m.ends_with("self_attn_q_proj"))) text_width = l.down.dim(1);
    if (l.component == "unet" && (m.ends_with("attn2.to_k") || m.ends_with("attn2_to_k"))) context_width = l.down.dim(1);
  }
  std::ostringstream out;
  out << lora.path.string() << ": LoRA, " << lora_format_name(lora.format) << " layout, " << lora.layers.size()
      << " layers\n";
  for (const auto& [kind, n] : by_kind) out << "  " << kind << ": " << n << "\n";
  const auto list = [](const auto& set) {
    std::string s;
    for (const auto& v : set) s += (s.empty() ? "" : ", ") + shortest_text(static_cast<double>(v));
    return s;
  };
  out << "  rank: " << list(ranks) << "\n  alpha: " << list(alphas)
      << (lora.format == LoraFormat::Peft ? " (none in the file: alpha = rank, a scale of 1)" : "") << "\n";
  const int64_t width = text_width ? text_width : context_width;
  out << "  fits: "
      << (width == 768    ? "SD 1.x (text width 768)"
          : width == 1024 ? "SD 2.x (text width 1024)"
          : width > 0     ? cat("a model with text width ", width, " (not SD 1.x's 768 or SD 2.x's 1024)")
                          : std::string("unknown (no text-encoder or cross-attention layer to tell by)"))
      << "\n";
  return out.str();
}

LoraSpec LoraSpec::parse(const std::string& text) {
  LoraSpec spec;
  spec.path = text;
  const size_t colon = text.rfind(':');
  if (colon != std::string::npos && colon + 1 < text.size()) {
    const std::string w = text.substr(colon + 1);
    double value = 0;
    const auto r = std::from_chars(w.data(), w.data() + w.size(), value);
    if (r.ec == std::errc() && r.ptr == w.data() + w.size()) {
      OTTER_CHECK(std::isfinite(value), "--lora ", text, ": the weight must be a finite number");
      spec.path = text.substr(0, colon);
      spec.weight = value;
    } else if (!std::filesystem::exists(text)) {
      throw Error(cat("--lora ", text, ": '", w, "' is not a weight; write FILE or FILE:WEIGHT, e.g. style.safetensors:0.8"));
    }
  }
  return spec;
}

std::string LoraSpec::to_string() const { return cat(path.filename().string(), ":", shortest_text(weight)); }

std::string describe_loras(const std::vector<LoraSpec>& loras) {
  std::string list;
  for (const LoraSpec& l : loras) list += (list.empty() ? "" : ", ") + l.to_string();
  return list;
}

namespace {

// One update of a weight: W += scale · up · down.
struct Update {
  Tensor down, up;  // f32
  double scale;
  std::string from;  // "file: layer", for messages
};

// The base weights with LoRA updates: merged into the weights get() returns, or (unmerged) left
// apart for the layers to add (lora_branches()).
class LoraSource : public TensorSource {
 public:
  LoraSource(std::shared_ptr<TensorSource> base, std::map<std::string, std::vector<Update>> updates, bool merge)
      : base_(std::move(base)), updates_(std::move(updates)), merge_(merge) {}
  bool has(const std::string& name) const override { return base_->has(name); }
  std::vector<std::string> names() const override { return base_->names(); }
  std::string origin() const override { return base_->origin() + " + LoRA"; }
  std::vector<LoraBranch> lora_branches(const std::string& name) const override {
    std::vector<LoraBranch> branches = base_->lora_branches(name);
    if (const auto it = updates_.find(name); !merge_ && it != updates_.end())
      for (const Update& u : it->second) branches.push_back({u.down, u.up, static_cast<float>(u.scale)});
    return branches;
  }
  Tensor get(const std::string& name) const override {
    const auto it = updates_.find(name);
    if (!merge_ || it == updates_.end()) return base_->get(name);
    const Tensor base = base_->get(name);
    Tensor w = base.to(DType::F32).contiguous().clone();
    const int64_t out = w.dim(0), in = w.numel() / out;
    std::vector<double> delta(static_cast<size_t>(w.numel()));
    for (const Update& u : it->second) {
      const int64_t rank = u.down.dim(0);
      std::fill(delta.begin(), delta.end(), 0.0);
      for (int64_t o = 0; o < out; ++o)
        for (int64_t r = 0; r < rank; ++r) {
          const double a = u.up.f32()[o * rank + r];
          const float* d = u.down.f32() + r * in;
          double* row = delta.data() + o * in;
          for (int64_t j = 0; j < in; ++j) row[j] += a * d[j];
        }
      for (int64_t i = 0; i < w.numel(); ++i) w.f32()[i] = static_cast<float>(w.f32()[i] + u.scale * delta[static_cast<size_t>(i)]);
    }
    // Kept in the checkpoint's own dtype, as diffusers' fuse_lora leaves an fp16 model fp16: the
    // merged copy stays resident beside the mapped file, so an f16 checkpoint's costs half of f32.
    return base.dtype() == DType::F32 ? w : w.to(base.dtype()).contiguous();
  }

 private:
  std::shared_ptr<TensorSource> base_;
  std::map<std::string, std::vector<Update>> updates_;
  bool merge_;
};

// The model's weight names of one component by their kohya spelling (dots as underscores), from
// its diffusers names and, for the UNet, the original checkpoints' names too.
std::map<std::string, std::string> kohya_index(const TensorSource& source, const nlohmann::json* unet_config) {
  std::map<std::string, std::string> index;
  for (const std::string& name : source.names())
    if (name.ends_with(".weight")) index[underscored(name.substr(0, name.size() - 7))] = name;
  if (unet_config)
    for (const auto& [diffusers_name, ref] : unet_ldm_key_map(*unet_config))
      if (diffusers_name.ends_with(".weight") && ref.key.starts_with(kLdmUnetPrefix) && ref.key.ends_with(".weight")) {
        const std::string ldm = ref.key.substr(kLdmUnetPrefix.size(), ref.key.size() - kLdmUnetPrefix.size() - 7);
        index.emplace(underscored(ldm), diffusers_name);
      }
  return index;
}

}  // namespace

void apply_loras(ModelFiles& model, const std::vector<LoraSpec>& loras, bool lenient, std::vector<std::string>& warnings,
                 bool unmerged) {
  if (loras.empty()) return;
  std::map<std::string, std::map<std::string, std::vector<Update>>> updates;  // component -> target -> updates
  std::optional<std::map<std::string, std::string>> unet_index, text_index;
  for (const LoraSpec& spec : loras) {
    const LoraFile lora = read_lora(spec.path);
    int applied = 0;
    std::vector<std::string> missing;
    for (const LoraLayer& layer : lora.layers) {
      const bool unet = layer.component == "unet";
      const TensorSource& source = unet ? *model.unet : *model.text_encoder;
      std::optional<std::string> target;
      if (lora.format == LoraFormat::Peft) {
        if (source.has(layer.module + ".weight")) target = layer.module + ".weight";
      } else {
        auto& index = unet ? unet_index : text_index;
        if (!index) index = kohya_index(source, unet ? &model.configs.unet : nullptr);
        if (const auto it = index->find(layer.module); it != index->end()) target = it->second;
      }
      if (!target) {
        missing.push_back(layer.key);
        continue;
      }
      const Tensor w = source.get(*target);
      const int64_t in = w.numel() / w.dim(0);
      const bool fits = layer.up.dim(0) == w.dim(0) && layer.down.numel() / layer.rank == in &&
                        (layer.down.rank() == 2 || w.rank() == 2 || (layer.down.dim(2) == w.dim(2) && layer.down.dim(3) == w.dim(3)));
      OTTER_CHECK(fits, spec.path.string(), ": layer '", layer.key, "' (down ", layer.down.shape().str(), ", up ",
                  layer.up.shape().str(), ") does not fit the model's ", layer.component, " tensor '", *target, "' ",
                  w.shape().str(), ": the LoRA was made for another model (see `otter info ", spec.path.string(),
                  "` for the family it fits)");
      updates[layer.component][*target].push_back(
          {layer.down, layer.up, spec.weight * layer.alpha / static_cast<double>(layer.rank), layer.key});
      ++applied;
    }
    if (!missing.empty()) {
      std::string list;
      for (size_t i = 0; i < missing.size() && i < 5; ++i) list += (i ? ", " : "") + missing[i];
      if (missing.size() > 5) list += cat(", … (", missing.size(), " in all)");
      const std::string what = cat(spec.path.string(), ": ", missing.size(), " of ", lora.layers.size(),
                                   " layers name tensors this model does not have: ", list);
      OTTER_CHECK(lenient && applied > 0, what,
                  lenient ? "; none applies: the LoRA is for another model"
                          : "; it was made for another model, or add --lora-lenient to apply the layers that do exist");
      warnings.push_back(what + " (skipped: --lora-lenient)");
    }
  }
  if (updates.count("unet")) model.unet = std::make_shared<LoraSource>(model.unet, std::move(updates["unet"]), !unmerged);
  if (updates.count("text_encoder"))
    model.text_encoder = std::make_shared<LoraSource>(model.text_encoder, std::move(updates["text_encoder"]), !unmerged);
}

}  // namespace otter
