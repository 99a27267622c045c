#include "coordinator/coordinator.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>

#include "protocol/throttled_log.h"
#include "search/objective.h"
#include "search/plan.h"
#include "search/tpe.h"

namespace masktune {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A lease outlives a few missed renewals (one per heartbeat), and never less than 5 s.
double LeaseSeconds(int64_t heartbeat_interval_ms) {
  return std::max(5.0, 10.0 * static_cast<double>(heartbeat_interval_ms) / 1000.0);
}

std::string Describe(const storage::Lease& l) {
  char until[64];
  std::snprintf(until, sizeof until, "%.0f s", std::max(0.0, l.expires - UnixNow()));
  return l.holder + " (host " + l.host + ", pid " + std::to_string(l.pid) + ", lease expires in " +
         until + ")";
}

struct WorkerState {
  std::string name;
  Clock::time_point last_seen;
  std::map<int64_t, int64_t> running;  // trial -> attempt: what it runs now
  // What it announced (READY), and the trials it runs at once under the
  // sweep's resources (ResourcesSpec::Concurrency; 0: none fits).
  int64_t cores = 0, gpus = 0, slots = 0;
  std::string Runs() const {
    if (running.empty()) return "nothing";
    std::string s;
    for (const auto& [trial, attempt] : running)
      s += (s.empty() ? "trial " : ", trial ") + std::to_string(trial) + " attempt " +
           std::to_string(attempt);
    return s;
  }
  bool Runs(int64_t trial, int64_t attempt) const {
    auto it = running.find(trial);
    return it != running.end() && it->second == attempt;
  }
};

// A trial handed to a worker: what TPE's history and the scheduler need.
struct Dispatched {
  std::string stack;
  int64_t number = 0;
  search::TrialParams params;
};

// The loop's state and its handlers. One per RunCoordinator call.
class Coordinator {
 public:
  Coordinator(zmq::context_t& context, storage::Store& store, int64_t study,
              const configs::SweepConfig& sweep, const MaskerRegistry& registry,
              const CoordinatorOptions& options)
      : context_(context),
        store_(store),
        study_(study),
        sweep_(sweep),
        registry_(registry),
        options_(options),
        interval_(options.heartbeat_interval_ms),
        plans_(search::PlanSweep(sweep)),
        tpe_(sweep.search.algorithm == "tpe"),
        scheduler_(search::CreateScheduler(sweep.search.scheduler, sweep.search.seed)),
        router_(context, zmq::socket_type::router),
        log_(options.log
                 ? options.log
                 : [](const std::string&
                          l) { std::fprintf(stderr, "masktune coordinator: %s\n", l.c_str()); }),
        refusal_log_(log_),
        drop_log_(log_) {
    for (const auto& p : plans_) plan_of_[p.stack->name] = &p;
  }

  Result<CoordinatorStats> Run() {
    if (Status bound = Bind(); !bound.ok()) {
      // Nothing ran: the study is not held by anyone (status must not say running).
      (void)store_.SetStudyStatus(study_, "interrupted");
      (void)ReleaseLease();
      return bound;
    }
    MT_RETURN_IF_ERROR(Load());
    Clock::time_point next_heartbeat = Clock::now() + interval_;
    while (true) {
      zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0},
                                 {monitor_->socket().handle(), 0, ZMQ_POLLIN, 0}};
      protocol::Poll(items, 2, std::max(std::chrono::milliseconds(1), interval_ / 2));
      if (options_.interrupt && options_.interrupt->load())
        return Interrupt(options_.interrupt->load());
      const auto now = Clock::now();
      changed_ = false;
      LogHandshakes();
      MT_RETURN_IF_ERROR(store_.Begin());
      while (auto frames = protocol::ReceiveFrames(router_, true, &last_identity_))
        MT_RETURN_IF_ERROR(OnMessage(*frames, now));
      MT_RETURN_IF_ERROR(PurgeSilent(now));
      MT_RETURN_IF_ERROR(Dispatch(now));
      const bool heartbeat = now >= next_heartbeat;
      if (heartbeat) MT_RETURN_IF_ERROR(RenewLease());
      const bool finished = Settled();
      if (finished) MT_RETURN_IF_ERROR(store_.SetStudyStatus(study_, "finished"));
      MT_RETURN_IF_ERROR(store_.Commit());
      // Only now, with the state durable, act on it.
      Flush();
      if (heartbeat) {
        for (auto& [id, w] : workers_) protocol::Send(router_, protocol::Heartbeat{}, id);
        next_heartbeat = now + interval_;
      }
      if (changed_ && options_.on_progress) options_.on_progress(progress_);
      if (finished) return Finish();
    }
  }

 private:
  Status Bind() {
    router_.set(zmq::sockopt::linger, 0);
    router_.set(zmq::sockopt::router_mandatory, false);
    // A worker's socket reconnecting (after a network blip) takes over its
    // routing id even while the old, half-open connection is still here.
    router_.set(zmq::sockopt::router_handover, true);
    router_.set(zmq::sockopt::maxmsgsize, security::kMaxMessageBytes);
    if (options_.curve) {
      try {
        auth_ = std::make_unique<security::Authenticator>(context_, options_.curve->allowed);
      } catch (const zmq::error_t& e) {
        return Status::Error(std::string("cannot start the CURVE authenticator: ") + e.what());
      }
      security::ConfigureServer(router_, *options_.curve);
    }
    static std::atomic<int64_t> monitors{0};
    monitor_ = std::make_unique<protocol::HandshakeMonitor>(
        context_, router_,
        "coordinator-" + std::to_string(::getpid()) + "-" + std::to_string(monitors++));
    try {
      router_.bind(options_.bind);
    } catch (const zmq::error_t& e) {
      return Status::Error("cannot bind " + options_.bind + ": " + e.what());
    }
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
    if (options_.on_bound) options_.on_bound(endpoint_);
    return Status::Ok();
  }

  // Counts kept in memory, from the database once (a GROUP BY per turn would
  // cost O(trials) each time), and TPE's history per stack.
  Status Load() {
    MT_ASSIGN_OR_RETURN(progress_, store_.GetProgress(study_));
    int64_t planned = 0;
    for (const auto& p : plans_) planned += p.trials;
    progress_.total = std::max(progress_.total, planned);  // TPE creates its trials as it goes
    if (scheduler_) {
      // The scheduler's state, exactly as the stored reports left it.
      int64_t mismatches = 0;
      MT_ASSIGN_OR_RETURN(scheduler_, RebuildScheduler(store_, study_, sweep_, &mismatches));
      if (mismatches > 0)
        log_("the scheduler's replayed decisions differ from " + std::to_string(mismatches) +
             " stored ones (was the sweep's scheduler edited with --extend?)");
    }
    if (!tpe_) return Status::Ok();
    for (const auto& p : plans_) {
      MT_ASSIGN_OR_RETURN(stacks_[p.stack->name].id,
                          store_.AddStack(study_, p.stack->name, static_cast<int64_t>(p.index)));
    }
    MT_ASSIGN_OR_RETURN(auto rows, store_.Trials(study_));
    for (const auto& r : rows) {
      StackState& st = stacks_[r.stack];
      st.created = std::max(st.created, r.number + 1);
      if ((r.status == "done" || r.status == "pruned") && r.objective) {
        auto params = search::ParamsFromJson(r.params);
        if (params.ok())
          st.history.push_back(
              {std::move(params).value(), *r.objective, r.status == "pruned", r.steps});
      }
    }
    return Status::Ok();
  }

  // --- counters: every change of a trial's status goes through one of these.
  void CountRequeued(int64_t n) {
    progress_.running -= n;
    progress_.queued += n;
    changed_ = true;
  }
  void CountStarted() {
    --progress_.queued;
    ++progress_.running;
    changed_ = true;
  }
  void CountPruned() {
    --progress_.running;
    ++progress_.pruned;
    changed_ = true;
  }
  void CountSettled(bool done, bool failed_for_good) {
    --progress_.running;
    ++(done ? progress_.done : failed_for_good ? progress_.failed : progress_.queued);
    changed_ = true;
  }

  // The worker's running trials go back to the queue (it died, restarted or was replaced).
  Status Release(WorkerState& w) {
    if (w.running.empty()) return Status::Ok();
    MT_ASSIGN_OR_RETURN(int64_t n, store_.Requeue(study_, w.name));
    stats_.requeued += n;
    CountRequeued(n);
    w.running.clear();
    return Status::Ok();
  }

  void Drop(const std::string& identity, const std::string& why) {
    ++stats_.malformed;
    auto it = workers_.find(identity);
    drop_log_("dropped a message from " +
              (it != workers_.end() ? "worker " + it->second.name : "an unknown peer") + ": " +
              why);
  }

  Status OnMessage(const Result<protocol::Frames>& frames, Clock::time_point now) {
    const std::string identity = frames.ok() ? frames->identity : last_identity_;
    auto known = workers_.find(identity);
    if (known != workers_.end()) known->second.last_seen = now;  // any message is a sign of life
    if (!frames.ok()) {
      Drop(identity, frames.status().message());
      return Status::Ok();
    }
    auto parsed = protocol::ParseFromWorker(frames.value());
    if (!parsed.ok()) {
      Drop(identity, parsed.status().message());
      // A busy worker's broken report would leave its trial running forever:
      // the attempt it names fails, with the reason; when it names none that
      // the worker runs, every trial it runs fails (which one it meant is
      // unknown).
      if (known == workers_.end() || known->second.running.empty() ||
          (frames->command != protocol::kResult && frames->command != protocol::kFailed))
        return Status::Ok();
      WorkerState& w = known->second;
      const std::string why =
          "worker " + w.name + " sent a malformed report: " + parsed.status().message();
      if (auto ids = protocol::ReadableTrialIds(frames.value());
          ids && w.Runs(ids->first, ids->second))
        return Settle(w, ids->first, ids->second, nullptr, why);
      const auto running = w.running;
      for (const auto& [trial, attempt] : running)
        MT_RETURN_IF_ERROR(Settle(w, trial, attempt, nullptr, why));
      return Status::Ok();
    }
    if (auto* ready = std::get_if<protocol::Ready>(&parsed.value()))
      return OnReady(identity, *ready, now);
    if (known == workers_.end()) {
      // A peer we do not know (we restarted, or purged it while it was
      // paused): it must introduce itself again.
      ++stats_.rejoins;
      outbox_.push_back({identity, protocol::Rejoin{}});
      return Status::Ok();
    }
    WorkerState& w = known->second;
    if (auto* r = std::get_if<protocol::TrialResult>(&parsed.value()))
      return OnReport(w, r->trial, r->attempt, &r->metrics, "");
    if (auto* f = std::get_if<protocol::TrialFailure>(&parsed.value()))
      return OnReport(w, f->trial, f->attempt, nullptr, f->error);
    if (auto* r = std::get_if<protocol::StepReport>(&parsed.value()))
      return OnStep(identity, w, *r);
    return Status::Ok();  // HEARTBEAT: last_seen is all it does
  }

  Status OnReady(const std::string& identity, const protocol::Ready& ready, Clock::time_point now) {
    // The same name on another routing id is the same worker reconnected
    // (its old socket is gone): that one's trial is lost.
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (it->first != identity && it->second.name == ready.name) {
        MT_RETURN_IF_ERROR(Release(it->second));
        it = workers_.erase(it);
      } else {
        ++it;
      }
    }
    WorkerState& w = workers_[identity];
    MT_RETURN_IF_ERROR(Release(w));  // it restarted mid-trial: that attempt is lost
    const configs::ResourcesSpec& r = sweep_.resources;
    w = WorkerState{ready.name,  now,        {},
                    ready.cores, ready.gpus, r.Concurrency(ready.gpus, ready.cores)};
    if (std::string misfit = r.Misfit(ready.gpus, ready.cores); !misfit.empty())
      log_("worker " + ready.name + " gets no trials: " + misfit);
    MT_RETURN_IF_ERROR(store_.TouchWorker(
        study_, w.name,
        json{{"name", ready.name}, {"cores", ready.cores}, {"gpus", ready.gpus}}.dump()));
    outbox_.push_back({identity, protocol::Welcome{sweep_.study, sweep_.benchmark.ToJson(),
                                                   std::max<int64_t>(1, w.slots),
                                                   r.ThreadsPerTrial(ready.gpus, ready.cores)}});
    changed_ = true;
    return Status::Ok();
  }

  Status OnReport(WorkerState& w, int64_t trial, int64_t attempt, const Metrics* metrics,
                  const std::string& error) {
    if (!w.Runs(trial, attempt)) {
      ++stats_.malformed;  // not a trial this worker runs (stale or wrong): ignored
      drop_log_("ignored a report from worker " + w.name + " for trial " + std::to_string(trial) +
                " attempt " + std::to_string(attempt) + ": it runs " + w.Runs());
      return Status::Ok();
    }
    return Settle(w, trial, attempt, metrics, error);
  }

  // A scheduled trial's report after a sample: stored with the scheduler's
  // decision, answered with DECISION. A stopped trial is settled here (pruned,
  // or done at max_t); its worker stays busy until its RESULT, which then
  // changes nothing. A repeated report gets the stored decision again.
  Status OnStep(const std::string& identity, WorkerState& w, const protocol::StepReport& r) {
    if (!w.Runs(r.trial, r.attempt)) {
      ++stats_.malformed;
      drop_log_("ignored a report from worker " + w.name + " for trial " + std::to_string(r.trial) +
                " attempt " + std::to_string(r.attempt) + ": it runs " + w.Runs());
      return Status::Ok();
    }
    auto running = dispatched_.find(r.trial);
    bool stop = false;
    if (scheduler_ && running != dispatched_.end()) {
      const double objective = search::ObjectiveValue(sweep_.objective, r.metrics);
      MT_ASSIGN_OR_RETURN(std::optional<std::string> earlier,
                          store_.ReportDecision(r.trial, r.attempt, r.step));
      if (earlier) {
        stop = *earlier == "stop";
      } else {
        const Dispatched& d = running->second;
        stop = scheduler_->OnReport(d.stack, r.trial, d.number, r.step, objective);
        MT_RETURN_IF_ERROR(store_
                               .AddReport(r.trial, r.attempt, r.step, r.metrics, objective,
                                          stop ? "stop" : "continue")
                               .status());
        ++stats_.reports;
        if (stop) MT_RETURN_IF_ERROR(SettleStopped(r, objective, d));
      }
    }
    outbox_.push_back({identity, protocol::Decision{r.trial, r.attempt, r.step, stop}});
    return Status::Ok();
  }

  // A trial the scheduler stopped: done when it reached max_t, else pruned.
  Status SettleStopped(const protocol::StepReport& r, double objective, const Dispatched& d) {
    const bool complete = r.step >= scheduler_->max_t();
    MT_ASSIGN_OR_RETURN(
        bool recorded, complete
                           ? store_.RecordResult(r.trial, r.attempt, r.metrics, objective, r.step)
                           : store_.RecordPruned(r.trial, r.attempt, r.step, r.metrics, objective));
    if (!recorded) return Status::Ok();
    if (complete) {
      ++stats_.results;
      CountSettled(true, false);
    } else {
      ++stats_.pruned;
      CountPruned();
    }
    if (tpe_) stacks_[d.stack].history.push_back({d.params, objective, !complete, r.step});
    return Status::Ok();
  }

  Status Settle(WorkerState& w, int64_t trial, int64_t attempt, const Metrics* metrics,
                const std::string& error) {
    if (metrics) {
      const double objective = search::ObjectiveValue(sweep_.objective, *metrics);
      MT_ASSIGN_OR_RETURN(bool recorded, store_.RecordResult(trial, attempt, *metrics, objective));
      stats_.results += recorded;
      if (recorded) {
        CountSettled(true, false);
        if (tpe_ && dispatched_.count(trial)) {
          const Dispatched& d = dispatched_[trial];
          stacks_[d.stack].history.push_back({d.params, objective});
        }
      }
    } else {
      MT_ASSIGN_OR_RETURN(bool recorded,
                          store_.RecordFailure(trial, attempt, error, sweep_.search.max_failures));
      ++stats_.failures;
      if (recorded) CountSettled(false, attempt >= sweep_.search.max_failures);
    }
    dispatched_.erase(trial);
    w.running.erase(trial);
    changed_ = true;
    return Status::Ok();
  }

  // Silent workers lose their trials.
  Status PurgeSilent(Clock::time_point now) {
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (now - it->second.last_seen > protocol::kHeartbeatLiveness * interval_) {
        MT_RETURN_IF_ERROR(Release(it->second));
        it = workers_.erase(it);
        changed_ = true;
      } else {
        ++it;
      }
    }
    return Status::Ok();
  }

  int64_t Running() const {
    int64_t n = 0;
    for (const auto& [id, w] : workers_) n += static_cast<int64_t>(w.running.size());
    return n;
  }

  // TPE: the next trial of the stack furthest behind, from its history.
  Status SuggestIfNeeded() {
    if (!tpe_ || progress_.queued > 0) return Status::Ok();
    const search::StackPlan* next = nullptr;
    for (const auto& p : plans_) {
      const StackState& st = stacks_[p.stack->name];
      if (st.created < p.trials && (!next || st.created < stacks_[next->stack->name].created))
        next = &p;
    }
    if (!next) return Status::Ok();
    StackState& st = stacks_[next->stack->name];
    MT_RETURN_IF_ERROR(store_.AddTrial(
        st.id, st.created,
        search::ParamsToJson(search::SuggestTpe(sweep_, *next, st.created, st.history))));
    ++st.created;
    ++progress_.queued;
    return Status::Ok();
  }

  // Workers with a free slot get trials, written as running before they are
  // sent: one per worker per pass, so a queue shorter than the slots is
  // spread over the workers rather than piled on the first.
  Status Dispatch(Clock::time_point now) {
    MT_RETURN_IF_ERROR(FailIfNoneFits(now));
    const int64_t max_running = sweep_.search.max_concurrent_trials;
    int64_t running = Running();
    for (bool gave = true; gave;) {
      gave = false;
      for (auto& [id, w] : workers_) {
        if (static_cast<int64_t>(w.running.size()) >= w.slots) continue;
        if (max_running > 0 && running >= max_running) return Status::Ok();
        MT_RETURN_IF_ERROR(SuggestIfNeeded());
        if (progress_.queued == 0) return Status::Ok();
        MT_ASSIGN_OR_RETURN(auto trial, store_.StartNext(study_, w.name));
        if (!trial) return Status::Ok();
        CountStarted();
        gave = true;
        MT_ASSIGN_OR_RETURN(bool sent, Send(id, w, *trial));
        running += sent;
      }
    }
    return Status::Ok();
  }

  // A trial StartNext gave `w`: its masker list goes out as TRIAL (true), or,
  // when its stored parameters do not make one (only a damaged database
  // does that), it fails for good (false).
  Result<bool> Send(const std::string& id, WorkerState& w, const storage::TrialRow& trial) {
    auto params = search::ParamsFromJson(trial.params);
    auto configs = params.ok()
                       ? search::Materialize(registry_, *plan_of_.at(trial.stack), params.value())
                       : Result<std::vector<MaskerConfig>>(params.status());
    if (!configs.ok()) {
      MT_RETURN_IF_ERROR(FailStarted(trial, configs.status().message()));
      return false;
    }
    json maskers = json::array();
    for (const MaskerConfig& c : configs.value()) {
      json m = {{"type", c.type}};
      for (const auto& [f, v] : c.values) m[f] = FieldValueToJson(v);
      maskers.push_back(m);
    }
    w.running[trial.id] = trial.attempts;
    dispatched_[trial.id] = {trial.stack, trial.number, params.value()};
    outbox_.push_back({id, protocol::TrialRequest{trial.id, trial.attempts, trial.stack,
                                                  std::move(maskers), scheduler_ != nullptr}});
    return true;
  }

  // A trial just started (StartNext) that cannot run: failed for good, with `why`.
  Status FailStarted(const storage::TrialRow& trial, const std::string& why) {
    MT_RETURN_IF_ERROR(store_.RecordFailure(trial.id, trial.attempts, why, 1).status());
    CountSettled(false, true);
    return Status::Ok();
  }

  // Workers are connected but none fits the sweep's resources: after
  // resources.no_fit_timeout_s of that, the queued trials fail for good with
  // the reason (a GPU sweep whose workers all came up without a GPU would
  // otherwise wait forever). With no worker at all the study waits: workers
  // may still be starting.
  Status FailIfNoneFits(Clock::time_point now) {
    bool fits = workers_.empty();
    for (const auto& [id, w] : workers_) fits |= w.slots > 0;
    if (fits || (progress_.queued == 0 && AllCreated())) {
      unfit_since_.reset();
      return Status::Ok();
    }
    if (!unfit_since_) unfit_since_ = now;
    const configs::ResourcesSpec& r = sweep_.resources;
    if (now - *unfit_since_ < std::chrono::seconds(r.no_fit_timeout_s)) return Status::Ok();
    std::string seen;
    for (const auto& [id, w] : workers_)
      seen += (seen.empty() ? "" : "; ") + w.name + ": " + r.Misfit(w.gpus, w.cores);
    const std::string why = "no worker fits the sweep's resources after " +
                            std::to_string(r.no_fit_timeout_s) +
                            " s (resources.no_fit_timeout_s): " + seen;
    log_(why + "; failing the queued trials");
    while (true) {
      MT_RETURN_IF_ERROR(SuggestIfNeeded());
      if (progress_.queued == 0) break;
      MT_ASSIGN_OR_RETURN(auto trial, store_.StartNext(study_, ""));
      if (!trial) break;
      CountStarted();
      MT_RETURN_IF_ERROR(FailStarted(*trial, why));
      ++stats_.failures;
    }
    return Status::Ok();
  }

  // Every trial of the plan exists in the store (TPE creates them as it goes).
  bool AllCreated() {
    bool all_created = true;
    if (tpe_)
      for (const auto& p : plans_) all_created &= stacks_[p.stack->name].created >= p.trials;
    return all_created;
  }

  bool Settled() { return progress_.queued == 0 && progress_.running == 0 && AllCreated(); }

  Status RenewLease() {
    if (options_.lease.holder.empty()) return Status::Ok();
    Status s = store_.RenewLease(study_, options_.lease.holder,
                                 UnixNow() + LeaseSeconds(options_.heartbeat_interval_ms));
    if (!s.ok())
      return Status::Error("lost the study's lease (another coordinator took over?): " +
                           s.message());
    return Status::Ok();
  }

  void Flush() {
    for (auto& [id, msg] : outbox_) protocol::Send(router_, msg, id);
    outbox_.clear();
  }

  void LogHandshakes() {
    while (auto e = monitor_->Next()) {
      if (e->event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL ||
          e->event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
        ++stats_.handshake_failures;
        refusal_log_("refused a connection on " + endpoint_ + ": " + e->text);
      }
      // ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: the Authenticator logged it, with the key.
    }
  }

  Status ReleaseLease() {
    if (options_.lease.holder.empty()) return Status::Ok();
    return store_.ReleaseLease(study_, options_.lease.holder);
  }

  // Every trial is settled: DONE to every worker, then linger (tcp only) so a
  // worker that was paused, or reconnecting, when DONE went out still hears it.
  Result<CoordinatorStats> Finish() {
    MT_RETURN_IF_ERROR(ReleaseLease());
    for (auto& [id, w] : workers_) protocol::Send(router_, protocol::Done{}, id);
    const bool remote = options_.bind.rfind("inproc://", 0) != 0;
    const auto until = Clock::now() + (remote ? options_.linger_intervals : 0) * interval_;
    while (Clock::now() < until) {
      zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0}};
      protocol::Poll(items, 1,
                     std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()) +
                         std::chrono::milliseconds(1));
      if (options_.interrupt && options_.interrupt->load()) break;
      LogHandshakes();
      while (auto frames = protocol::ReceiveFrames(router_, true, &last_identity_))
        protocol::Send(router_, protocol::Done{}, last_identity_);
    }
    if (auth_) stats_.refused = auth_->refused();
    return stats_;
  }

  // A signal: the running trials go back to the queue with their attempt
  // refunded (the stop was ours, not the trial's), the study is marked
  // interrupted, and `resume` continues from there.
  Result<CoordinatorStats> Interrupt(int signal) {
    MT_RETURN_IF_ERROR(store_.Begin());
    MT_ASSIGN_OR_RETURN(int64_t n, store_.Requeue(study_, "", /*refund_attempt=*/true));
    stats_.requeued += n;
    MT_RETURN_IF_ERROR(store_.SetStudyStatus(study_, "interrupted"));
    MT_RETURN_IF_ERROR(ReleaseLease());
    MT_RETURN_IF_ERROR(store_.Commit());
    stats_.interrupted_by = signal;
    if (auth_) stats_.refused = auth_->refused();
    return stats_;
  }

  zmq::context_t& context_;
  storage::Store& store_;
  const int64_t study_;
  const configs::SweepConfig& sweep_;
  const MaskerRegistry& registry_;
  const CoordinatorOptions& options_;
  const std::chrono::milliseconds interval_;
  const std::vector<search::StackPlan> plans_;
  const bool tpe_;
  std::unique_ptr<search::Scheduler> scheduler_;  // null: no early stopping
  std::map<std::string, const search::StackPlan*> plan_of_;
  std::unique_ptr<security::Authenticator> auth_;  // before router_: outlives it
  zmq::socket_t router_;
  std::unique_ptr<protocol::HandshakeMonitor> monitor_;
  std::function<void(const std::string&)> log_;
  protocol::ThrottledLog refusal_log_, drop_log_;

  std::map<std::string, WorkerState> workers_;  // by routing id
  CoordinatorStats stats_;
  storage::Progress progress_;
  bool changed_ = false;
  std::string last_identity_;
  std::string endpoint_;  // as bound (tcp://host:* resolved)
  struct StackState {
    int64_t id = 0, created = 0;
    std::vector<search::Observation> history;
  };
  std::map<std::string, StackState> stacks_;
  std::map<int64_t, Dispatched> dispatched_;  // running trials, by id
  // Since when workers are connected and none fits the resources (unset: one fits).
  std::optional<Clock::time_point> unfit_since_;
  std::vector<std::pair<std::string, protocol::FromCoordinator>> outbox_;
};

}  // namespace

storage::Lease ThisProcessLease(int64_t heartbeat_interval_ms) {
  storage::Lease l;
  l.host = storage::ThisHost();
  l.pid = ::getpid();
  l.holder = l.host + ":" + std::to_string(l.pid);
  l.expires = UnixNow() + LeaseSeconds(heartbeat_interval_ms);
  return l;
}

Status CheckSamePlan(const std::string& stored, const std::string& fresh) {
  if (stored.empty() || stored == fresh) return Status::Ok();
  const json a = json::parse(stored, nullptr, false), b = json::parse(fresh, nullptr, false);
  std::string parts;
  for (const char* part : {"benchmark", "objective", "search", "stacks"}) {
    const bool differs =
        a.is_discarded() || !a.is_object() || !a.contains(part) || a[part] != b[part];
    if (differs) parts += std::string(parts.empty() ? "" : ", ") + part;
  }
  if (parts.empty()) return Status::Ok();
  return Status::Error(
      "the sweep file changed since the study was created (" + parts +
      " differ): pass --extend to continue the study with the new plan (its trials are kept), "
      "or give the study a new name (`study:` in the file)");
}

Result<int64_t> PrepareStudy(storage::Store& store, const configs::SweepConfig& sweep,
                             const std::string& sweep_text, const PrepareOptions& options) {
  const std::string fingerprint = configs::PlanFingerprintText(sweep);
  MT_RETURN_IF_ERROR(store.Begin());
  // Anything that returns early below must not leave the transaction open.
  auto fail = [&](Status s) {
    (void)store.Commit();  // nothing was changed, or only a new study row
    return s;
  };
  auto existing = store.FindStudy(sweep.study);
  if (!existing.ok()) return fail(existing.status());
  int64_t study;
  if (existing.value()) {
    study = existing.value()->id;
  } else {
    auto created = store.CreateStudy(sweep.study, sweep.path, sweep_text, fingerprint);
    if (!created.ok()) return fail(created.status());
    study = created.value();
  }
  if (!options.lease.holder.empty()) {
    auto holder = store.AcquireLease(study, options.lease);
    if (!holder.ok()) return fail(holder.status());
    if (holder.value() &&
        storage::HolderGoneFromThisHost(*holder.value())) {  // killed: its lease is ours to take
      Status released = store.ReleaseLease(study, holder.value()->holder);
      if (!released.ok()) return fail(released);
      holder = store.AcquireLease(study, options.lease);
      if (!holder.ok()) return fail(holder.status());
    }
    if (holder.value())
      return fail(Status::Error("study '" + sweep.study +
                                "' is being run by another coordinator: " +
                                Describe(*holder.value()) + "; wait for it, or stop it first"));
  }
  if (existing.value()) {
    if (Status same = CheckSamePlan(existing.value()->fingerprint, fingerprint);
        !same.ok() && !options.extend)
      return fail(same);
    if (existing.value()->fingerprint != fingerprint ||
        existing.value()->sweep_text != sweep_text) {
      Status s = store.UpdateStudySweep(study, sweep.path, sweep_text, fingerprint);
      if (!s.ok()) return fail(s);
    }
    auto requeued = store.Requeue(study, "");  // running trials of a dead run
    if (!requeued.ok()) return fail(requeued.status());
    MT_RETURN_IF_ERROR(store.SetStudyStatus(study, "running"));
  }
  // Trials are a pure function of their number: queueing them again is a no-op.
  for (const search::StackPlan& plan : search::PlanSweep(sweep)) {
    MT_ASSIGN_OR_RETURN(int64_t stack,
                        store.AddStack(study, plan.stack->name, static_cast<int64_t>(plan.index)));
    if (sweep.search.algorithm == "tpe") continue;  // suggested one at a time, from results
    for (int64_t t = 0; t < plan.trials; ++t)
      MT_RETURN_IF_ERROR(
          store.AddTrial(stack, t, search::ParamsToJson(search::SampleBasic(sweep, plan, t))));
  }
  MT_RETURN_IF_ERROR(store.Commit());
  return study;
}

Result<std::unique_ptr<search::Scheduler>> RebuildScheduler(storage::Store& store, int64_t study,
                                                            const configs::SweepConfig& sweep,
                                                            int64_t* mismatches) {
  std::unique_ptr<search::Scheduler> scheduler =
      search::CreateScheduler(sweep.search.scheduler, sweep.search.seed);
  if (mismatches) *mismatches = 0;
  if (!scheduler) return scheduler;
  MT_ASSIGN_OR_RETURN(std::vector<storage::ReportRow> reports, store.Reports(study));
  for (const storage::ReportRow& r : reports) {
    const bool stop = scheduler->OnReport(r.stack, r.trial, r.number, r.step, r.objective);
    if (mismatches && stop != (r.decision == "stop")) ++*mismatches;
  }
  return scheduler;
}

Result<CoordinatorStats> RunCoordinator(zmq::context_t& context, storage::Store& store,
                                        int64_t study, const configs::SweepConfig& sweep,
                                        const MaskerRegistry& registry,
                                        const CoordinatorOptions& options) {
  Coordinator coordinator(context, store, study, sweep, registry, options);
  return coordinator.Run();
}

}  // namespace masktune
