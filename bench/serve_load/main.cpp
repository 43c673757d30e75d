// serve_load: N concurrent clients, each sending its requests one after another to an otter serve
// on loopback, bounded in count and time; prints images/s and latency percentiles (p50, p95) as
// one JSON line. bench/serve_load/table.sh runs it over 1, 2, 4, 8 clients with batching on and
// off and writes the README's table.
//
//   serve_load --url http://127.0.0.1:7860 --clients 4 --requests 3 --body '{"prompt":"x","steps":20}'
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

int main(int argc, char** argv) {
  CLI::App app("Load test for otter serve (loopback only)");
  std::string url = "http://127.0.0.1:7860", body = R"({"prompt":"a red circle on a blue background","steps":20})";
  std::string path = "/sdapi/v1/txt2img";
  int clients = 1, requests = 4;
  double max_seconds = 600;
  app.add_option("--url", url, "Server (must be on 127.0.0.1 or localhost)")->capture_default_str();
  app.add_option("--path", path, "Route")->capture_default_str();
  app.add_option("--clients", clients, "Concurrent clients")->check(CLI::Range(1, 256));
  app.add_option("--requests", requests, "Requests per client")->check(CLI::Range(1, 10000));
  app.add_option("--body", body, "JSON body; each request's seed is set to its number")->capture_default_str();
  app.add_option("--max-seconds", max_seconds, "Stop sending after this long")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (url.rfind("http://127.0.0.1:", 0) != 0 && url.rfind("http://localhost:", 0) != 0) {
    std::fprintf(stderr, "serve_load: %s is not a loopback URL; this tool loads local servers only\n", url.c_str());
    return 2;
  }
  const nlohmann::json base = nlohmann::json::parse(body);
  std::mutex m;
  std::vector<double> latencies;
  std::atomic<int> failures{0}, images{0}, next_seed{1};
  const auto t0 = std::chrono::steady_clock::now();
  const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&] {
      httplib::Client client(url);
      client.set_read_timeout(static_cast<time_t>(max_seconds) + 60, 0);
      for (int r = 0; r < requests && elapsed() < max_seconds; ++r) {
        nlohmann::json b = base;
        b["seed"] = next_seed++;
        const auto start = std::chrono::steady_clock::now();
        auto res = client.Post(path.c_str(), b.dump(), "application/json");
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (!res || res->status != 200) {
          ++failures;
          continue;
        }
        const nlohmann::json out = nlohmann::json::parse(res->body);
        images += static_cast<int>(out.contains("images") ? out["images"].size() : out["data"].size());
        std::lock_guard lock(m);
        latencies.push_back(seconds);
      }
    });
  for (auto& t : threads) t.join();
  const double wall = elapsed();
  std::sort(latencies.begin(), latencies.end());
  const auto pct = [&](double p) {
    if (latencies.empty()) return 0.0;
    return latencies[std::min(latencies.size() - 1, static_cast<size_t>(p * static_cast<double>(latencies.size() - 1) + 0.5))];
  };
  const nlohmann::json report = {{"clients", clients},       {"requests", latencies.size()}, {"failures", failures.load()},
                                 {"images", images.load()},  {"seconds", wall},
                                 {"images_per_second", images / wall}, {"p50_seconds", pct(0.5)}, {"p95_seconds", pct(0.95)}};
  std::printf("%s\n", report.dump().c_str());
  return failures ? 1 : 0;
}
