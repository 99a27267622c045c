#include "worker/worker.h"

#include <omp.h>

#include <chrono>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <memory>
#include <thread>

#include "protocol/protocol.h"
#include "engine/benchmarks/benchmark.h"

// Clang thread-safety annotations; no-ops elsewhere.
#if defined(__clang__)
#define GUARDED_BY(x) __attribute__((guarded_by(x)))
#else
#define GUARDED_BY(x)
#endif

namespace masktune {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;
constexpr int kBackoffMaxIntervals = 32;

struct Job {
  int64_t trial = 0, attempt = 0;
  std::string maskers, benchmark_spec;
};

struct Outcome {
  int64_t trial = 0, attempt = 0;
  bool ok = false;
  Metrics metrics;
  std::string error;
};

// Runs trials one at a time on a thread of its own (so the worker's loop
// keeps answering heartbeats), and says "finished" on an inproc pair so the
// loop wakes at once instead of at its next poll timeout. The benchmark is
// built on the first trial of a study and kept; only this thread touches it.
class TrialRunner {
 public:
  TrialRunner(zmq::context_t& context, const MaskerRegistry& registry, std::string device, int threads,
              std::string pipe)
      : registry_(registry), device_(std::move(device)), thread_([this, &context, threads, pipe] { Loop(context, threads, pipe); }) {}
  ~TrialRunner() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  bool busy() {
    std::lock_guard<std::mutex> lock(mu_);
    return job_.has_value() || outcome_.has_value();
  }
  void Submit(Job job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = std::move(job);
    }
    cv_.notify_all();
  }
  std::optional<Outcome> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    std::optional<Outcome> o = std::move(outcome_);
    outcome_.reset();
    return o;
  }
  // Blocks until the trial in flight (if any) is finished, and drops it.
  void Drain() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !job_.has_value(); });
    outcome_.reset();
  }

 private:
  void Loop(zmq::context_t& context, int threads, const std::string& pipe) {
    zmq::socket_t tx(context, zmq::socket_type::pair);
    tx.set(zmq::sockopt::linger, 0);
    tx.connect(pipe);
    if (threads > 0) omp_set_num_threads(threads);
    std::string spec;
    std::unique_ptr<Benchmark> benchmark;
    while (true) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return quit_ || job_.has_value(); });
        if (quit_) return;
        job = *job_;
      }
      Outcome o = Run(job, spec, benchmark);
      {
        std::lock_guard<std::mutex> lock(mu_);
        outcome_ = std::move(o);
        job_.reset();
      }
      cv_.notify_all();
      tx.send(zmq::str_buffer("1"), zmq::send_flags::dontwait);
    }
  }

  Outcome Run(const Job& job, std::string& spec, std::unique_ptr<Benchmark>& benchmark) {
    Outcome o;
    o.trial = job.trial;
    o.attempt = job.attempt;
    if (!benchmark || spec != job.benchmark_spec) {
      json bench_spec = json::parse(job.benchmark_spec);
      bench_spec["device"] = device_;  // where this worker's attention runs
      auto created = CreateBenchmark(bench_spec);
      if (!created.ok()) {
        o.error = "benchmark: " + created.status().message();
        return o;
      }
      benchmark = std::move(created).value();
      spec = job.benchmark_spec;
    }
    auto configs = registry_.ParseJsonList(job.maskers, "");
    if (!configs.ok()) {
      o.error = configs.status().message();
      return o;
    }
    auto metrics = benchmark->Run(registry_, configs.value());
    if (!metrics.ok()) {
      o.error = metrics.status().message();
      return o;
    }
    o.ok = true;
    o.metrics = std::move(metrics).value();
    return o;
  }

  const MaskerRegistry& registry_;
  std::string device_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Job> job_ GUARDED_BY(mu_);
  std::optional<Outcome> outcome_ GUARDED_BY(mu_);
  bool quit_ GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts after the members it uses
};

}  // namespace

Result<WorkerStats> RunWorker(zmq::context_t& context, const MaskerRegistry& registry,
                              const WorkerOptions& options) {
  WorkerStats stats;
  const auto interval = std::chrono::milliseconds(options.heartbeat_interval_ms);
  int backoff = 1;
  std::string benchmark_spec;
  static std::atomic<int64_t> next_pipe{0};
  const std::string pipe = "inproc://masktune-worker-done-" + std::to_string(next_pipe++);
  zmq::socket_t done_rx(context, zmq::socket_type::pair);
  done_rx.set(zmq::sockopt::linger, 0);
  done_rx.bind(pipe);
  TrialRunner runner(context, registry, options.device, options.threads, pipe);
  auto stopped = [&] { return options.stop && options.stop->load(); };

  while (!stopped()) {
    zmq::socket_t dealer(context, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.set(zmq::sockopt::routing_id, options.name + "#" + std::to_string(stats.reconnects));
    dealer.set(zmq::sockopt::maxmsgsize, security::kMaxMessageBytes);
    if (options.curve) security::ConfigureClient(dealer, *options.curve);
    dealer.connect(options.connect);
    protocol::Send(dealer, protocol::kReady,
                   {{"name", options.name},
                    {"cores", static_cast<int64_t>(std::thread::hardware_concurrency())},
                    {"gpus", 0}});
    Clock::time_point last_heard = Clock::now(), next_heartbeat = Clock::now() + interval;
    bool lost = false;
    while (!lost && !stopped()) {
      zmq::pollitem_t items[] = {{dealer.handle(), 0, ZMQ_POLLIN, 0},
                                 {done_rx.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 2, std::chrono::milliseconds(std::max<int64_t>(1, options.heartbeat_interval_ms / 4)));
      const auto now = Clock::now();
      if (items[1].revents & ZMQ_POLLIN) {
        zmq::message_t m;
        (void)done_rx.recv(m, zmq::recv_flags::dontwait);
        if (std::optional<Outcome> o = runner.Take()) {
          if (o->ok) {
            json metrics = json::object();
            for (const auto& [k, v] : o->metrics) metrics[k] = v;
            protocol::Send(dealer, protocol::kResult,
                           {{"trial", o->trial}, {"attempt", o->attempt}, {"metrics", metrics}});
            ++stats.trials;
          } else {
            protocol::Send(dealer, protocol::kFailed,
                           {{"trial", o->trial}, {"attempt", o->attempt}, {"error", o->error}});
          }
          next_heartbeat = now + interval;
        }
      }
      while (auto msg = protocol::Receive(dealer, false)) {
        if (msg->command.empty()) continue;  // malformed: dropped
        last_heard = now;
        backoff = 1;
        if (msg->command == protocol::kDone) return stats;
        if (msg->command == protocol::kWelcome) {
          benchmark_spec = msg->body.value("benchmark", json::object()).dump();
        } else if (msg->command == protocol::kTrial && !runner.busy()) {
          runner.Submit(Job{msg->body.value("trial", int64_t{0}), msg->body.value("attempt", int64_t{0}),
                            msg->body.value("maskers", json::array()).dump(), benchmark_spec});
        }
      }
      if (now >= next_heartbeat) {
        protocol::Send(dealer, protocol::kHeartbeat, json::object());
        next_heartbeat = now + interval;
      }
      if (now - last_heard > protocol::kHeartbeatLiveness * interval) lost = true;
    }
    if (!lost) break;
    // The coordinator went silent and has requeued our trial: finish and drop
    // it, then reconnect after a capped exponential back-off.
    runner.Drain();
    ++stats.reconnects;
    std::this_thread::sleep_for(backoff * interval);
    backoff = std::min(backoff * 2, kBackoffMaxIntervals);
  }
  return stats;
}

}  // namespace masktune
