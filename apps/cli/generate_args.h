#pragma once
// `otter generate`'s options, and reading them back from a PNG it wrote (`--from IMAGE.png`).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace otter::cli {

struct GenerateArgs {
  std::string model;
  std::vector<std::string> prompts;
  std::vector<std::string> negatives;
  std::string cfg_scale = "7.5";
  std::string cfg_schedule;
  std::string guidance;  // a guider recipe instead of classic CFG
  float rescale = 0.0f;
  std::string cfg_batch = "batched";
  int steps = 20;
  std::string sampler;
  double eta = 0.0;
  int64_t seed = 0;  // -1: a random seed (recorded in the PNG, as the webui does)
  int width = 0, height = 0;
  int images = 1;
  std::string output = "out.png";
  std::string save_latents;
  bool quiet = false;
  int threads = 0;
  std::string precision = "auto";
  std::vector<std::string> config;
  std::string prediction;
  std::string variant;
  std::string tokenizer;
  std::string long_prompt = "truncate";
  int clip_skip = 1;
  std::string emphasis = "original";  // the webui's emphasis mode: original (weights, mean restored) or none
  std::string rng = "cpu";
  bool vae_tile = false;
  double vae_memory_limit = 2.0;
  double memory_limit = 0;  // GB; 0 = what the system and cgroup leave
  int max_batch = 0;        // images per turn; 0 = as the memory plan decides
  std::string init_image;   // image to image: the starting picture
  double strength = 0.75;   // how much of the schedule runs on it, (0, 1]
  bool resize = false;      // resample the picture to -W x -H instead of refusing another size
  std::string mask;         // inpainting: white = repaint
  double mask_blur = 4.0;   // the overlay's Gaussian, in pixels
  bool mask_invert = false; // repaint the black part instead
  std::vector<std::string> loras;  // --lora FILE[:WEIGHT], repeatable
  bool lora_lenient = false;
  bool lora_unmerged = false;
  std::string from;         // --from: a PNG whose parameters are the defaults
  // The image of a batch a --from image was (its noise is that row of the batch's draws).
  int64_t noise_batch_rows = 0, noise_first_row = 0;
};

// Fills every option the command line did not give (`given(name)`: was --name given?) from the
// webui parameters of a.from: prompt, negative prompt, steps, sampler, scale or schedule, rescale,
// guidance recipe, seed (and batch position), size, eta, clip skip, long-prompt mode, VAE tiling,
// precision, and the model when it is the bundled one. Throws, naming the fix, when the PNG has no
// parameters or names a model otter cannot find by itself.
void apply_png_parameters(GenerateArgs& a, const std::function<bool(const std::string&)>& given);


}  // namespace otter::cli
