#include "worker/worker.h"

#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "engine/benchmarks/benchmark.h"
#include "protocol/protocol.h"
#include "protocol/security.h"
#include "protocol/throttled_log.h"

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

struct Job {
  int64_t trial = 0, attempt = 0;
  std::string maskers, benchmark_spec;
  bool report = false;  // under a scheduler: REPORT each sample, wait for its DECISION
  Device device;        // where it runs: fixed at WELCOME for the study's benchmark
  int threads = 0;      // its OpenMP threads (0: the default)
};

// A per-sample report waiting for the coordinator's decision.
struct PendingReport {
  int64_t trial = 0, attempt = 0, step = 0;
  Metrics metrics;
};

struct Outcome {
  int64_t trial = 0, attempt = 0;
  bool ok = false;
  Metrics metrics;
  std::string error;
};

// Runs trials one at a time on a thread of its own (so the worker's loop
// keeps answering heartbeats), and says "finished" on an inproc PUSH socket
// so the loop wakes at once instead of at its next poll timeout. A worker
// has one runner per slot (WELCOME's "slots"). The benchmark is built on the
// runner's first trial of a study and kept; only this thread touches it.
class TrialRunner {
 public:
  TrialRunner(zmq::context_t& context, const MaskerRegistry& registry, std::string pipe)
      : registry_(registry), thread_([this, &context, pipe] { Loop(context, pipe); }) {}
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
      abandon_ = false;
    }
    cv_.notify_all();
  }
  std::optional<Outcome> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    std::optional<Outcome> o = std::move(outcome_);
    outcome_.reset();
    return o;
  }
  // The report the running trial waits on, if any (the loop sends it).
  std::optional<PendingReport> Pending() {
    std::lock_guard<std::mutex> lock(mu_);
    return report_;
  }
  // The coordinator's answer to the pending report of `step`.
  void Decide(int64_t trial, int64_t attempt, int64_t step, bool stop) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!report_ || report_->trial != trial || report_->attempt != attempt ||
          report_->step != step)
        return;
      decision_ = stop;
    }
    cv_.notify_all();
  }
  // The running trial is no longer ours (REJOIN): stop it at its next report.
  void Abandon() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      abandon_ = true;
    }
    cv_.notify_all();
  }

 private:
  void Loop(zmq::context_t& context, const std::string& pipe) {
    zmq::socket_t tx(context, zmq::socket_type::push);
    tx.set(zmq::sockopt::linger, 0);
    tx.connect(pipe);
    const int default_threads = omp_get_max_threads();
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
      omp_set_num_threads(job.threads > 0 ? job.threads : default_threads);
      Outcome o = Run(job, spec, benchmark, tx);
      {
        std::lock_guard<std::mutex> lock(mu_);
        outcome_ = std::move(o);
        job_.reset();
      }
      cv_.notify_all();
      tx.send(zmq::str_buffer("1"), zmq::send_flags::dontwait);
    }
  }

  Outcome Run(const Job& job, std::string& spec, std::unique_ptr<Benchmark>& benchmark,
              zmq::socket_t& tx) {
    Outcome o;
    o.trial = job.trial;
    o.attempt = job.attempt;
    // The coordinator's spec and masker list were type-checked by the
    // protocol; a value the engine still cannot take fails this trial only.
    try {
      return RunChecked(job, spec, benchmark, o, tx);
    } catch (const std::exception& e) {
      o.ok = false;
      o.error = std::string("bad trial or benchmark spec: ") + e.what();
      benchmark.reset();
      spec.clear();
      return o;
    }
  }

  Outcome RunChecked(const Job& job, std::string& spec, std::unique_ptr<Benchmark>& benchmark,
                     Outcome& o, zmq::socket_t& tx) {
    if (!benchmark || spec != job.benchmark_spec) {
      auto created = CreateBenchmark(json::parse(job.benchmark_spec), job.device);
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
    // Under a scheduler: after each sample, hand the report to the loop (which
    // sends it) and wait for the decision; stop when told to, when the trial
    // is no longer ours, or when the worker quits.
    StepCallback on_step;
    if (job.report)
      on_step = [&](int64_t step, const Metrics& so_far) {
        for (const auto& [k, v] : so_far)
          if (!std::isfinite(v)) return false;  // the final check below fails the trial
        std::unique_lock<std::mutex> lock(mu_);
        report_ = PendingReport{job.trial, job.attempt, step, so_far};
        decision_.reset();
        lock.unlock();
        tx.send(zmq::str_buffer("r"), zmq::send_flags::dontwait);
        lock.lock();
        cv_.wait(lock, [&] { return quit_ || abandon_ || decision_.has_value(); });
        const bool go = !quit_ && !abandon_ && !*decision_;
        report_.reset();
        decision_.reset();
        return go;
      };
    auto metrics = job.report ? benchmark->RunSteps(registry_, configs.value(), on_step)
                              : benchmark->Run(registry_, configs.value());
    if (!metrics.ok()) {
      o.error = metrics.status().message();
      return o;
    }
    for (const auto& [k, v] : metrics.value())
      if (!std::isfinite(v)) {
        o.error = "metric " + k + " is not finite (" + std::to_string(v) + ")";
        return o;
      }
    o.ok = true;
    o.metrics = std::move(metrics).value();
    return o;
  }

  const MaskerRegistry& registry_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Job> job_ GUARDED_BY(mu_);
  std::optional<Outcome> outcome_ GUARDED_BY(mu_);
  std::optional<PendingReport> report_ GUARDED_BY(mu_);
  std::optional<bool> decision_ GUARDED_BY(mu_);  // stop?
  bool abandon_ GUARDED_BY(mu_) = false;
  bool quit_ GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts after the members it uses
};

std::string HostName() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) return "localhost";
  return host;
}

// A runner and the trial the coordinator gave it.
struct Slot {
  std::unique_ptr<TrialRunner> runner;
  int64_t trial = 0, attempt = 0;  // 0: none
  int64_t report_step = 0;         // the last REPORT sent for it
  Clock::time_point report_sent;
  bool Runs(int64_t t, int64_t a) const { return t == trial && a == attempt; }
};

// The cores this process may run on (a SLURM task or a cgroup gets fewer
// than the node has).
int64_t AvailableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return std::max(1u, std::thread::hardware_concurrency());
}

// "10 s", "0.7 s".
std::string Seconds(int64_t ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", static_cast<double>(ms) / 1000.0);
  return buf;
}

}  // namespace

std::string DefaultWorkerName(const std::string& prefix) {
  return prefix + "@" + HostName() + ":" + std::to_string(::getpid());
}

Result<WorkerStats> RunWorker(zmq::context_t& context, const MaskerRegistry& registry,
                              const WorkerOptions& options) {
  WorkerStats stats;
  const auto interval = std::chrono::milliseconds(options.heartbeat_interval_ms);
  std::function<void(const std::string&)> log =
      options.log ? options.log : [name = options.name](const std::string& line) {
        std::fprintf(stderr, "masktune worker %s: %s\n", name.c_str(), line.c_str());
      };
  protocol::ThrottledLog drop_log(log);
  protocol::ThrottledLog why_log(
      log, std::chrono::milliseconds(std::max<int64_t>(1000, options.welcome_timeout_ms)));
  static std::atomic<int64_t> next_pipe{0};
  const int64_t instance = next_pipe++;
  const std::string pipe = "inproc://masktune-worker-done-" + std::to_string(instance);
  zmq::socket_t done_rx(context, zmq::socket_type::pull);
  done_rx.set(zmq::sockopt::linger, 0);
  done_rx.bind(pipe);
  // One runner per slot, made as WELCOME asks for them (and kept: a later
  // WELCOME asking for fewer leaves the rest idle).
  std::vector<Slot> slots;
  int64_t slot_count = 1;
  int threads = options.threads;  // per trial; WELCOME's unless --threads
  auto busy = [&] {
    for (Slot& s : slots)
      if (s.runner->busy()) return true;
    return false;
  };
  Device device = options.device;  // for the study's benchmark, set at WELCOME
  auto stopped = [&] { return options.stop && options.stop->load(); };

  // One socket for the worker's life; ZeroMQ reconnects it by itself.
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  // The routing id is this socket's, not the worker's name: two processes
  // given the same --name must not make the ROUTER refuse one of them.
  dealer.set(zmq::sockopt::routing_id,
             options.name + "#" + std::to_string(::getpid()) + "." + std::to_string(instance));
  dealer.set(zmq::sockopt::maxmsgsize, security::kMaxMessageBytes);
  dealer.set(zmq::sockopt::reconnect_ivl_max,
             static_cast<int>(std::max<int64_t>(100, options.heartbeat_interval_ms)));
  if (options.curve) security::ConfigureClient(dealer, *options.curve);
  protocol::HandshakeMonitor monitor(
      context, dealer, "worker-" + std::to_string(::getpid()) + "-" + std::to_string(instance));
  dealer.connect(options.connect);

  const int64_t gpus =
      options.announce_gpus >= 0 ? options.announce_gpus : (options.device.cuda() ? 1 : 0);
  const protocol::Ready ready{
      options.name, options.announce_cores > 0 ? options.announce_cores : AvailableCores(), gpus};
  // READY goes out when the worker is idle and the socket takes it (a
  // refused handshake leaves no peer to queue it for: retried each turn).
  bool welcomed = false, ready_pending = true, first_ready = true;
  std::string benchmark_spec;
  const auto started = Clock::now();
  Clock::time_point last_heard = started, next_heartbeat = started + interval, ready_sent = started;
  bool said_silent = false;

  while (!stopped()) {
    zmq::pollitem_t items[] = {{dealer.handle(), 0, ZMQ_POLLIN, 0},
                               {done_rx.handle(), 0, ZMQ_POLLIN, 0},
                               {monitor.socket().handle(), 0, ZMQ_POLLIN, 0}};
    protocol::Poll(items, 3, std::max(std::chrono::milliseconds(1), interval / 4));
    const auto now = Clock::now();
    while (auto e = monitor.Next()) {
      if (e->event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED || e->event == ZMQ_EVENT_DISCONNECTED) continue;
      if (e->event == ZMQ_EVENT_CONNECT_RETRIED && welcomed)
        continue;  // the coordinator went away: said below
      why_log(options.connect + ": " + e->text);
    }
    if (items[1].revents & ZMQ_POLLIN) {
      zmq::message_t m;
      (void)done_rx.recv(m, zmq::recv_flags::dontwait);
    }
    for (Slot& slot : slots) {
      if (std::optional<Outcome> o = slot.runner->Take()) {
        // Reported only if it is still the trial the coordinator gave this
        // slot (a REJOIN in between means it requeued it).
        if (slot.Runs(o->trial, o->attempt)) {
          if (o->ok) {
            protocol::Send(dealer,
                           protocol::TrialResult{o->trial, o->attempt, std::move(o->metrics)});
            ++stats.trials;
          } else {
            protocol::Send(dealer, protocol::TrialFailure{o->trial, o->attempt, o->error});
          }
          next_heartbeat = now + interval;
        }
        slot.trial = slot.attempt = 0;
      }
      // A sample's report: sent once, and again each interval until its
      // decision comes (a message may be dropped; the coordinator answers a
      // repeat with the decision it took).
      if (std::optional<PendingReport> p = slot.runner->Pending();
          p && slot.Runs(p->trial, p->attempt)) {
        if (p->step != slot.report_step || now - slot.report_sent > interval) {
          protocol::Send(
              dealer, protocol::StepReport{p->trial, p->attempt, p->step, std::move(p->metrics)});
          slot.report_step = p->step;
          slot.report_sent = now;
        }
      }
    }
    if (ready_pending && !busy() && protocol::Send(dealer, ready)) {
      ready_pending = false;
      ready_sent = now;
      stats.rejoins += !first_ready;
      first_ready = false;
    }
    while (auto frames = protocol::ReceiveFrames(dealer, false)) {
      if (!frames->ok()) {
        ++stats.dropped;
        drop_log("dropped a message from the coordinator: " + frames->status().message());
        continue;
      }
      auto parsed = protocol::ParseFromCoordinator(frames->value());
      if (!parsed.ok()) {
        ++stats.dropped;
        drop_log("dropped a message from the coordinator: " + parsed.status().message());
        // A TRIAL we cannot read but whose ids we can: fail it, so the
        // coordinator does not wait for it forever.
        if (auto ids = frames->value().command == protocol::kTrial
                           ? protocol::ReadableTrialIds(frames->value())
                           : std::nullopt)
          protocol::Send(dealer, protocol::TrialFailure{
                                     ids->first, ids->second,
                                     "worker " + options.name + ": " + parsed.status().message()});
        continue;
      }
      last_heard = now;
      if (said_silent) log("the coordinator at " + options.connect + " answers again");
      said_silent = false;
      const auto& m = parsed.value();
      if (std::holds_alternative<protocol::Done>(m)) {
        stats.done = true;
        return stats;
      }
      if (auto* w = std::get_if<protocol::Welcome>(&m)) {
        // A benchmark the worker's --device cannot run: leave now, before any
        // trial, rather than fail every trial or run it elsewhere. A defaulted
        // device falls back to the CPU for a CPU-only benchmark.
        device = options.device;
        if (Status s = CheckBenchmarkDevice(w->benchmark.value("name", ""), device); !s.ok()) {
          if (options.device_given) {
            stats.refused = s.message();
            return stats;
          }
          device = Device::Cpu();
          log("no --device given: " + s.message().substr(0, s.message().find(';')) +
              ", so its trials run on the CPU");
        }
        benchmark_spec = w->benchmark.dump();
        // Never more trials than the cores we announced (a coordinator's
        // Concurrency never asks for more; a wrong one does not get 1024 threads).
        slot_count = std::min(w->slots, std::max<int64_t>(1, ready.cores));
        // Likewise never more threads per trial than those cores.
        threads = options.threads > 0
                      ? options.threads
                      : static_cast<int>(std::min(w->threads, std::max<int64_t>(1, ready.cores)));
        while (static_cast<int64_t>(slots.size()) < slot_count)
          slots.push_back(Slot{std::make_unique<TrialRunner>(context, registry, pipe)});
        welcomed = true;
      } else if (auto* t = std::get_if<protocol::TrialRequest>(&m)) {
        // A repeated TRIAL of an attempt we run is dropped: running it twice
        // side by side would be wrong, and a FAILED would fail the attempt.
        bool repeated = false;
        for (const Slot& slot : slots) repeated |= slot.Runs(t->trial, t->attempt);
        if (repeated) {
          drop_log("ignored a repeated TRIAL of trial " + std::to_string(t->trial) + " attempt " +
                   std::to_string(t->attempt) + ": it is running");
          continue;
        }
        std::string refuse;
        Slot* free = nullptr;
        for (int64_t i = 0; welcomed && i < slot_count && !free; ++i)
          if (!slots[i].trial && !slots[i].runner->busy()) free = &slots[i];
        if (!welcomed) {
          refuse = "TRIAL before WELCOME: no benchmark to run it on";
        } else if (!free) {
          refuse = "busy with";
          for (int64_t i = 0; i < slot_count; ++i)
            refuse += (i ? ", trial " : " trial ") + std::to_string(slots[i].trial);
          refuse += " (" + std::to_string(slot_count) + " slots)";
        }
        if (!refuse.empty()) {
          drop_log("refused trial " + std::to_string(t->trial) + ": " + refuse);
          protocol::Send(dealer, protocol::TrialFailure{t->trial, t->attempt,
                                                        "worker " + options.name + ": " + refuse});
          continue;
        }
        free->trial = t->trial;
        free->attempt = t->attempt;
        free->report_step = 0;
        free->runner->Submit(Job{t->trial, t->attempt, t->maskers.dump(), benchmark_spec, t->report,
                                 device, threads});
      } else if (auto* d = std::get_if<protocol::Decision>(&m)) {
        for (Slot& slot : slots)
          if (slot.Runs(d->trial, d->attempt))
            slot.runner->Decide(d->trial, d->attempt, d->step, d->stop);
      } else if (std::holds_alternative<protocol::Rejoin>(m)) {
        // The coordinator does not know us (it restarted, or gave us up while
        // we were paused): introduce ourselves once the trial in flight is over.
        // REJOINs answering what we sent before our READY arrive before its
        // WELCOME (one connection keeps order): while a READY is that fresh,
        // they are already answered.
        if (!welcomed && !ready_pending &&
            now - ready_sent < protocol::kHeartbeatLiveness * interval)
          continue;
        welcomed = false;
        for (Slot& slot : slots) {
          slot.trial = slot.attempt = 0;
          slot.runner->Abandon();  // a trial waiting on a decision stops at once
        }
        if (!ready_pending) log("the coordinator does not know us: joining again");
        ready_pending = true;  // sent at the top of the next turn, once idle
      }
    }
    if (now >= next_heartbeat) {
      protocol::Send(dealer, protocol::Heartbeat{});
      next_heartbeat = now + interval;
    }
    if (!welcomed && now - ready_sent > std::chrono::milliseconds(options.welcome_timeout_ms) &&
        now - last_heard > std::chrono::milliseconds(options.welcome_timeout_ms))
      why_log("no answer from " + options.connect + " in " + Seconds(options.welcome_timeout_ms) +
              ": not running, or our key is not in its authorized_workers (retrying)");
    if (welcomed && !said_silent && now - last_heard > protocol::kHeartbeatLiveness * interval) {
      log("the coordinator at " + options.connect + " is silent; waiting for it (giving up after " +
          Seconds(options.give_up_after_ms) + ")");
      said_silent = true;
    }
    if (now - last_heard > std::chrono::milliseconds(options.give_up_after_ms))
      return Status::Error("no answer from " + options.connect + " for " +
                           Seconds(options.give_up_after_ms) + ": giving up");
  }
  if (options.on_stop_busy && busy()) {
    std::string running;
    for (const Slot& slot : slots)
      if (slot.trial) running += (running.empty() ? "" : ", ") + std::to_string(slot.trial);
    log("stopped with trial " + (running.empty() ? std::string("(none assigned)") : running) +
        " in flight: abandoned, the coordinator requeues it");
    options.on_stop_busy();
  }
  return stats;
}

}  // namespace masktune
