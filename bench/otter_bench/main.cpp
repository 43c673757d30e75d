// otter-bench: how fast one batched CFG step runs, against what the machine can do.
//
// Builds the real SD 1.5 architecture from its configs with seeded random weights (no download),
// or loads a checkpoint, and measures text encoding, one UNet pass at batch 2 (a CFG step) and at
// batch 1 (a step without the uncond rows) at 256x256 and 512x512, VAE decode, the whole 20-step
// image, peak RSS, and GFLOP/s against the FLOPs of each pass (counted from the ops executed) and
// against the machine's large-matmul rate measured in the same run. Prints a table and JSON.
//
//   build/release/bench/otter-bench                      # f32 and bf16, 256 and 512
//   build/release/bench/otter-bench --sizes 256 --precisions bf16 --json out.json
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/cpu_features.h"
#include "core/cpu_identity.h"
#include "core/stopwatch.h"
#include "flop_counter.h"
#include "op_profiler.h"
#include "core/allocator.h"
#include "core/error.h"
#include "core/openmp_waits.h"
#include "core/system_memory.h"
#include "io/component_tensors.h"
#include "io/ldm_key_map.h"
#include "io/safetensors.h"
#include "io/safetensors_source.h"
#include "guidance/guidance_recipe.h"
#include "pipeline/memory_plan.h"
#include "pipeline/txt2img.h"
#include "pipeline/stable_diffusion.h"
#include "io/model_configs.h"
#include "models/clip_text_encoder.h"
#include "models/transformer_block_choice.h"
#include "models/unet.h"
#include "models/unet_config.h"
#include "models/vae.h"
#include "random_weights.h"

namespace otter::bench {
namespace {

long minor_page_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

// The best time of several runs, and the page faults per run: in steady state a step should touch
// only memory it has touched before (the allocator's cache), so that should be ~0.
struct Timing {
  double seconds = 1e300;
  double page_faults_per_run = 0;
};

template <class Fn>
Timing best_of(int runs, Fn&& fn) {
  Timing t;
  const long faults = minor_page_faults();
  for (int i = 0; i < runs; ++i) {
    const auto start = SteadyClock::now();
    fn();
    t.seconds = std::min(t.seconds, seconds_since(start));
  }
  t.page_faults_per_run = static_cast<double>(minor_page_faults() - faults) / std::max(1, runs);
  return t;
}

Tensor random_input(const Shape& s, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d;
  Tensor t = Tensor::empty(s, DType::F32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = d(gen);
  return t;
}

// The machine's practical limit: a large matmul on oneDNN at this precision.
double matmul_peak_gflops(Precision p, int threads) {
  auto be = make_cpu_backend(p, threads);
  const int64_t n = 2048;
  const Tensor x = random_input(Shape{n, n}, 1);
  LinearWeights w{random_input(Shape{n, n}, 2), Tensor()};
  be->linear(x, w);
  const double s = best_of(3, [&] { be->linear(x, w); }).seconds;
  return 2.0 * n * n * n / s * 1e-9;
}

// Multiplies every "share_of_peak" in j (at any depth) by factor.
void rescale_shares(nlohmann::json& j, double factor) {
  if (!j.is_object()) return;
  for (auto& [key, value] : j.items()) {
    if (key == "share_of_peak" && value.is_number())
      value = value.get<double>() * factor;
    else
      rescale_shares(value, factor);
  }
}

// Peak resident memory since the last reset_peak_rss() (VmHWM), in GB (1e9 bytes, as the memory
// plan and `otter generate` count them). Until 2026-12 this divided VmHWM's KiB by 1024², giving
// GiB labelled GB: 7.4 % under the plan's unit, so every figure read that much low beside its
// estimate.
double peak_rss_gb() {
  const ProcessMemory m = process_memory();
  if (m.peak_resident_bytes > 0) return m.peak_resident_bytes / 1e9;
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) * 1024.0 / 1e9;  // ru_maxrss is in KiB
}

// Starts a new peak: returns cached memory to the system, then resets VmHWM (Linux >= 4.0), so
// each precision's peak counts only what it holds — weights in the backend's layout,
// activations, the parts of the checkpoint still resident — not what an earlier phase left.
void reset_peak_rss() {
  Allocator::global().trim();
  std::ofstream("/proc/self/clear_refs") << "5";
}

struct Args {
  std::vector<int> sizes{256, 512};
  std::vector<std::string> precisions;
  std::string weights = "f16";
  std::string model;
  int runs = 2;
  int steps = 20;
  int threads = 0;
  std::string json_path;
  std::string family = "sd1";
  bool profile = false;
  bool profile_shapes = false;  // the profiles' rows per layer shape, not per op kind
  std::string pag_layers = "mid";  // the CFG+PAG step's perturbed layers
  std::string write_model;         // write the random-weight model as a diffusers folder, then stop
  int images = 1;  // images per CFG step (2x rows) and per decode
};

// One profiled run's time (a CFG step, a VAE decode) by op kind, largest first, as a table and JSON.
nlohmann::json print_profile(const std::string& pname, const std::string& size, const char* what, const OpProfiler& prof) {
  std::vector<std::pair<std::string, OpTime>> rows(prof.times().begin(), prof.times().end());
  double total = 0;
  for (const auto& [kind, t] : rows) total += t.seconds;
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  std::printf("%-5s %-5s   profile of one %s (%.3f s in ops):\n", pname.c_str(), size.c_str(), what, total);
  nlohmann::json j;
  for (const auto& [kind, t] : rows) {
    const double gflops = t.flops > 0 ? t.flops / t.seconds * 1e-9 : 0.0;
    std::printf("%-5s %-5s     %-34s %5lld calls %8.3f s %5.1f%%", pname.c_str(), size.c_str(), kind.c_str(),
                static_cast<long long>(t.calls), t.seconds, 100.0 * t.seconds / total);
    if (gflops > 0) std::printf(" %8.1f GFLOP/s", gflops);
    std::printf("\n");
    j[kind] = {{"seconds", t.seconds}, {"calls", t.calls}, {"gflop", t.flops * 1e-9}, {"gflops", gflops}};
  }
  return j;
}

// Random weights written to safetensors files and opened again (mmap), so the benchmark loads and
// pages them exactly as it would a downloaded checkpoint. Removed when the benchmark ends.
class RandomCheckpoint {
 public:
  RandomCheckpoint(const ModelConfigs& configs, DType storage)
      : dir_(std::filesystem::temp_directory_path() / cat("otter-bench-", getpid())) {
    std::filesystem::create_directories(dir_);
    write("text_encoder", text_encoder_tensor_specs(configs.text_encoder), storage, 1);
    write("unet", unet_tensor_specs(configs.unet), storage, 2);
    write("vae", vae_tensor_specs(configs.vae), storage, 3);
  }
  ~RandomCheckpoint() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::filesystem::path file(const std::string& component) const { return dir_ / (component + ".safetensors"); }

 private:
  void write(const std::string& component, const std::vector<TensorSpec>& specs, DType storage, uint32_t seed) {
    RandomWeights w(specs, storage, seed, "random " + component);
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const std::string& n : w.names()) tensors.emplace_back(n, w.get(n));
    write_safetensors(file(component), tensors);
  }
  std::filesystem::path dir_;
};

// The random-weight model as a diffusers folder that `otter generate -m DIR` loads (the same seeds
// as the benchmark's): what the CLI runs at full size without a downloaded checkpoint.
void write_random_model(const ModelConfigs& configs, DType storage, const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  const auto component = [&](const std::string& name, const std::string& file, const nlohmann::json& config,
                             const std::vector<TensorSpec>& specs, uint32_t seed) {
    fs::create_directories(dir / name);
    std::ofstream(dir / name / "config.json") << config.dump(2) << "\n";
    RandomWeights w(specs, storage, seed, "random " + name);
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const std::string& n : w.names()) tensors.emplace_back(n, w.get(n));
    write_safetensors(dir / name / file, tensors);
  };
  component("text_encoder", "model.safetensors", configs.text_encoder, text_encoder_tensor_specs(configs.text_encoder), 1);
  component("unet", "diffusion_pytorch_model.safetensors", configs.unet, unet_tensor_specs(configs.unet), 2);
  component("vae", "diffusion_pytorch_model.safetensors", configs.vae, vae_tensor_specs(configs.vae), 3);
  fs::create_directories(dir / "scheduler");
  std::ofstream(dir / "scheduler" / "scheduler_config.json") << configs.scheduler.dump(2) << "\n";
  std::ofstream(dir / "model_index.json")
      << nlohmann::json{{"_class_name", "StableDiffusionPipeline"},
                        {"text_encoder", {"transformers", "CLIPTextModel"}},
                        {"unet", {"diffusers", "UNet2DConditionModel"}},
                        {"vae", {"diffusers", "AutoencoderKL"}},
                        {"scheduler", {"diffusers", configs.scheduler.value("_class_name", "PNDMScheduler")}}}
             .dump(2)
      << "\n";
}

// The same random-weight model (SD 1.x) as one original-layout .safetensors, named and shaped as
// SD 1.5's released checkpoint (the VAE's mid-block attention as 1x1 convolutions): the file
// stable-diffusion.cpp, the webui and otter all load, so bench/peers runs every engine on the
// same weights. The names come from otter's own LDM tables, read in reverse.
void write_random_single_file(const ModelConfigs& configs, DType storage, const std::filesystem::path& file) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  const auto component = [&](const LdmKeyMap& map, const std::vector<TensorSpec>& specs, uint32_t seed,
                             const std::string& name) {
    RandomWeights w(specs, storage, seed, "random " + name);
    for (const std::string& n : w.names()) {
      const auto it = map.find(n);
      OTTER_CHECK(it != map.end() && it->second.row_begin < 0, "no original-layout name for ", name, " tensor '", n,
                  "' (single files are written for SD 1.x only)");
      Tensor t = w.get(n);
      const std::string& key = it->second.key;
      if (key.find(".mid.attn_1.") != std::string::npos && t.rank() == 2)
        t = t.reshape(Shape{t.dim(0), t.dim(1), 1, 1});
      tensors.emplace_back(key, t);
    }
  };
  component(clip_ldm_key_map(configs.text_encoder, std::string(kLdmClipPrefix), true),
            text_encoder_tensor_specs(configs.text_encoder), 1, "text_encoder");
  component(unet_ldm_key_map(configs.unet), unet_tensor_specs(configs.unet), 2, "unet");
  component(vae_ldm_key_map(configs.vae), vae_tensor_specs(configs.vae), 3, "vae");
  write_safetensors(file, tensors);
}

// What every guidance method costs in UNet rows for one image of `steps` steps with the model's
// scheduler: counted from each method's needs at every evaluation (pipeline/txt2img.h), the same
// count the CLI logs after a run. Adaptive skipping depends on the predictions: an upper bound.
nlohmann::json guidance_rows(const ModelConfigs& configs, int steps) {
  const SchedulerConfig scheduler = SchedulerConfig::from_json(configs.scheduler);
  const std::pair<const char*, const char*> methods[] = {
      {"classic CFG 7.5", ""},
      {"cfg", "cfg"},
      {"cfg_zero_star", "cfg_zero_star"},
      {"apg", "apg"},
      {"tcfg", "tcfg"},
      {"mambo", "mambo"},
      {"apg_mix", "apg_mix"},
      {"fdg", "fdg"},
      {"cfg_pp (ddim)", "cfg_pp"},
      {"pag", "pag"},
      {"PerturbedAttentionGuidance", "PerturbedAttentionGuidance"},
      {"seg", "seg"},
      {"slg", "slg"},
      {"autoguidance", "autoguidance"},
      {"cfg;interval=0.28..5.42", "cfg;interval=0.28..5.42"},
      {"cfg;adaptive=0.99 (at most)", "cfg;adaptive=0.99"},
      {"composable, 2 parts", "AND"},
  };
  nlohmann::json out = nlohmann::json::object();
  std::printf("guidance rows per image, %d steps (%s):\n", steps, default_sampler_for(scheduler).c_str());
  for (const auto& [label, recipe] : methods) {
    Txt2ImgRequest r;
    r.steps = steps;
    const std::string m = recipe;
    if (m == "AND") r.prompts = {"a AND b"};
    else if (!m.empty()) r.guider = GuidanceRecipe::parse(m);
    if (m == "cfg_pp") r.sampler = "ddim";
    const PlannedRows rows = planned_unet_rows(r, scheduler);
    const uint64_t cfg_rows = 2 * static_cast<uint64_t>(rows.evaluations);
    std::printf("  %-30s %5llu rows (%llu perturbed, %+lld vs CFG)%s\n", label, static_cast<unsigned long long>(rows.rows),
                static_cast<unsigned long long>(rows.perturbed),
                static_cast<long long>(rows.rows) - static_cast<long long>(cfg_rows), rows.exact ? "" : ", an upper bound");
    out[label] = {{"rows", rows.rows}, {"perturbed", rows.perturbed}, {"saved_vs_cfg", static_cast<int64_t>(cfg_rows) -
                                                                                         static_cast<int64_t>(rows.rows)},
                  {"exact", rows.exact}};
  }
  return out;
}

// The three networks the benchmark runs, from random weights or from --model.
struct Networks {
  std::unique_ptr<StableDiffusion> sd;
  std::unique_ptr<SafetensorsSource> te_src, unet_src, vae_src;
  std::unique_ptr<Weights> unet_w, vae_w;
  std::unique_ptr<ClipTextEncoder> te_own;
  std::unique_ptr<UNet> unet_own;
  std::unique_ptr<Vae> vae_own;
  nlohmann::json unet_config;

  ClipTextEncoder& te() { return sd ? sd->text_encoder() : *te_own; }
  UNet& unet() { return sd ? sd->unet() : *unet_own; }
  Vae& vae() { return sd ? sd->vae() : *vae_own; }
};

Networks open_networks(const Args& a, const ModelConfigs& configs, const RandomCheckpoint* random, Backend& counter) {
  Networks n;
  if (!a.model.empty()) {
    n.sd = StableDiffusion::load(a.model, counter);
    n.unet_config = n.sd->files().configs.unet;
    return n;
  }
  n.unet_config = configs.unet;
  n.te_src = std::make_unique<SafetensorsSource>(random->file("text_encoder"));
  n.unet_src = std::make_unique<SafetensorsSource>(random->file("unet"));
  n.vae_src = std::make_unique<SafetensorsSource>(random->file("vae"));
  n.unet_w = std::make_unique<Weights>(*n.unet_src);
  n.vae_w = std::make_unique<Weights>(*n.vae_src);
  n.te_own = std::make_unique<ClipTextEncoder>(ClipTextConfig::from_json(configs.text_encoder), *n.te_src, counter);
  n.unet_own = std::make_unique<UNet>(UNetConfig::from_json(configs.unet), *n.unet_w);
  n.vae_own = std::make_unique<Vae>(VaeConfig::from_json(configs.vae), *n.vae_w);
  return n;
}

}  // namespace

int run(const Args& a) {
  const int threads = a.threads > 0 ? a.threads : physical_cores();
  omp_set_num_threads(threads);
  const DType storage = a.weights == "f32" ? DType::F32 : a.weights == "bf16" ? DType::BF16 : DType::F16;
  const ModelConfigs configs = builtin_configs(a.family == "sd2" ? ModelFamily::SD2 : ModelFamily::SD1);
  nlohmann::json report;
  report["model"] = !a.model.empty()  ? a.model
                    : a.family == "sd2" ? "SD 2.1 architecture, random weights"
                                        : "SD 1.5 architecture, random weights";
  report["weights_storage"] = a.model.empty() ? a.weights : "as in the checkpoint";
  report["threads"] = omp_get_max_threads();
  report["images"] = a.images;
  const PrecisionProbe& probe = precision_probe();
  const CpuIdentity& cpu = cpu_identity();
  report["cpu"] = {{"description", describe_cpu()},
                   {"vendor", cpu.vendor},
                   {"brand", cpu.brand},
                   {"core", cpu_microarchitecture(cpu)},
                   {"family", cpu.family},
                   {"model", cpu.model},
                   {"stepping", cpu.stepping},
                   {"avx2", cpu_features().avx2},
                   {"f16c", cpu_features().f16c},
                   {"avx512f", cpu_features().avx512f},
                   {"avx512_bf16", cpu_features().avx512_bf16},
                   {"avx512_fp16", cpu_features().avx512fp16},
                   {"probe_f32_fma_gflops_per_core", probe.f32_gflops},
                   {"probe_bf16_dot_gflops_per_core", probe.bf16_gflops},
                   {"probe_f16_fma_gflops_per_core", probe.f16_gflops},
                   {"auto_precision", precision_name(probe.preferred)}};

  if (!a.write_model.empty()) {
    if (std::filesystem::path(a.write_model).extension() == ".safetensors") {
      OTTER_CHECK(a.family == "sd1", "--write-model FILE.safetensors writes SD 1.x single files only (use a folder for sd2)");
      write_random_single_file(configs, storage, a.write_model);
      std::printf("wrote an original-layout single file with the random weights to %s\n", a.write_model.c_str());
    } else {
      write_random_model(configs, storage, a.write_model);
      std::printf("wrote a diffusers folder with the random weights to %s\n", a.write_model.c_str());
    }
    return 0;
  }
  report["guidance_rows"] = guidance_rows(configs, a.steps);
  std::unique_ptr<RandomCheckpoint> random;
  if (a.model.empty()) {
    const auto t_build = SteadyClock::now();
    random = std::make_unique<RandomCheckpoint>(configs, storage);
    report["seconds_build_random_weights"] = seconds_since(t_build);
  }

  std::vector<std::string> precisions = a.precisions;
  if (precisions.empty()) {
    precisions = {"f32"};
    if (cpu_features().avx512f) precisions.push_back("bf16");
    if (cpu_features().avx512fp16) precisions.push_back("f16");
  }
  std::printf("cpu: %s\n", describe_cpu().c_str());
  std::printf("threads %d; auto precision here: %s (%s)\n", omp_get_max_threads(), precision_name(probe.preferred),
              probe.reason.c_str());
  std::printf("one core: f32 FMA %.0f GFLOP/s, bf16 dot %.0f, f16 FMA %.0f (0 = not available)\n", probe.f32_gflops,
              probe.bf16_gflops, probe.f16_gflops);
  std::printf("%-5s %-5s %-28s %10s %10s %9s %8s\n", "prec", "size", "phase", "seconds", "GFLOP", "GFLOP/s", "of peak");
  for (const std::string& pname : precisions) {
    const Precision p = parse_precision(pname);
    const double peak = matmul_peak_gflops(p, threads);
    reset_peak_rss();
    auto be = make_cpu_backend(p, threads);
    FlopCounter counter(*be);
    nlohmann::json prec;
    prec["matmul_peak_gflops"] = peak;
    std::printf("%-5s %-5s %-28s %10s %10s %9.1f %8s\n", pname.c_str(), "-", "matmul 2048^3 (machine peak)", "-", "-",
                peak, "100%");
    auto row = [&](const std::string& size, const std::string& phase, const Timing& t, double flops) {
      const double s = t.seconds, gflops = flops / s * 1e-9;
      std::printf("%-5s %-5s %-28s %10.3f %10.1f %9.1f %7.0f%%\n", pname.c_str(), size.c_str(), phase.c_str(), s,
                  flops * 1e-9, gflops, 100.0 * gflops / peak);
      return nlohmann::json{{"seconds", s},
                            {"gflop", flops * 1e-9},
                            {"gflops", gflops},
                            {"share_of_peak", gflops / peak},
                            {"page_faults_per_run", t.page_faults_per_run}};
    };

    {
      // The memory plan's estimate starts from what the process holds before the networks open.
      const double base_bytes = process_memory().resident_bytes;
      Networks nets = open_networks(a, configs, random.get(), counter);
      const ModelConfigs& net_configs = nets.sd ? nets.sd->files().configs : configs;
      const int64_t context_dim = [&] {
        const auto& c = nets.unet_config.at("cross_attention_dim");
        return c.is_array() ? c.at(0).get<int64_t>() : c.get<int64_t>();
      }();
      const int64_t latent_channels = nets.unet_config.value("in_channels", 4);

      // Text: the prompt and the negative prompt, one batch of 2 x 77 tokens.
      std::vector<int> ids(2 * 77, 49407);
      ids[0] = ids[77] = 49406;
      nets.te().encode(ids, 2);  // prepares weights
      counter.reset();
      nets.te().encode(ids, 2);
      const double te_flops = counter.flops();
      const Timing te = best_of(a.runs + 1, [&] { nets.te().encode(ids, 2); });
      prec["text_encoding"] = row("-", "text encoding (2x77 tokens)", te, te_flops);
      // As `otter generate` does (Txt2ImgRequest::release_weights_when_done): the text encoder's
      // prepared weights go once the prompts are encoded, the UNet's before the decode (and are
      // prepared again by the next size's first step).
      nets.te().release_prepared_weights();
      be->release_cached_memory();  // as the pipeline does: out of the allocator's cache too

      for (int size : a.sizes) {
        const int64_t l = size / 8;
        const std::string sz = std::to_string(size);
        nlohmann::json at;
        const int64_t n = a.images;
        const Tensor ctx2 = random_input(Shape{2 * n, 77, context_dim}, 5);
        const Tensor ctx1 = ctx2.slice(0, n, 2 * n).contiguous();
        const Tensor x2 = random_input(Shape{2 * n, latent_channels, l, l}, 6), x1 = x2.slice(0, 0, n).contiguous();
        MemoryPlanRequest plan_request;
        plan_request.width = plan_request.height = size;
        plan_request.images = n;
        plan_request.precision = p;
        plan_request.threads = threads;
        plan_request.vae_tiling = false;  // the benchmark decodes whole
        plan_request.base_bytes = base_bytes;
        plan_request.releases_weights = true;
        const MemoryPlan plan = plan_memory(net_configs, plan_request);
        // Each size's peaks count what a run of that size holds, not the previous size's.
        reset_peak_rss();
        Allocator::global().reset_peak();
        const auto first = SteadyClock::now();
        counter.reset();
        nets.unet().forward(counter, x2, 500.0f, ctx2);  // first call: primitives created, weights reordered
        at["first_cfg_step_seconds"] = seconds_since(first);
        const double flops2 = counter.flops();
        const Timing b2 = best_of(a.runs, [&] { nets.unet().forward(*be, x2, 500.0f, ctx2); });
        at["cfg_step_batch2"] = row(sz, "UNet step, CFG (batch 2)", b2, flops2);
        counter.reset();
        nets.unet().forward(counter, x1, 500.0f, ctx1);
        const double flops1 = counter.flops();
        const Timing b1 = best_of(a.runs, [&] { nets.unet().forward(*be, x1, 500.0f, ctx1); });
        at["step_batch1"] = row(sz, "UNet step, no uncond (b1)", b1, flops1);
        at["unet_gflop_per_image_pass"] = flops1 * 1e-9;
        // What a CFG image holds through its denoising: read before the CFG+PAG step below, whose
        // 3 rows hold more activations than the plan's 2 (it counted 0.44 GB more at 512x512).
        const double peak_unet = peak_rss_gb();
        {
          // CFG + PAG: one call on [uncond, cond, perturbed] rows, identity self-attention in the
          // perturbed rows of the chosen layers (what `--guidance pag` runs each step).
          const std::array<Tensor, 2> x_parts{x2, x1}, ctx_parts{ctx2, ctx1};
          const Tensor x3 = be->concat(x_parts, 0), ctx3 = be->concat(ctx_parts, 0);
          RowPerturbation pag;
          pag.kind = BlockPerturbation::IdentitySelfAttention;
          pag.blocks = choose_transformer_blocks(nets.unet().transformer_block_names(), a.pag_layers);
          pag.row_begin = 2 * n, pag.row_end = 3 * n;
          counter.reset();
          nets.unet().forward(counter, x3, 500.0f, ctx3, {}, &pag);
          const double flops3 = counter.flops();
          const Timing b3 = best_of(a.runs, [&] { nets.unet().forward(*be, x3, 500.0f, ctx3, {}, &pag); });
          at["cfg_pag_step_batch3"] = row(sz, "UNet step, CFG+PAG (batch 3)", b3, flops3);
          at["cfg_pag_over_cfg_seconds"] = b3.seconds / b2.seconds;
          at["pag_layers"] = a.pag_layers;
          std::printf("%-5s %-5s %-28s %10.3f x the CFG step (PAG layers %s)\n", pname.c_str(), sz.c_str(),
                      "CFG+PAG / CFG step time", b3.seconds / b2.seconds, a.pag_layers.c_str());
        }
        at["batch2_over_batch1_gflops"] = (flops2 / b2.seconds) / (flops1 / b1.seconds);

        if (a.profile) {
          OpProfiler prof(*be, a.profile_shapes);
          nets.unet().forward(prof, x2, 500.0f, ctx2);
          at["profile_cfg_step"] = print_profile(pname, sz, "CFG step", prof);
        }
        at["peak_rss_gb_unet"] = peak_unet;
        // Tensors live at once (activations, scratch and the weights prepared during the first pass);
        // RSS above weights + this is memory the allocator holds in its cache.
        at["allocator_peak_live_gb_unet"] = static_cast<double>(Allocator::global().stats().peak_live_bytes) / 1e9;
        std::printf("%-5s %-5s %-28s %10.2f GB (memory plan: %.2f GB, %+.1f%%)\n", pname.c_str(), sz.c_str(),
                    "peak RSS through the UNet", peak_unet, plan.unet_phase() / 1e9,
                    100.0 * (plan.unet_phase() / 1e9 / peak_unet - 1));
        at["estimated_peak_gb_unet"] = plan.unet_phase() / 1e9;
        nets.unet().release_prepared_weights();
        be->release_cached_memory();  // as the pipeline does between denoising and decoding
        reset_peak_rss();  // the decode's own peak; the whole image's is the larger of the two
        const Tensor z = random_input(Shape{n, latent_channels, l, l}, 7);
        Allocator::global().reset_peak();
        counter.reset();
        nets.vae().decode(counter, z);
        const double vflops = counter.flops();
        // Each decode starts as the pipeline's does: after the denoising loop's cached blocks went
        // back to the system, so its activations are fresh pages (a warm cache from the previous
        // run would time a decode no image ever gets).
        const Timing vae = best_of(std::max(1, a.runs - 1), [&] {
          be->release_cached_memory();
          nets.vae().decode(*be, z);
        });
        at["vae_decode"] = row(sz, "VAE decode", vae, vflops);
        if (a.profile) {
          OpProfiler prof(*be, /*shapes=*/true);
          be->release_cached_memory();
          nets.vae().decode(prof, z);
          at["profile_vae_decode"] = print_profile(pname, sz, "VAE decode", prof);
        }
        at["allocator_peak_live_gb_vae"] = static_cast<double>(Allocator::global().stats().peak_live_bytes) / 1e9;
        const double whole = te.seconds + a.steps * b2.seconds + vae.seconds;
        at["whole_image_seconds"] = whole;
        at["whole_image_steps"] = a.steps;
        at["peak_rss_gb"] = std::max(peak_unet, peak_rss_gb());
        Allocator::global().trim();
        std::printf("%-5s %-5s %-28s %10.3f   (text + %d CFG steps + decode)\n", pname.c_str(), sz.c_str(),
                    "whole image", whole, a.steps);
        std::printf("%-5s %-5s %-28s %10.2f GB (memory plan: %.2f GB, %+.1f%%)\n", pname.c_str(), sz.c_str(),
                    "peak RSS through decode", at["peak_rss_gb"].get<double>(), plan.peak() / 1e9,
                    100.0 * (plan.peak() / 1e9 / at["peak_rss_gb"].get<double>() - 1));
        at["estimated_peak_gb"] = plan.peak() / 1e9;
        at["memory_plan"] = plan.describe();
        prec[sz] = at;
      }
    }
    // The peak again, after the networks: on a shared machine one short reading can come out low
    // and flatter every share. The higher reading is the one the shares are measured against.
    const double peak_end = matmul_peak_gflops(p, threads);
    prec["matmul_peak_gflops_readings"] = {peak, peak_end};
    std::printf("%-5s %-5s %-28s %10s %10s %9.1f\n", pname.c_str(), "-", "matmul 2048^3 again (end)", "-", "-", peak_end);
    if (peak_end > peak) {
      prec["matmul_peak_gflops"] = peak_end;
      rescale_shares(prec, peak / peak_end);
      std::printf("%-5s %-5s shares of peak against the higher reading:", pname.c_str(), "-");
      for (int size : a.sizes)
        if (const std::string sz = std::to_string(size); prec.contains(sz))
          std::printf("  %s: CFG step %.0f%%, VAE decode %.0f%%", sz.c_str(),
                      100 * prec[sz]["cfg_step_batch2"]["share_of_peak"].get<double>(),
                      100 * prec[sz]["vae_decode"]["share_of_peak"].get<double>());
      std::printf("\n");
    }
    report[pname] = prec;
  }
  const std::string text = report.dump(2);
  if (!a.json_path.empty()) {
    std::ofstream(a.json_path) << text << "\n";
  } else {
    std::printf("%s\n", text.c_str());
  }
  return 0;
}

}  // namespace otter::bench

int main(int argc, char** argv) {
  // The OpenMP waits `otter` runs with, so that its steps and these figures compare.
  otter::restart_with_short_openmp_spins(argv);
  CLI::App app{"otter-bench: SD 1.5 UNet/VAE/text-encoder speed on this CPU, with random weights"};
  otter::bench::Args a;
  app.add_option("--sizes", a.sizes, "Image sizes (square)")->capture_default_str();
  app.add_option("--precisions", a.precisions, "f32, bf16, f16 and/or auto (default: every one this CPU has)");
  app.add_option("--weights", a.weights, "Weight storage: f32, f16 or bf16")->capture_default_str();
  app.add_option("--runs", a.runs, "Timed runs per measurement (the best is reported)")->capture_default_str();
  app.add_option("--steps", a.steps, "Steps for the whole-image figure")->capture_default_str();
  app.add_option("--family", a.family, "sd1 (SD 1.5) or sd2 (SD 2.1)")->capture_default_str();
  app.add_option("--model", a.model, "Benchmark this checkpoint (diffusers folder or single file) instead of random weights");
  app.add_option("--threads", a.threads, "Threads (default: one per physical core)");
  app.add_option("--json", a.json_path, "Write the JSON report here instead of stdout");
  app.add_option("--write-model", a.write_model,
                 "Write the random-weight model (--family, --weights) for otter generate -m, then stop: a diffusers "
                 "folder, or with a .safetensors name one original-layout single file (SD 1.x; what "
                 "stable-diffusion.cpp loads)");
  app.add_option("--pag-layers", a.pag_layers, "Layers of the CFG+PAG step (names or a pattern, as --guidance pag's)")
      ->capture_default_str();
  app.add_flag("--profile", a.profile, "Also time one CFG step and one VAE decode op by op (where the time goes)");
  app.add_flag("--profile-shapes", a.profile_shapes,
               "--profile with the CFG step's convolutions and linear layers per shape (channels and size, rows "
               "x inputs -> outputs), not per kind");
  app.add_option("--images", a.images, "Images per step: the CFG step runs 2x this many rows, the decode this many")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  bool describe_cpu_only = false;
  app.add_flag("--describe-cpu", describe_cpu_only,
               "Print this CPU (brand, core, CPUID family/model/stepping, the vector extensions otter uses) and stop");
  CLI11_PARSE(app, argc, argv);
  if (describe_cpu_only) {
    std::printf("%s\n", otter::describe_cpu().c_str());
    return 0;
  }
  if (a.profile_shapes) a.profile = true;
  try {
    return otter::bench::run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "otter-bench: error: %s\n", e.what());
    return 1;
  }
}
