#include "worker/worker.h"

#include <omp.h>

#include <chrono>
#include <atomic>
#include <future>
#include <memory>
#include <thread>

#include "coordinator/protocol.h"
#include "engine/benchmarks/benchmark.h"

namespace masktune {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;
constexpr int kBackoffMaxIntervals = 32;

struct Outcome {
  int64_t trial = 0, attempt = 0;
  bool ok = false;
  Metrics metrics;
  std::string error;
};

}  // namespace

Result<WorkerStats> RunWorker(zmq::context_t& context, const MaskerRegistry& registry,
                              const WorkerOptions& options) {
  WorkerStats stats;
  const auto interval = std::chrono::milliseconds(options.heartbeat_interval_ms);
  int backoff = 1;
  std::shared_ptr<Benchmark> benchmark;
  std::string benchmark_spec;
  std::future<Outcome> running;  // the trial in flight, if any
  const int threads = options.threads;
  // The trial thread says "finished" on an inproc pair, so the loop wakes at
  // once instead of at its next poll timeout.
  static std::atomic<int64_t> next_pipe{0};
  const std::string pipe = "inproc://masktune-worker-done-" + std::to_string(next_pipe++);
  zmq::socket_t done_rx(context, zmq::socket_type::pair);
  done_rx.bind(pipe);

  while (!(options.stop && options.stop->load())) {
    zmq::socket_t dealer(context, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.set(zmq::sockopt::routing_id,
               options.name + "#" + std::to_string(stats.reconnects));
    dealer.connect(options.connect);
    protocol::Send(dealer, protocol::kReady,
                   {{"name", options.name},
                    {"cores", static_cast<int64_t>(std::thread::hardware_concurrency())},
                    {"gpus", 0}});
    Clock::time_point last_heard = Clock::now(), next_heartbeat = Clock::now() + interval;
    bool lost = false;
    while (!lost && !(options.stop && options.stop->load())) {
      zmq::pollitem_t items[] = {{dealer.handle(), 0, ZMQ_POLLIN, 0},
                                 {done_rx.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 2, std::chrono::milliseconds(std::max<int64_t>(1, options.heartbeat_interval_ms / 4)));
      if (items[1].revents & ZMQ_POLLIN) {
        zmq::message_t m;
        (void)done_rx.recv(m, zmq::recv_flags::dontwait);
        // The signal leaves just before the future gets its value: wait for it.
        if (running.valid()) running.wait();
      }
      const auto now = Clock::now();
      while (auto msg = protocol::Receive(dealer, false)) {
        if (msg->command.empty()) continue;  // malformed: dropped
        last_heard = now;
        backoff = 1;
        if (msg->command == protocol::kDone) return stats;
        if (msg->command == protocol::kWelcome) {
          const std::string spec = msg->body.value("benchmark", json::object()).dump();
          if (spec != benchmark_spec) {
            benchmark.reset();
            benchmark_spec = spec;
          }
        } else if (msg->command == protocol::kTrial && !running.valid()) {
          const int64_t trial = msg->body.value("trial", int64_t{0});
          const int64_t attempt = msg->body.value("attempt", int64_t{0});
          const std::string maskers = msg->body.value("maskers", json::array()).dump();
          const std::string spec = benchmark_spec;
          auto bench = benchmark;
          running = std::async(std::launch::async, [=, &registry, &benchmark, &context]() {
            // Signals the loop when this function returns, however it returns.
            struct Signal {
              zmq::socket_t tx;
              ~Signal() { tx.send(zmq::str_buffer("1"), zmq::send_flags::dontwait); }
            } signal{zmq::socket_t(context, zmq::socket_type::pair)};
            signal.tx.connect(pipe);
            if (threads > 0) omp_set_num_threads(threads);
            Outcome o;
            o.trial = trial;
            o.attempt = attempt;
            std::shared_ptr<Benchmark> b = bench;
            if (!b) {  // built on first use, once per study
              auto created = CreateBenchmark(json::parse(spec));
              if (!created.ok()) {
                o.error = "benchmark: " + created.status().message();
                return o;
              }
              b = std::move(created).value();
              benchmark = b;  // read by the loop only after this future is ready
            }
            auto configs = registry.ParseJsonList(maskers, "");
            if (!configs.ok()) {
              o.error = configs.status().message();
              return o;
            }
            auto metrics = b->Run(registry, configs.value());
            if (!metrics.ok()) {
              o.error = metrics.status().message();
              return o;
            }
            o.ok = true;
            o.metrics = std::move(metrics).value();
            return o;
          });
        }
      }
      if (running.valid() &&
          running.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
        Outcome o = running.get();
        json metrics = json::object();
        for (const auto& [k, v] : o.metrics) metrics[k] = v;
        if (o.ok) {
          protocol::Send(dealer, protocol::kResult,
                         {{"trial", o.trial}, {"attempt", o.attempt}, {"metrics", metrics}});
          ++stats.trials;
        } else {
          protocol::Send(dealer, protocol::kFailed,
                         {{"trial", o.trial}, {"attempt", o.attempt}, {"error", o.error}});
        }
        next_heartbeat = now + interval;
      }
      if (now >= next_heartbeat) {
        protocol::Send(dealer, protocol::kHeartbeat, json::object());
        next_heartbeat = now + interval;
      }
      if (now - last_heard > protocol::kHeartbeatLiveness * interval) lost = true;
    }
    if (!lost) break;
    // The coordinator went silent: it has requeued our trial, so finish and
    // drop it, then reconnect after a capped exponential back-off.
    if (running.valid()) running.get();
    ++stats.reconnects;
    std::this_thread::sleep_for(backoff * interval);
    backoff = std::min(backoff * 2, kBackoffMaxIntervals);
  }
  if (running.valid()) running.wait();
  return stats;
}

}  // namespace masktune
