// Continuous batching: jobs submitted together — different seeds, step counts, samplers, guiders
// (PAG's perturbed rows included), and another image size — each give exactly the image txt2img
// makes alone (same bits at f32 on the bundled model), while the UNet ran fewer, larger calls than
// the jobs would one by one. With batching off the images are the same and every call is one
// job's. Cancelling a running job ends it at its next step without stalling the others.
#include <gtest/gtest.h>

#include <cstring>

#include "backend/backend.h"
#include "generation_service.h"
#include "model_registry.h"
#include "pipeline/default_model.h"
#include "pipeline/image_output.h"
#include "pipeline/txt2img.h"

namespace otter::serve {
namespace {

using namespace std::chrono_literals;

GenerationSpec spec(uint64_t seed, int steps, const std::string& sampler = "", int size = 0) {
  GenerationSpec s;
  s.api = "jobs";
  s.request.prompts = {"a red circle on a blue background"};
  s.request.seed = seed;
  s.request.steps = steps;
  s.request.sampler = sampler;
  s.request.width = s.request.height = size;
  s.request.guidance.schedule = GuidanceSchedule::constant(7.5f);
  return s;
}

struct Fixture {
  std::unique_ptr<Backend> backend = make_cpu_backend(Precision::F32);
  std::mutex device;
  ModelRegistry models{find_default_model(), std::nullopt, 1, *backend, device};
};

// What otter generate makes for the same request, as PNG bytes.
std::vector<uint8_t> alone(ModelRegistry& models, const GenerationSpec& s) {
  auto m = models.acquire(models.default_name());
  Txt2ImgRequest r = s.request;
  if (r.width == 0) r.width = r.height = m->native_size;
  const Txt2ImgResult result = txt2img(*m->model, r);
  return encode_image_png(r, result, m->model->files().name, 0, {{"Precision", "f32"}});
}

std::vector<GenerationSpec> mixed_jobs() {
  std::vector<GenerationSpec> jobs{spec(1, 12), spec(2, 7, "euler_a"), spec(3, 9, "dpmpp_2m"), spec(4, 12, "", 32)};
  GenerationSpec pag = spec(5, 8);
  pag.request.guider = GuidanceRecipe::parse("pag:scale=5,pag_scale=2,layers=mid");
  jobs.push_back(pag);
  GenerationSpec negative = spec(6, 10);
  negative.request.negative_prompts = {"green"};
  negative.request.images_per_prompt = 2;
  jobs.push_back(negative);
  return jobs;
}

void run_and_compare(bool batching, BatcherStats* stats) {
  Fixture f;
  ServiceOptions o;
  o.batching = batching;
  o.max_batch_rows = 64;
  o.precision_name = "f32";
  std::vector<std::shared_ptr<GenerationJob>> jobs;
  const std::vector<GenerationSpec> specs = mixed_jobs();
  {
    GenerationService service(f.models, *f.backend, f.device, o);
    for (const GenerationSpec& s : specs) jobs.push_back(service.submit(s));
    for (auto& j : jobs) {
      const JobSnapshot s = j->wait_finished(120s);
      ASSERT_EQ(s.state, JobState::Succeeded) << j->id() << ": " << s.error;
    }
    *stats = service.counters().batcher;
    service.shutdown(0ms);
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::vector<JobImage> images = jobs[i]->images();
    ASSERT_EQ(images.size(), static_cast<size_t>(specs[i].request.images_per_prompt));
    const std::vector<uint8_t> expected = alone(f.models, specs[i]);
    EXPECT_EQ(images[0].png, expected) << "job " << i << (batching ? " (batched)" : " (alone)")
                                       << " is not the image txt2img makes alone";
  }
}

TEST(Batching, JobsBatchedTogetherMakeTheirAloneImagesBitForBit) {
  BatcherStats stats;
  run_and_compare(true, &stats);
  // Rows asked: 2 per image per step, 3 for PAG's; 12+7+9+12+8+10 steps. One by one that is one
  // call per job step (58); batched, the 64x64 jobs share calls.
  const uint64_t rows = 2 * (12 + 7 + 9 + 12) + 3 * 8 + 2 * 2 * 10;
  EXPECT_EQ(stats.rows, rows);
  EXPECT_LT(stats.calls, 58u) << "no call held more than one job";
  uint64_t multi = 0;
  for (size_t k = 3; k < stats.rows_per_call.size(); ++k) multi += stats.rows_per_call[k];
  EXPECT_GT(multi, 0u);
}

TEST(Batching, NoBatchingRunsEachJobAloneWithTheSameImages) {
  BatcherStats stats;
  run_and_compare(false, &stats);
  EXPECT_EQ(stats.calls, 58u);
}

TEST(Batching, CancelStopsAJobAtItsNextStepAndTheOthersFinish) {
  Fixture f;
  ServiceOptions o;
  o.precision_name = "f32";
  GenerationService service(f.models, *f.backend, f.device, o);
  auto slow = service.submit(spec(1, 150));
  auto quick = service.submit(spec(2, 6));
  while (slow->snapshot().step < 2) std::this_thread::sleep_for(5ms);
  slow->cancel();
  const JobSnapshot s = slow->wait_finished(60s);
  EXPECT_EQ(s.state, JobState::Cancelled);
  EXPECT_LT(s.step, 150);
  EXPECT_TRUE(slow->images().empty());
  EXPECT_EQ(quick->wait_finished(60s).state, JobState::Succeeded);
  EXPECT_EQ(quick->images()[0].png, alone(f.models, spec(2, 6)));
  const ServiceCounters c = service.counters();
  EXPECT_EQ(c.cancelled, 1u);
  EXPECT_EQ(c.succeeded, 1u);
}

TEST(Batching, AdmissionKeepsRunningRowsWithinTheLimitAndTheQueueBounded) {
  Fixture f;
  ServiceOptions o;
  o.max_batch_rows = 2;  // one CFG job at a time
  o.max_queue = 2;
  o.precision_name = "f32";
  GenerationService service(f.models, *f.backend, f.device, o);
  std::vector<std::shared_ptr<GenerationJob>> jobs;
  jobs.push_back(service.submit(spec(1, 30)));
  while (service.counters().running == 0) std::this_thread::sleep_for(1ms);
  jobs.push_back(service.submit(spec(2, 4)));
  jobs.push_back(service.submit(spec(3, 4)));
  EXPECT_EQ(service.counters().queued, 2u);
  try {
    (void)service.submit(spec(4, 4));
    FAIL() << "a third waiting job was queued";
  } catch (const QueueFull& q) {
    EXPECT_GE(q.retry_after_seconds, 1);
  }
  for (auto& j : jobs) EXPECT_EQ(j->wait_finished(60s).state, JobState::Succeeded);
  const ServiceCounters c = service.counters();
  EXPECT_EQ(c.refused, 1u);
  // Never more than one job's rows in a call.
  for (size_t k = 3; k < c.batcher.rows_per_call.size(); ++k) EXPECT_EQ(c.batcher.rows_per_call[k], 0u) << k;
}

TEST(Batching, InterruptDecodesTheLatentsOfTheStepReached) {
  Fixture f;
  ServiceOptions o;
  o.precision_name = "f32";
  GenerationService service(f.models, *f.backend, f.device, o);
  GenerationSpec s = spec(1, 150);
  s.api = "webui";
  auto job = service.submit(s);
  while (job->snapshot().step < 3) std::this_thread::sleep_for(2ms);
  service.interrupt_all("webui");
  const JobSnapshot done = job->wait_finished(60s);
  EXPECT_EQ(done.state, JobState::Succeeded);
  EXPECT_TRUE(done.interrupted);
  EXPECT_LT(done.step, 150);
  ASSERT_EQ(job->images().size(), 1u);
  EXPECT_FALSE(job->preview_png().empty());
}

TEST(Batching, ShutdownCancelsQueuedJobsAndEndsRunningOnesWithinTheGrace) {
  Fixture f;
  ServiceOptions o;
  o.max_batch_rows = 2;
  o.precision_name = "f32";
  GenerationService service(f.models, *f.backend, f.device, o);
  auto running = service.submit(spec(1, 150));
  auto queued = service.submit(spec(2, 150));
  while (running->snapshot().step < 1) std::this_thread::sleep_for(2ms);
  const auto t0 = std::chrono::steady_clock::now();
  service.shutdown(100ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_EQ(queued->snapshot().state, JobState::Cancelled);
  EXPECT_EQ(running->snapshot().state, JobState::Cancelled);
  EXPECT_THROW((void)service.submit(spec(3, 2)), Error);
}

}  // namespace
}  // namespace otter::serve
