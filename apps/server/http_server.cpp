#include "http_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstdlib>
#include <ctime>

#include <httplib.h>

#include "api_response.h"
#include "core/error.h"
#include "core/system_memory.h"
#include "io/base64.h"
#include "lab_api.h"
#include "model_checks.h"
#include "web_page.h"

namespace otter::serve {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

int port_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return -1;
}

// The connected socket a request came on (httplib 0.11 does not hand it to handlers): the one
// whose local and peer ports are the request's. -1 if not found.
int find_peer_socket(const httplib::Request& req) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || fd < 0) continue;
    sockaddr_storage peer{}, local{};
    socklen_t pl = sizeof peer, ll = sizeof local;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
    if (port_of(peer) == req.remote_port && port_of(local) == req.local_port) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(dir);
  return found;
}

// Whether the client closed its side (it went away: its request is abandoned).
bool peer_closed(int fd) {
  pollfd p{fd, static_cast<short>(POLLIN | POLLRDHUP), 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
  if (p.revents & POLLIN) {
    char c;
    return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
  }
  return false;
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

// Error bodies in each API's own shape.
json webui_error(const std::string& message, const std::string& field, const char* kind) {
  json j = {{"error", kind}, {"detail", message}, {"body", nullptr}, {"errors", message}};
  if (!field.empty()) j["field"] = field;
  return j;
}
json openai_error(const std::string& message, const std::string& field, const char* type) {
  return {{"error", {{"message", message}, {"type", type}, {"param", field.empty() ? json() : json(field)}, {"code", nullptr}}}};
}
json native_error(const std::string& message, const std::string& field) {
  json e = {{"message", message}};
  if (!field.empty()) e["field"] = field;
  return {{"error", e}};
}

enum class Api { WebUi, OpenAi, Native };
json error_body(Api api, const std::string& message, const std::string& field, int status) {
  switch (api) {
    case Api::WebUi: return webui_error(message, field, status == 429 ? "TooManyRequests" : status >= 500 ? "ServerError" : "BadRequest");
    case Api::OpenAi:
      return openai_error(message, field, status == 429 ? "rate_limit_exceeded" : status >= 500 ? "server_error" : "invalid_request_error");
    case Api::Native: return native_error(message, field);
  }
  return {};
}

// Runs `handle`, turning ApiError, QueueFull and otter::Error into the API's error responses.
template <class F>
void guarded(Api api, httplib::Response& res, F&& handle) {
  try {
    handle();
  } catch (const ApiError& e) {
    send_json(res, e.status, error_body(api, e.message, e.field, e.status));
  } catch (const QueueFull& q) {
    res.set_header("Retry-After", std::to_string(q.retry_after_seconds));
    send_json(res, 429, error_body(api, "the queue is full; retry later", "", 429));
  } catch (const Error& e) {
    send_json(res, 400, error_body(api, e.what(), "", 400));
  }
}

// Waits for a blocking request's job; cancels it if the client goes away.
JobSnapshot wait_for(GenerationJob& job, const httplib::Request& req) {
  const int fd = find_peer_socket(req);
  for (;;) {
    const JobSnapshot s = job.wait_finished(100ms);
    if (job.finished()) return s;
    if (fd >= 0 && peer_closed(fd)) {
      job.cancel();
      return job.wait_finished(std::chrono::hours(1));
    }
  }
}

std::string sse(const std::string& event, const json& data) { return "event: " + event + "\ndata: " + data.dump() + "\n\n"; }

}  // namespace

HttpServer::HttpServer(GenerationService& service, HttpOptions options)
    : service_(service), options_(std::move(options)), server_(std::make_unique<httplib::Server>()) {
  routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  server_->new_task_queue = [n = options_.threads] { return new httplib::ThreadPool(static_cast<size_t>(n)); };
  server_->set_payload_max_length(options_.limits.max_body);
  server_->set_read_timeout(30, 0);
  if (options_.port == 0) {
    port_ = server_->bind_to_any_port(options_.host);
    OTTER_CHECK(port_ > 0, "cannot listen on ", options_.host, " (any port)");
  } else {
    OTTER_CHECK(server_->bind_to_port(options_.host, options_.port), "cannot listen on ", options_.host, ":",
                options_.port, " (in use, or not an address of this machine); pick another with --port or --host");
    port_ = options_.port;
  }
  return port_;
}

void HttpServer::listen() { server_->listen_after_bind(); }

void HttpServer::stop() { server_->stop(); }

void HttpServer::routes() {
  httplib::Server& s = *server_;
  const auto authorised = [this](const httplib::Request& req) {
    if (options_.api_key.empty()) return true;
    return req.get_header_value("Authorization") == "Bearer " + options_.api_key;
  };
  s.set_pre_routing_handler([authorised](const httplib::Request& req, httplib::Response& res) {
    const bool api = req.path.rfind("/sdapi/", 0) == 0 || req.path.rfind("/v1/", 0) == 0 || req.path == "/metrics";
    if (api && !authorised(req)) {
      res.set_header("WWW-Authenticate", "Bearer");
      const Api kind = req.path.rfind("/sdapi/", 0) == 0 ? Api::WebUi : req.path.rfind("/v1/jobs", 0) == 0 ? Api::Native : Api::OpenAi;
      send_json(res, 401, error_body(kind, "this server needs an API key: send the header 'Authorization: Bearer KEY'", "", 401));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_json(res, 500, native_error(what, ""));
  });
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string message = res.status == 413   ? "the request body is too large"
                                : res.status == 404 ? "no route " + req.method + " " + req.path
                                : res.status == 405 ? "method not allowed"
                                                    : "error " + std::to_string(res.status);
    res.set_content(native_error(message, "").dump(), "application/json");
  });

  // ---- the web page, health, metrics ----
  s.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(web_page_html(), "text/html; charset=utf-8"); });
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const ServiceCounters c = service_.counters();
    json models = json::array();
    for (const ModelEntry& m : service_.models().list()) models.push_back({{"name", m.name}, {"loaded", m.loaded}});
    send_json(res, 200, {{"status", "ok"}, {"queue", c.queued}, {"running", c.running}, {"models", models}});
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    int loaded = 0;
    for (const ModelEntry& m : service_.models().list()) loaded += m.loaded;
    res.set_content(prometheus_text(service_.counters(), process_memory().resident_bytes, loaded),
                    "text/plain; version=0.0.4");
  });

  // ---- the webui's API ----
  // txt2img and img2img: the same blocking exchange, parsed by their own field rules.
  using WebUiParser = GenerationSpec (*)(const json&, const Limits&, const ModelCatalog&, const std::string&);
  const auto webui_generation = [this](WebUiParser parse) {
    return [this, parse](const httplib::Request& req, httplib::Response& res) {
      guarded(Api::WebUi, res, [&] {
        std::string model;
        {
          std::lock_guard lock(webui_mutex_);
          model = webui_model_;
        }
        const json body = parse_body(req.body);
        GenerationSpec spec = parse(body, options_.limits, service_.models(), model);
        check_against_model(spec,
                            *service_.models().acquire(spec.model.empty() ? service_.models().default_name() : spec.model),
                            {"width", "height", "sampler_name", "otter_guidance"});
        const auto job = service_.submit(spec);
        const JobSnapshot done = wait_for(*job, req);
        if (done.state != JobState::Succeeded)
          throw ApiError{done.state == JobState::Cancelled ? 499 : 500, done.error.empty() ? "cancelled" : done.error, ""};
        send_json(res, 200, webui_txt2img_response(*job, body));
      });
    };
  };
  s.Post("/sdapi/v1/txt2img", webui_generation(&parse_webui_txt2img));
  s.Post("/sdapi/v1/img2img", webui_generation(&parse_webui_img2img));
  s.Get("/sdapi/v1/samplers", [](const httplib::Request&, httplib::Response& res) { send_json(res, 200, webui_samplers()); });
  s.Get("/sdapi/v1/schedulers", [](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, json::array({{{"name", "automatic"}, {"label", "Automatic"}, {"aliases", nullptr}},
                                     {{"name", "karras"}, {"label", "Karras"}, {"aliases", nullptr}}}));
  });
  s.Get("/sdapi/v1/sd-models", [this](const httplib::Request&, httplib::Response& res) {
    json out = json::array();
    for (const ModelEntry& m : service_.models().list())
      out.push_back({{"title", m.name}, {"model_name", m.name}, {"hash", nullptr}, {"sha256", nullptr},
                     {"filename", m.path.string()}, {"config", nullptr}});
    send_json(res, 200, out);
  });
  s.Get("/sdapi/v1/loras", [this](const httplib::Request&, httplib::Response& res) {
    json out = json::array();
    for (const std::string& name : service_.models().lora_names())
      out.push_back({{"name", name}, {"alias", name}, {"path", service_.models().lora(name)->string()}, {"metadata", json::object()}});
    send_json(res, 200, out);
  });
  s.Get("/sdapi/v1/options", [this](const httplib::Request&, httplib::Response& res) {
    std::lock_guard lock(webui_mutex_);
    send_json(res, 200, {{"sd_model_checkpoint", webui_model_.empty() ? service_.models().default_name() : webui_model_},
                         {"CLIP_stop_at_last_layers", 1}, {"samples_format", "png"}});
  });
  s.Post("/sdapi/v1/options", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(Api::WebUi, res, [&] {
      const json body = parse_body(req.body);
      if (!body.is_object()) throw ApiError{400, "the request body must be a JSON object", ""};
      if (body.contains("sd_model_checkpoint")) {
        const json& v = body["sd_model_checkpoint"];
        if (!v.is_string()) throw ApiError{400, "'sd_model_checkpoint' must be a string", "sd_model_checkpoint"};
        const std::string name = v.get<std::string>();
        if (!service_.models().has(name))
          throw ApiError{400, cat("no model '", name, "'; see GET /sdapi/v1/sd-models"), "sd_model_checkpoint"};
        std::lock_guard lock(webui_mutex_);
        webui_model_ = name == service_.models().default_name() ? "" : name;
      }
      send_json(res, 200, nullptr);
    });
  });
  s.Get("/sdapi/v1/progress", [this](const httplib::Request& req, httplib::Response& res) {
    const bool skip_image = req.get_param_value("skip_current_image") == "true";
    send_json(res, 200, webui_progress(service_.current("webui").get(), skip_image));
  });
  s.Post("/sdapi/v1/interrupt", [this](const httplib::Request&, httplib::Response& res) {
    service_.interrupt_all("webui");
    send_json(res, 200, json::object());
  });

  // ---- OpenAI's images API ----
  s.Post("/v1/images/generations", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(Api::OpenAi, res, [&] {
      const json body = parse_body(req.body);
      GenerationSpec spec = parse_openai_generation(body, options_.limits, service_.models());
      check_against_model(spec, *service_.models().acquire(spec.model.empty() ? service_.models().default_name() : spec.model),
                          {"size", "size", "sampler", "guidance"});
      const auto job = service_.submit(spec);
      const JobSnapshot done = wait_for(*job, req);
      if (done.state != JobState::Succeeded) throw ApiError{500, done.error.empty() ? "cancelled" : done.error, ""};
      send_json(res, 200, openai_response(*job));
    });
  });
  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json data = json::array();
    for (const ModelEntry& m : service_.models().list())
      data.push_back({{"id", m.name}, {"object", "model"}, {"created", 0}, {"owned_by", "otter"}});
    send_json(res, 200, {{"object", "list"}, {"data", data}});
  });

  // ---- otter lab over HTTP (the page's lab view) ----
  s.Post("/v1/lab", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(Api::Native, res, [&] {
      LabSpec spec = parse_lab_request(parse_body(req.body), options_.limits, service_.models());
      const auto model = service_.models().acquire(spec.model.empty() ? service_.models().default_name() : spec.model);
      json out;
      service_.with_device([&] { out = run_lab_request(*model, spec, service_.options().precision_name); });
      send_json(res, 200, out);
    });
  });

  // ---- otter's asynchronous jobs ----
  s.Post("/v1/jobs", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(Api::Native, res, [&] {
      GenerationSpec spec = parse_native_job(parse_body(req.body), options_.limits, service_.models());
      check_against_model(spec, *service_.models().acquire(spec.model.empty() ? service_.models().default_name() : spec.model),
                          {"width", "height", "sampler", "guidance"});
      const auto job = service_.submit(spec);
      send_json(res, 202, job_json(*job, false));
    });
  });
  const auto find = [this](const httplib::Request& req, httplib::Response& res) -> std::shared_ptr<GenerationJob> {
    auto job = service_.find(req.matches[1]);
    if (!job)
      send_json(res, 404, native_error(cat("no job '", std::string(req.matches[1]), "' (never made, or its results were dropped)"), "id"));
    return job;
  };
  s.Get(R"(/v1/jobs/([A-Za-z0-9_-]+))", [find](const httplib::Request& req, httplib::Response& res) {
    if (auto job = find(req, res)) send_json(res, 200, job_json(*job, req.get_param_value("images") != "0"));
  });
  s.Get(R"(/v1/jobs/([A-Za-z0-9_-]+)/images/(\d+)\.png)", [find](const httplib::Request& req, httplib::Response& res) {
    auto job = find(req, res);
    if (!job) return;
    const std::vector<JobImage> images = job->images();
    const size_t k = std::strtoul(std::string(req.matches[2]).c_str(), nullptr, 10);
    if (k >= images.size()) return send_json(res, 404, native_error(cat("job ", job->id(), " has ", images.size(), " images"), "index"));
    res.set_content(std::string(images[k].png.begin(), images[k].png.end()), "image/png");
  });
  s.Delete(R"(/v1/jobs/([A-Za-z0-9_-]+))", [find](const httplib::Request& req, httplib::Response& res) {
    auto job = find(req, res);
    if (!job) return;
    if (!job->finished()) job->cancel();
    send_json(res, 200, job_json(*job, false));
  });
  s.Get(R"(/v1/jobs/([A-Za-z0-9_-]+)/events)", [find](const httplib::Request& req, httplib::Response& res) {
    auto job = find(req, res);
    if (!job) return;
    res.set_header("Cache-Control", "no-cache");
    auto version = std::make_shared<uint64_t>(0);
    auto last_step = std::make_shared<int>(-1);
    res.set_chunked_content_provider("text/event-stream", [job, version, last_step](size_t, httplib::DataSink& sink) {
      const JobSnapshot snap = job->wait_change(*version, 1000ms);
      if (!sink.is_writable()) return false;  // the client went away (the job goes on: it is asynchronous)
      if (snap.version == *version && !job->finished()) {
        const std::string keepalive = ": waiting\n\n";
        return sink.write(keepalive.data(), keepalive.size());
      }
      *version = snap.version;
      std::string out;
      // A client that connects late still hears the job start and its latest step.
      if (snap.state != JobState::Queued && *last_step < 0 && snap.steps > 0) {
        *last_step = 0;
        out += sse("running", {{"id", job->id()}, {"state", "running"}, {"steps", snap.steps}, {"model", snap.model},
                               {"sampler", snap.sampler}, {"width", snap.width}, {"height", snap.height}});
      }
      if (snap.step > *last_step && *last_step >= 0) {
        *last_step = snap.step;
        json p = {{"id", job->id()},           {"state", job_state_name(snap.state)}, {"step", snap.step},
                  {"steps", snap.steps},       {"progress", snap.progress},           {"eta_seconds", snap.eta_seconds}};
        const std::vector<uint8_t> preview = job->preview_png();
        if (!preview.empty()) p["preview"] = "data:image/png;base64," + base64_encode(preview);
        out += sse("progress", p);
      }
      if (job->finished()) {
        const JobSnapshot end = job->snapshot();
        out += sse(end.state == JobState::Succeeded ? "done" : end.state == JobState::Cancelled ? "cancelled" : "failed",
                   job_json(*job, false));
        sink.write(out.data(), out.size());
        sink.done();
        return true;
      }
      return out.empty() || sink.write(out.data(), out.size());
    });
  });
}

}  // namespace otter::serve
