// Every route of otter serve on a loopback port, against recorded requests and the response shapes
// of the APIs they follow (tests/server/recorded/*.json: the request a client sends, the keys and
// types the response must have): the webui's txt2img (its image is otter generate's PNG file, byte
// for byte), samplers, models, options, progress with its preview, interrupt; OpenAI's images and
// its error shape; otter's jobs with Server-Sent Events and cancellation; /health and /metrics;
// the API key; the limits (413, 400 naming the field, 429 with Retry-After); a client that goes
// away has its job cancelled; a flood of bad and good requests leaves memory bounded.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include <httplib.h>

#include "backend/backend.h"
#include "core/system_memory.h"
#include "http_server.h"
#include "io/base64.h"
#include "io/model_files.h"
#include "io/safetensors.h"
#include "io/png.h"
#include "pipeline/default_model.h"
#include "pipeline/image_output.h"

namespace otter::serve {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct Server {
  explicit Server(ServiceOptions o = {}, HttpOptions h = {}, std::optional<std::filesystem::path> loras = std::nullopt)
      : models(find_default_model(), std::nullopt, 1, *backend, device, std::move(loras)) {
    o.precision_name = "f32";
    service = std::make_unique<GenerationService>(models, *backend, device, o);
    h.port = 0;
    http = std::make_unique<HttpServer>(*service, h);
    port = http->bind();
    thread = std::thread([this] { http->listen(); });
  }
  ~Server() {
    http->stop();
    thread.join();
    service->shutdown(0ms);
  }
  httplib::Client client(const std::string& key = "") const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    if (!key.empty()) c.set_bearer_token_auth(key.c_str());
    return c;
  }
  std::unique_ptr<Backend> backend = make_cpu_backend(Precision::F32);
  std::mutex device;
  ModelRegistry models;
  std::unique_ptr<GenerationService> service;
  std::unique_ptr<HttpServer> http;
  int port = 0;
  std::thread thread;
};

json recorded(const std::string& name) {
  std::ifstream in(std::string(OTTER_SERVER_TEST_DIR) + "/recorded/" + name + ".json");
  EXPECT_TRUE(in.good()) << name;
  return json::parse(in);
}

// The response has every key of the recorded shape with the recorded JSON type (recursively for
// objects; the first element for arrays).
void expect_shape(const json& actual, const json& shape, const std::string& where = "$") {
  if (shape.is_string() && shape.get<std::string>().rfind("type:", 0) == 0) {
    const std::string type = shape.get<std::string>().substr(5);
    const std::string got = actual.is_number_integer() ? "integer" : actual.is_number() ? "number" : actual.type_name();
    if (type == "number") EXPECT_TRUE(actual.is_number()) << where << " is " << got;
    else if (type == "any") {
    } else EXPECT_EQ(got, type) << where;
    return;
  }
  if (shape.is_object()) {
    ASSERT_TRUE(actual.is_object()) << where << " is not an object: " << actual.dump().substr(0, 200);
    for (const auto& [k, v] : shape.items()) {
      ASSERT_TRUE(actual.contains(k)) << where << " has no '" << k << "': " << actual.dump().substr(0, 300);
      expect_shape(actual[k], v, where + "." + k);
    }
  } else if (shape.is_array()) {
    ASSERT_TRUE(actual.is_array()) << where;
    if (!shape.empty() && !actual.empty()) expect_shape(actual[0], shape[0], where + "[0]");
  }
}

// The bundled model's native image side (the size a request without one gets).
int native_size(Server& s) { return s.models.acquire(s.models.default_name())->native_size; }

std::vector<uint8_t> cli_png(Server& s, const Txt2ImgRequest& r_in) {
  auto m = s.models.acquire(s.models.default_name());
  Txt2ImgRequest r = r_in;
  if (r.width == 0) r.width = r.height = m->native_size;
  const Txt2ImgResult result = txt2img(*m->model, r);
  return encode_image_png(r, result, m->model->files().name, 0, {{"Precision", "f32"}});
}

TEST(Http, WebuiTxt2imgIsTheCliImageWithTheWebuisInfo) {
  Server s;
  const json rec = recorded("webui_txt2img");
  auto res = s.client().Post("/sdapi/v1/txt2img", rec["request"].dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json body = json::parse(res->body);
  expect_shape(body, rec["response_shape"]);
  const json info = json::parse(body["info"].get<std::string>());
  expect_shape(info, rec["info_shape"]);
  EXPECT_EQ(info["all_seeds"], json::array({1, 1}));
  EXPECT_EQ(info["sampler_name"], "Euler a");
  ASSERT_EQ(body["images"].size(), 2u);
  // Image 0 is what `otter generate -p … --seed 1 --steps 8 --cfg-scale 7 --sampler euler_a -b 2` writes first.
  Txt2ImgRequest r;
  r.prompts = {rec["request"]["prompt"]};
  r.width = r.height = 64;
  r.negative_prompts = {rec["request"]["negative_prompt"]};
  r.seed = 1;
  r.steps = 8;
  r.sampler = "euler_a";
  r.images_per_prompt = 2;
  r.guidance.schedule = GuidanceSchedule::constant(7.0f);
  const auto png = base64_decode(body["images"][0].get<std::string>());
  ASSERT_TRUE(png);
  EXPECT_EQ(*png, cli_png(s, r));
  EXPECT_NE(info["infotexts"][1].get<std::string>().find("Batch pos: 1"), std::string::npos);
}

TEST(Http, WebuiListsProgressInterruptAndOptions) {
  Server s;
  auto c = s.client();
  auto samplers = c.Get("/sdapi/v1/samplers");
  ASSERT_TRUE(samplers && samplers->status == 200);
  expect_shape(json::parse(samplers->body), recorded("webui_lists")["samplers_shape"]);
  bool has_euler_a = false;
  for (const auto& x : json::parse(samplers->body)) has_euler_a |= x["name"] == "Euler a";
  EXPECT_TRUE(has_euler_a);
  auto schedulers = c.Get("/sdapi/v1/schedulers");
  ASSERT_TRUE(schedulers && schedulers->status == 200);
  EXPECT_EQ(json::parse(schedulers->body)[1]["label"], "Karras");
  auto models = c.Get("/sdapi/v1/sd-models");
  ASSERT_TRUE(models && models->status == 200);
  expect_shape(json::parse(models->body), recorded("webui_lists")["sd_models_shape"]);
  EXPECT_EQ(json::parse(models->body)[0]["model_name"], "otter-shapes");
  auto options = c.Get("/sdapi/v1/options");
  ASSERT_TRUE(options && options->status == 200);
  EXPECT_EQ(json::parse(options->body)["sd_model_checkpoint"], "otter-shapes");
  auto bad = c.Post("/sdapi/v1/options", R"({"sd_model_checkpoint":"sd_xl_base"})", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(bad->body)["field"], "sd_model_checkpoint");
  auto ok = c.Post("/sdapi/v1/options", R"({"sd_model_checkpoint":"otter-shapes"})", "application/json");
  ASSERT_TRUE(ok && ok->status == 200);

  // A long request in the background; /progress sees it with a preview; /interrupt ends it early
  // with the image of the step reached.
  json request = {{"prompt", "a red circle"}, {"steps", 150}, {"seed", 3}};
  int long_status = 0;
  std::string long_body;
  std::thread t([&] {
    auto r = s.client().Post("/sdapi/v1/txt2img", request.dump(), "application/json");
    if (r) long_status = r->status, long_body = r->body;
  });
  json progress;
  for (int i = 0; i < 2000; ++i) {
    auto p = c.Get("/sdapi/v1/progress");
    ASSERT_TRUE(p && p->status == 200);
    progress = json::parse(p->body);
    if (progress["state"]["sampling_step"].get<int>() >= 2 && progress["current_image"].is_string()) break;
    std::this_thread::sleep_for(5ms);
  }
  expect_shape(progress, recorded("webui_lists")["progress_shape"]);
  EXPECT_GT(progress["progress"].get<double>(), 0.0);
  const auto preview = base64_decode(progress["current_image"].get<std::string>());
  ASSERT_TRUE(preview);
  EXPECT_EQ(decode_png(preview->data(), preview->size()).width, native_size(s));
  auto interrupt = c.Post("/sdapi/v1/interrupt", "", "application/json");
  ASSERT_TRUE(interrupt && interrupt->status == 200);
  t.join();
  ASSERT_EQ(long_status, 200) << long_body;
  const json body = json::parse(long_body);
  EXPECT_EQ(body["images"].size(), 1u);
  EXPECT_TRUE(json::parse(body["info"].get<std::string>())["interrupted"].get<bool>());
  auto idle = json::parse(c.Get("/sdapi/v1/progress")->body);
  EXPECT_EQ(idle["state"]["job_count"], 0);
}

TEST(Http, OpenAiImagesAndItsErrorShape) {
  Server s;
  auto c = s.client();
  const json rec = recorded("openai_generations");
  auto res = c.Post("/v1/images/generations", rec["request"].dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json body = json::parse(res->body);
  expect_shape(body, rec["response_shape"]);
  ASSERT_EQ(body["data"].size(), 2u);
  const auto bytes = *base64_decode(body["data"][1]["b64_json"].get<std::string>());
  const PngImage png = decode_png(bytes.data(), bytes.size());
  EXPECT_EQ(png.width, 64);
  EXPECT_EQ(png.height, 96);
  for (const auto& [request, param] : std::vector<std::pair<json, std::string>>{
           {{{"prompt", "x"}, {"size", "1024x7"}}, "size"},
           {{{"prompt", "x"}, {"size", "40x64"}}, "size"},  // a multiple of 8, not of this UNet's 32
           {{{"prompt", "x"}, {"response_format", "url"}}, "response_format"},
           {{{"prompt", "x"}, {"n", 0}}, "n"},
           {{{"n", 1}}, "prompt"},
           {{{"prompt", "x"}, {"model", "dall-e-3"}}, "model"}}) {
    auto e = c.Post("/v1/images/generations", request.dump(), "application/json");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->status, 400) << request.dump();
    const json err = json::parse(e->body);
    expect_shape(err, rec["error_shape"]);
    EXPECT_EQ(err["error"]["param"], param) << err.dump();
    EXPECT_EQ(err["error"]["type"], "invalid_request_error");
  }
  auto models = json::parse(c.Get("/v1/models")->body);
  EXPECT_EQ(models["data"][0]["id"], "otter-shapes");
}

// Server-Sent Events of a job: its progress with a preview at every step, then "done".
std::vector<std::pair<std::string, json>> read_events(const Server& s, const std::string& id) {
  std::vector<std::pair<std::string, json>> events;
  std::string buffer;
  auto c = s.client();
  auto res = c.Get(("/v1/jobs/" + id + "/events").c_str(), [&](const char* data, size_t n) {
    buffer.append(data, n);
    for (size_t at; (at = buffer.find("\n\n")) != std::string::npos;) {
      const std::string block = buffer.substr(0, at);
      buffer.erase(0, at + 2);
      if (block.rfind("event: ", 0) != 0) continue;  // a keep-alive comment
      const size_t nl = block.find('\n');
      events.emplace_back(block.substr(7, nl - 7), json::parse(block.substr(nl + 7)));
    }
    return true;
  });
  EXPECT_TRUE(res);
  return events;
}

TEST(Http, NativeJobsWithEventsImagesAndCancel) {
  Server s;
  auto c = s.client();
  const json rec = recorded("native_job");
  auto posted = c.Post("/v1/jobs", rec["request"].dump(), "application/json");
  ASSERT_TRUE(posted);
  ASSERT_EQ(posted->status, 202) << posted->body;
  const json job = json::parse(posted->body);
  expect_shape(job, rec["created_shape"]);
  const std::string id = job["id"];
  const auto events = read_events(s, id);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().first, "done");
  int progress = 0;
  for (const auto& [name, data] : events)
    if (name == "progress") {
      ++progress;
      EXPECT_EQ(data["preview"].get<std::string>().rfind("data:image/png;base64,", 0), 0u);
    }
  EXPECT_GE(progress, 1);
  EXPECT_EQ(events.front().first, "running");
  auto got = c.Get(("/v1/jobs/" + id).c_str());
  ASSERT_TRUE(got && got->status == 200);
  const json done = json::parse(got->body);
  expect_shape(done, rec["done_shape"]);
  EXPECT_EQ(done["state"], "succeeded");
  EXPECT_EQ(done["steps"], 6);
  auto png = c.Get(("/v1/jobs/" + id + "/images/0.png").c_str());
  ASSERT_TRUE(png && png->status == 200);
  EXPECT_EQ(png->get_header_value("Content-Type"), "image/png");
  EXPECT_EQ(std::vector<uint8_t>(png->body.begin(), png->body.end()),
            *base64_decode(done["image_list"][0]["png_base64"].get<std::string>()));
  // The same parameters through otter generate: the same file.
  Txt2ImgRequest r;
  r.prompts = {rec["request"]["prompt"]};
  r.width = r.height = native_size(s);  // the job names no size
  r.seed = rec["request"]["seed"];
  r.steps = 6;
  r.sampler = "dpmpp_2m";
  r.guider = GuidanceRecipe::parse(rec["request"]["guidance"]);
  EXPECT_EQ(std::vector<uint8_t>(png->body.begin(), png->body.end()), cli_png(s, r));

  // Cancel a long one.
  auto long_job = json::parse(c.Post("/v1/jobs", R"({"prompt":"x","steps":150})", "application/json")->body);
  const std::string long_id = long_job["id"];
  while (json::parse(c.Get(("/v1/jobs/" + long_id).c_str())->body)["step"].get<int>() < 1) std::this_thread::sleep_for(2ms);
  auto deleted = c.Delete(("/v1/jobs/" + long_id).c_str());
  ASSERT_TRUE(deleted && deleted->status == 200);
  const auto cancelled_events = read_events(s, long_id);
  ASSERT_FALSE(cancelled_events.empty());
  EXPECT_EQ(cancelled_events.back().first, "cancelled");
  EXPECT_EQ(json::parse(c.Get(("/v1/jobs/" + long_id).c_str())->body)["state"], "cancelled");
  auto missing = c.Get("/v1/jobs/job-999999");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
}

// otter lab over HTTP (the page's lab view): every experiment's image is otter generate's file for
// its settings; every step carries the four pictures and the numbers.
TEST(Http, LabRunsEveryExperimentFromOneNoise) {
  Server s;
  auto c = s.client();
  auto res = c.Post("/v1/lab", R"({"prompt": "a red circle", "seed": 3, "steps": 6, "sampler": "euler", "experiments": "cfg,uncond"})",
                    "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json lab = json::parse(res->body);
  ASSERT_EQ(lab["experiments"].size(), 2u);
  // Step 0: both experiments hold the same latents, so one row per text (the prompt, ""); after
  // that each has its own latents and evaluates both rows (the lab keeps cond for its statistics).
  EXPECT_EQ(lab["unet_rows"], 2 + 2 * 2 * 5);
  for (const json& x : lab["experiments"]) {
    ASSERT_EQ(x["steps"].size(), 6u) << x["name"];
    for (const json& st : x["steps"])
      for (const char* k : {"cond", "uncond", "delta", "guided"})
        EXPECT_EQ(st[k].get<std::string>().rfind("data:image/png;base64,", 0), 0u) << k;
  }
  Txt2ImgRequest r;
  r.prompts = {"a red circle"};
  r.width = r.height = native_size(s);  // the lab request names no size
  r.seed = 3;
  r.steps = 6;
  r.sampler = "euler";
  r.guidance.schedule = GuidanceSchedule::constant(7.5f);
  const std::string image = lab["experiments"][0]["image"].get<std::string>();
  EXPECT_EQ(*base64_decode(image.substr(image.find(',') + 1)), cli_png(s, r));
  auto bad = c.Post("/v1/lab", R"({"prompt": "x", "experiments": "cfg,nonsense"})", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(bad->body)["error"]["field"], "experiments");
}

TEST(Http, BadRequestsNameTheField) {
  Server s;
  auto c = s.client();
  const std::vector<std::tuple<std::string, std::string, std::string>> cases{
      {"/sdapi/v1/txt2img", R"({"prompt": "x", "steps": "twenty"})", "steps"},
      {"/sdapi/v1/txt2img", R"({"prompt": "x", "steps": 100000})", "steps"},
      {"/sdapi/v1/txt2img", R"({"prompt": "x", "steps": 1e300})", "steps"},  // found by fuzzing: the cast was undefined
      {"/sdapi/v1/txt2img", R"({"prompt": "x", "seed": 18446744073709551615})", "seed"},
      {"/sdapi/v1/txt2img", R"({"prompt": "x", "width": 100})", "width"},
      {"/sdapi/v1/txt2img", R"({"prompt": "x", "sampler_name": "Euler z"})", "sampler_name"},
      {"/sdapi/v1/txt2img", R"({"prompt": 7})", "prompt"},
      {"/sdapi/v1/txt2img", R"({"prompt": "x", "otter_guidance": "apg:sigma=1"})", "otter_guidance"},
      {"/sdapi/v1/txt2img", R"({"prompt": "x", "batch_size": 8, "n_iter": 8})", "n_iter"},
      {"/v1/jobs", R"({"prompt": "x", "cfg_scale": "high"})", "cfg_scale"},
      {"/v1/jobs", R"({"prompt": "x", "model": "nope"})", "model"},
      {"/v1/jobs", R"({"prompt": "x", "cfg_schedule": "linear:7"})", "cfg_schedule"},
  };
  for (const auto& [path, request, field] : cases) {
    auto res = c.Post(path.c_str(), request, "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << request;
    const json body = json::parse(res->body);
    const json named = path == "/v1/jobs" ? body["error"]["field"] : body["field"];
    EXPECT_EQ(named, field) << request << " -> " << res->body;
  }
  // The last: a number beyond a double, which the JSON parser reports as out of range, not as a
  // syntax error (found by tests/fuzz/fuzz_request_json; it was a 500).
  for (const char* malformed : {"{", "[1, 2]", "", "{\"prompt\": \"x\",}", "220E000010000000000c0000:}", "{\"steps\": 1e999}"}) {
    auto res = c.Post("/v1/jobs", malformed, "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << malformed;
  }
  auto route = c.Get("/sdapi/v1/nothing");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->status, 404);
}

TEST(Http, LimitsAndTheApiKey) {
  ServiceOptions o;
  o.max_queue = 0;  // nothing may wait: every job is refused while one runs…
  HttpOptions h;
  h.api_key = "s3cret";
  h.limits.max_body = 4096;
  Server s(o, h);
  auto anonymous = s.client();
  auto res = anonymous.Get("/sdapi/v1/samplers");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer");
  EXPECT_EQ(anonymous.Get("/health")->status, 200);  // health and the page need no key
  EXPECT_EQ(anonymous.Get("/")->status, 200);
  auto c = s.client("s3cret");
  EXPECT_EQ(c.Get("/sdapi/v1/samplers")->status, 200);
  auto big = c.Post("/v1/jobs", std::string(8192, ' '), "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  auto full = c.Post("/v1/jobs", R"({"prompt":"x","steps":2})", "application/json");
  ASSERT_TRUE(full);
  EXPECT_EQ(full->status, 429);
  EXPECT_EQ(full->get_header_value("Retry-After"), "1");
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics && metrics->status == 200);
  for (const char* name : {"otter_queue_depth 0", "otter_jobs_total{state=\"refused\"} 1", "otter_unet_rows_per_second",
                           "otter_step_seconds_bucket{le=\"+Inf\"}", "otter_batch_rows_bucket", "otter_resident_memory_bytes"})
    EXPECT_NE(metrics->body.find(name), std::string::npos) << name;
}

// A blocking request whose client hangs up: its job is cancelled at its next step.
TEST(Http, AClientThatGoesAwayHasItsJobCancelled) {
  Server s;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(s.port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string body = R"({"prompt":"x","steps":150})";
  const std::string request = "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  while (s.service->counters().running == 0) std::this_thread::sleep_for(2ms);
  close(fd);
  for (int i = 0; i < 3000 && s.service->counters().cancelled == 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(s.service->counters().cancelled, 1u);
  EXPECT_EQ(s.service->counters().running, 0u);
}

TEST(Http, MemoryStaysBoundedUnderAFloodOfBadAndGoodRequests) {
  ServiceOptions o;
  o.keep_results_seconds = 0;  // results dropped as soon as they are fetched or finished
  Server s(o);
  auto c = s.client();
  auto flood = [&](int rounds) {
    for (int i = 0; i < rounds; ++i) {
      (void)c.Post("/v1/jobs", "{\"prompt\": ", "application/json");
      (void)c.Post("/sdapi/v1/txt2img", R"({"prompt":"x","steps":-3})", "application/json");
      (void)c.Post("/v1/images/generations", R"({"prompt":"x","size":"9x9"})", "application/json");
      (void)c.Get("/v1/jobs/job-424242");
      if (i % 10 == 0) (void)c.Post("/sdapi/v1/txt2img", R"({"prompt":"x","steps":2,"seed":1})", "application/json");
    }
  };
  flood(100);  // warm: allocator caches, thread pool, model
  const uint64_t before = process_memory().resident_bytes;
  flood(400);
  const uint64_t after = process_memory().resident_bytes;
  std::printf("[ flood    ] RSS %.1f MB -> %.1f MB over 2000 requests\n", before / 1e6, after / 1e6);
  EXPECT_LT(static_cast<double>(after), static_cast<double>(before) + 32e6);
  EXPECT_EQ(c.Get("/health")->status, 200);
}

}  // namespace
}  // namespace otter::serve

namespace otter::serve {
namespace {

std::string picture_base64(const std::vector<uint8_t>& bytes) { return base64_encode(bytes); }

// A white picture (a mask repainting everything) of w x h.
std::vector<uint8_t> make_png(int w, int h) {
  const std::vector<uint8_t> rgb(static_cast<size_t>(w * h * 3), 255);
  return encode_png(rgb.data(), w, h, {});
}

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string init_picture_base64() {
  std::ifstream in(std::string(OTTER_PROJECT_GOLDEN_DIR) + "/img2img_input.png", std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_FALSE(bytes.empty());
  return base64_encode(bytes);
}

// The webui's img2img: its image is otter generate --init-image's, byte for byte.
TEST(Http, WebuiImg2imgIsTheCliImage) {
  Server s;
  const json request{{"prompt", "a green circle on a blue background"}, {"seed", 3}, {"steps", 8},
                     {"sampler_name", "Euler a"}, {"cfg_scale", 7.5}, {"denoising_strength", 0.6},
                     {"init_images", json::array({"data:image/png;base64," + init_picture_base64()})}};
  auto res = s.client().Post("/sdapi/v1/img2img", request.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json body = json::parse(res->body);
  ASSERT_EQ(body["images"].size(), 1u);
  Txt2ImgRequest r;
  r.prompts = {"a green circle on a blue background"};
  r.width = r.height = 64;
  r.seed = 3;
  r.steps = 8;
  r.sampler = "euler_a";
  r.guidance.schedule = GuidanceSchedule::constant(7.5f);
  r.init_image = InitImage{.pixels = picture_to_vae_input(read_png(std::string(OTTER_PROJECT_GOLDEN_DIR) + "/img2img_input.png")), .strength = 0.6};
  const auto png = base64_decode(body["images"][0].get<std::string>());
  ASSERT_TRUE(png);
  EXPECT_EQ(*png, cli_png(s, r));
  EXPECT_NE(json::parse(body["info"].get<std::string>())["infotexts"][0].get<std::string>().find("Denoising strength: 0.6"),
            std::string::npos);

  // With a mask: inpainting, again the CLI's image (mask blur 2 here).
  json masked = request;
  masked["mask"] = base64_encode(file_bytes(std::string(OTTER_PROJECT_GOLDEN_DIR) + "/inpaint_mask.png"));
  masked["mask_blur"] = 2;
  res = s.client().Post("/sdapi/v1/img2img", masked.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  r.init_image->mask = mask_from_picture(read_png(std::string(OTTER_PROJECT_GOLDEN_DIR) + "/inpaint_mask.png"));
  r.init_image->mask_blur = 2;
  const auto inpainted = base64_decode(json::parse(res->body)["images"][0].get<std::string>());
  ASSERT_TRUE(inpainted);
  EXPECT_EQ(*inpainted, cli_png(s, r));
  r.init_image->mask = Tensor();

  // otter's own jobs API takes the same picture and mask (init_image, strength, mask, mask_blur):
  // the same file.
  {
    const json job_request{{"prompt", "a green circle on a blue background"}, {"seed", 3}, {"steps", 8},
                           {"sampler", "euler_a"}, {"cfg_scale", 7.5}, {"strength", 0.6}, {"init_image", request["init_images"][0]},
                           {"mask", masked["mask"]}, {"mask_blur", 2}};
    auto posted = s.client().Post("/v1/jobs", job_request.dump(), "application/json");
    ASSERT_TRUE(posted);
    ASSERT_EQ(posted->status, 202) << posted->body;
    const std::string id = json::parse(posted->body)["id"];
    const auto events = read_events(s, id);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().first, "done");
    auto job_png = s.client().Get(("/v1/jobs/" + id + "/images/0.png").c_str());
    ASSERT_TRUE(job_png && job_png->status == 200);
    EXPECT_EQ(decode_png(reinterpret_cast<const uint8_t*>(job_png->body.data()), job_png->body.size()).pixels,
              decode_png(inpainted->data(), inpainted->size()).pixels);
    json no_picture = job_request;
    no_picture.erase("init_image");
    posted = s.client().Post("/v1/jobs", no_picture.dump(), "application/json");
    ASSERT_TRUE(posted);
    EXPECT_EQ(posted->status, 400);
    EXPECT_NE(posted->body.find("send the picture too"), std::string::npos) << posted->body;
  }

  // A size resamples the picture (resize_mode 0).
  json resized = request;
  resized["width"] = resized["height"] = 128;
  res = s.client().Post("/sdapi/v1/img2img", resized.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const auto big = base64_decode(json::parse(res->body)["images"][0].get<std::string>());
  ASSERT_TRUE(big);
  EXPECT_EQ(decode_png(big->data(), big->size()).width, 128);

  // Bad input names its field.
  const std::pair<json, std::string> bad[] = {
      {json{{"mask", "x"}}, "mask"},
      {json{{"denoising_strength", 1.5}}, "denoising_strength"},
      {json{{"denoising_strength", 0.01}}, "denoising_strength"},
      {json{{"init_images", json::array({"bm90IGEgcGljdHVyZQ=="})}}, "init_images"},
      {json{{"init_images", json::array()}}, "init_images"},
      {json{{"init_images", json::array({init_picture_base64(), init_picture_base64()})}}, "init_images"},
      {json{{"resize_mode", 1}}, "resize_mode"},
      {json{{"mask", "data:image/png;base64," + picture_base64(make_png(32, 32))}}, "mask"},
      {json{{"mask", picture_base64(make_png(64, 64))}, {"inpainting_fill", 0}}, "inpainting_fill"},
      {json{{"mask", picture_base64(make_png(64, 64))}, {"inpaint_full_res", true}}, "inpaint_full_res"},
  };
  for (const auto& [change, name] : bad) {
    json b = request;
    b.update(change);
    res = s.client().Post("/sdapi/v1/img2img", b.dump(), "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << name << ": " << res->body;
    EXPECT_NE(res->body.find(name), std::string::npos) << res->body;
  }
}

}  // namespace
}  // namespace otter::serve

namespace otter::serve {
namespace {

// A random rank-2 LoRA (PEFT layout) on every attention query of the bundled model's UNet.
std::filesystem::path bundled_model_lora(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const ModelFiles files = open_model(find_default_model());
  std::vector<std::pair<std::string, Tensor>> tensors;
  uint32_t state = 12345;
  const auto random = [&](const Shape& shape, float amplitude) {
    Tensor t = Tensor::empty(shape, DType::F32);
    for (int64_t i = 0; i < t.numel(); ++i) {
      state = state * 1664525u + 1013904223u;
      t.f32()[i] = amplitude * (static_cast<float>(state >> 8) / 16777216.0f - 0.5f);
    }
    return t;
  };
  for (const std::string& name : files.unet->names()) {
    if (name.size() < 12 || name.substr(name.size() - 12) != ".to_q.weight") continue;
    const Tensor w = files.unet->get(name);
    const std::string module = name.substr(0, name.size() - 7);
    tensors.emplace_back("unet." + module + ".lora_A.weight", random(Shape{2, w.dim(1)}, 1.0f));
    tensors.emplace_back("unet." + module + ".lora_B.weight", random(Shape{w.dim(0), 2}, 1.0f));
  }
  EXPECT_FALSE(tensors.empty());
  write_safetensors(dir / "style.safetensors", tensors);
  return dir;
}

// <lora:NAME:WEIGHT> in a prompt: the image of the model with that LoRA (applied unmerged, as the
// CLI's --lora-unmerged), the tag gone from the prompt, the LoRA in the infotext; listed by
// /sdapi/v1/loras; an unknown name is a 400 naming the prompt.
TEST(Http, LoraTagsInThePromptApplyTheServersLoras) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / cat("otter_serve_loras_", ::getpid());
  Server s({}, {}, bundled_model_lora(dir));
  auto res = s.client().Get("/sdapi/v1/loras");
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body)[0]["name"], "style");
  const json request{{"prompt", "a red circle <lora:style:0.7> on a blue background"}, {"seed", 2}, {"steps", 6},
                     {"sampler_name", "Euler"}, {"cfg_scale", 7.5}};
  res = s.client().Post("/sdapi/v1/txt2img", request.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json body = json::parse(res->body);
  const std::string infotext = json::parse(body["info"].get<std::string>())["infotexts"][0];
  EXPECT_NE(infotext.find("LoRA: \"style.safetensors:0.7\""), std::string::npos) << infotext;
  EXPECT_EQ(infotext.find("<lora:"), std::string::npos) << infotext;

  Txt2ImgRequest r;
  r.prompts = {"a red circle  on a blue background"};
  r.width = r.height = native_size(s);  // the request names no size
  r.seed = 2;
  r.steps = 6;
  r.sampler = "euler";
  r.guidance.schedule = GuidanceSchedule::constant(7.5f);
  LoadOptions options;
  options.loras = {{dir / "style.safetensors", 0.7}};
  options.lora_unmerged = true;
  auto model = StableDiffusion::load(find_default_model(), *s.backend, options);
  const Txt2ImgResult with_lora = txt2img(*model, r);
  const auto png = base64_decode(body["images"][0].get<std::string>());
  ASSERT_TRUE(png);
  const PngImage got = decode_png(png->data(), png->size());
  EXPECT_EQ(got.pixels, std::vector<uint8_t>(with_lora.image.data<uint8_t>(), with_lora.image.data<uint8_t>() + with_lora.image.numel()));
  // And the LoRA changed the image.
  const Txt2ImgResult plain = txt2img(*s.models.acquire(s.models.default_name())->model, r);
  EXPECT_NE(got.pixels, std::vector<uint8_t>(plain.image.data<uint8_t>(), plain.image.data<uint8_t>() + plain.image.numel()));

  json unknown = request;
  unknown["prompt"] = "a red circle <lora:nothing:1>";
  res = s.client().Post("/sdapi/v1/txt2img", unknown.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_NE(res->body.find("no LoRA 'nothing' on this server; it has: style"), std::string::npos) << res->body;
  EXPECT_NE(res->body.find("\"prompt\""), std::string::npos) << res->body;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace otter::serve
