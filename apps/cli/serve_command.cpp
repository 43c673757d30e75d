// `otter serve`: the webui's, OpenAI's and otter's own HTTP APIs and a web page, every request's
// UNet rows batched with the others' (apps/server/). Binds to loopback unless told otherwise;
// SIGTERM or SIGINT stops accepting, lets running jobs finish within --shutdown-seconds (then
// cancels them at their next step) and exits 0.
#include <csignal>
#include <atomic>
#include <iostream>
#include <thread>

#include "backend/backend.h"
#include "commands.h"
#include "core/error.h"
#include "generation_service.h"
#include "http_server.h"
#include "model_registry.h"
#include "pipeline/default_model.h"

namespace otter::cli {
namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop = true; }

struct ServeArgs {
  std::string model, models_dir, loras_dir, host = "127.0.0.1", api_key, precision = "auto";
  int port = 7860, max_loaded = 2, max_queue = 32, threads = 0, http_threads = 16;
  int64_t max_batch_rows = 16;
  bool no_batching = false, quiet = false;
  double keep_results = 600, shutdown_seconds = 30;
  serve::Limits limits;
  size_t max_body_kib = 1024;
};

void run_serve(const ServeArgs& a) {
  const Precision precision = parse_precision(a.precision);
  const std::filesystem::path default_model = a.model.empty() ? find_default_model() : std::filesystem::path(a.model);
  auto backend = make_cpu_backend(precision, a.threads);
  std::mutex device;
  serve::ModelRegistry models(default_model, a.models_dir.empty() ? std::nullopt : std::optional<std::filesystem::path>(a.models_dir),
                              a.max_loaded, *backend, device,
                              a.loras_dir.empty() ? std::nullopt : std::optional<std::filesystem::path>(a.loras_dir));
  // The default model loads now: a bad model fails here, not at the first request.
  const auto loaded = models.acquire(models.default_name());
  log(a.quiet, cat("otter: serve: loaded ", loaded->name, " (", backend->name(), ")",
                   loaded->preview ? "" : "; no latent->RGB preview map (its VAE has no encoder)"));
  serve::ServiceOptions options;
  options.max_queue = a.max_queue;
  options.max_batch_rows = a.max_batch_rows;
  options.batching = !a.no_batching;
  options.keep_results_seconds = a.keep_results;
  options.precision_name = precision_name(precision);
  serve::GenerationService service(models, *backend, device, options);
  serve::HttpOptions http;
  http.host = a.host;
  http.port = a.port;
  http.api_key = a.api_key;
  http.limits = a.limits;
  http.limits.max_body = a.max_body_kib * 1024;
  http.threads = a.http_threads;
  serve::HttpServer server(service, http);
  const int port = server.bind();

  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::thread watcher([&] {
    while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    log(a.quiet, "otter: serve: stopping: no new requests; running jobs finish or are cancelled");
    server.stop();
  });
  log(a.quiet, cat("otter: serve: listening on http://", a.host, ":", port, "/ (", options.batching ? "continuous batching up to " : "no batching, ",
                   options.batching ? std::to_string(a.max_batch_rows) + " UNet rows" : std::string("one job per UNet call"),
                   a.api_key.empty() ? "" : "; API key required", ")"));
  std::cout << "http://" << a.host << ":" << port << "/" << std::endl;
  server.listen();
  g_stop = true;
  watcher.join();
  service.shutdown(std::chrono::milliseconds(static_cast<int64_t>(a.shutdown_seconds * 1000)));
  log(a.quiet, "otter: serve: stopped");
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve the webui's, OpenAI's and otter's HTTP APIs and a web page, batching requests together");
  cmd->add_option("-m,--model", a->model, "The default model (default: the bundled otter-shapes)");
  cmd->add_option("--models", a->models_dir, "A folder of more models (diffusers folders, .safetensors files), each loaded on first use");
  cmd->add_option("--loras", a->loras_dir,
                  "A folder of LoRA .safetensors files that prompts name with <lora:NAME:WEIGHT> (the webui's syntax)");
  cmd->add_option("--max-loaded", a->max_loaded, "Models kept loaded at most (least recently used dropped first)")->capture_default_str()->check(CLI::Range(1, 64));
  cmd->add_option("--host", a->host, "Address to listen on (0.0.0.0: every interface)")->capture_default_str();
  cmd->add_option("--port", a->port, "Port (0: any free one; the URL is printed)")->capture_default_str()->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", a->api_key, "Require 'Authorization: Bearer KEY' on every API route (also read from $OTTER_API_KEY)")
      ->envname("OTTER_API_KEY");
  cmd->add_option("--max-batch-rows", a->max_batch_rows, "UNet rows of all running jobs together (jobs beyond it wait)")->capture_default_str()->check(CLI::Range(1, 4096));
  cmd->add_flag("--no-batching", a->no_batching, "Run every job's UNet calls alone (one after another), for comparison");
  cmd->add_option("--max-queue", a->max_queue, "Jobs waiting at most; more get 429 with Retry-After")->capture_default_str()->check(CLI::Range(0, 100000));
  cmd->add_option("--max-side", a->limits.max_side, "Largest width or height in pixels")->capture_default_str()->check(CLI::Range(8, 16384));
  cmd->add_option("--max-steps", a->limits.max_steps, "Most steps per request")->capture_default_str()->check(CLI::Range(1, 10000));
  cmd->add_option("--max-images", a->limits.max_images, "Most images per request (batch_size x n_iter, or n)")->capture_default_str()->check(CLI::Range(1, 4096));
  cmd->add_option("--max-body-kib", a->max_body_kib, "Largest request body in KiB (413 beyond)")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--keep-results", a->keep_results, "Seconds a finished job's results are kept for GET /v1/jobs/{id}")->capture_default_str();
  cmd->add_option("--shutdown-seconds", a->shutdown_seconds, "On SIGTERM, how long running jobs may take to finish before they are cancelled")->capture_default_str();
  cmd->add_option("--precision", a->precision, "f32, bf16, f16 or auto")->capture_default_str();
  cmd->add_option("--threads", a->threads, "CPU threads for the model")->check(CLI::Range(0, 1024));
  cmd->add_option("--http-threads", a->http_threads, "Connections served at once")->capture_default_str()->check(CLI::Range(2, 1024));
  cmd->add_flag("-q,--quiet", a->quiet, "No log on stderr");
  cmd->callback([a] { run_serve(*a); });
}

}  // namespace otter::cli
