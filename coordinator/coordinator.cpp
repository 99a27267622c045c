#include "coordinator/coordinator.h"

#include <chrono>
#include <cstdio>
#include <deque>
#include <map>

#include "protocol/protocol.h"
#include "search/objective.h"
#include "search/plan.h"
#include "search/tpe.h"

namespace masktune {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

struct WorkerState {
  std::string name;
  Clock::time_point last_seen;
  int64_t trial = 0, attempt = 0;  // trial 0: idle
};

}  // namespace

Result<int64_t> PrepareStudy(storage::Store& store, const configs::SweepConfig& sweep,
                             const std::string& sweep_text) {
  MT_RETURN_IF_ERROR(store.Begin());
  MT_ASSIGN_OR_RETURN(auto existing, store.FindStudy(sweep.study));
  int64_t study;
  if (existing) {
    study = existing->id;
    MT_RETURN_IF_ERROR(store.Requeue(study, "").status());  // running trials of a dead run
    MT_RETURN_IF_ERROR(store.SetStudyStatus(study, "running"));
  } else {
    MT_ASSIGN_OR_RETURN(study, store.CreateStudy(sweep.study, sweep.path, sweep_text));
  }
  // Trials are a pure function of their number: queueing them again is a no-op.
  for (const search::StackPlan& plan : search::PlanSweep(sweep)) {
    MT_ASSIGN_OR_RETURN(int64_t stack, store.AddStack(study, plan.stack->name,
                                                      static_cast<int64_t>(plan.index)));
    if (sweep.search.algorithm == "tpe") continue;  // suggested one at a time, from results
    for (int64_t t = 0; t < plan.trials; ++t)
      MT_RETURN_IF_ERROR(store.AddTrial(stack, t, search::ParamsToJson(search::SampleBasic(sweep, plan, t))));
  }
  MT_RETURN_IF_ERROR(store.Commit());
  return study;
}

Result<CoordinatorStats> RunCoordinator(zmq::context_t& context, storage::Store& store,
                                        int64_t study, const configs::SweepConfig& sweep,
                                        const MaskerRegistry& registry,
                                        const CoordinatorOptions& options) {
  std::unique_ptr<security::Authenticator> auth;
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::router_mandatory, false);
  router.set(zmq::sockopt::maxmsgsize, security::kMaxMessageBytes);
  if (options.curve) {
    try {
      auth = std::make_unique<security::Authenticator>(context, options.curve->allowed);
    } catch (const zmq::error_t& e) {
      return Status::Error(std::string("cannot start the CURVE authenticator: ") + e.what());
    }
    security::ConfigureServer(router, *options.curve);
  }
  try {
    router.bind(options.bind);
  } catch (const zmq::error_t& e) {
    return Status::Error("cannot bind " + options.bind + ": " + e.what());
  }
  if (options.on_bound) options.on_bound(router.get(zmq::sockopt::last_endpoint));
  const auto plans = search::PlanSweep(sweep);
  std::map<std::string, const search::StackPlan*> plan_of;
  for (const auto& p : plans) plan_of[p.stack->name] = &p;
  const json welcome = {{"study", sweep.study}, {"benchmark", sweep.benchmark.ToJson()}};
  const auto interval = std::chrono::milliseconds(options.heartbeat_interval_ms);
  const int64_t max_running = sweep.search.max_concurrent_trials;

  std::map<std::string, WorkerState> workers;  // by routing id
  CoordinatorStats stats;
  Clock::time_point next_heartbeat = Clock::now() + interval;
  int64_t running = 0;
  // Counts kept in memory, from the database once: a GROUP BY per turn would
  // cost O(trials) each time.
  MT_ASSIGN_OR_RETURN(storage::Progress progress, store.GetProgress(study));
  // TPE suggests each trial from the finished ones of its stack.
  const bool tpe = sweep.search.algorithm == "tpe";
  struct StackState {
    int64_t id = 0, created = 0;
    std::vector<search::Observation> history;
  };
  std::map<std::string, StackState> stacks;
  std::map<int64_t, std::pair<std::string, search::TrialParams>> dispatched;  // running trials
  int64_t planned = 0;
  for (const auto& p : plans) planned += p.trials;
  progress.total = std::max(progress.total, planned);  // TPE creates its trials as it goes
  if (tpe) {
    for (const auto& p : plans) {
      MT_ASSIGN_OR_RETURN(stacks[p.stack->name].id, store.AddStack(study, p.stack->name, static_cast<int64_t>(p.index)));
    }
    MT_ASSIGN_OR_RETURN(auto rows, store.Trials(study));
    for (const auto& r : rows) {
      StackState& st = stacks[r.stack];
      st.created = std::max(st.created, r.number + 1);
      if (r.status == "done" && r.objective) {
        auto params = search::ParamsFromJson(r.params);
        if (params.ok()) st.history.push_back({std::move(params).value(), *r.objective});
      }
    }
  }
  std::vector<std::pair<std::string, std::pair<std::string, json>>> outbox;

  while (true) {
    zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(std::max<int64_t>(1, options.heartbeat_interval_ms / 2)));
    const auto now = Clock::now();
    bool changed = false;
    MT_RETURN_IF_ERROR(store.Begin());
    // 1. Everything that arrived, in one transaction.
    while (auto msg = protocol::Receive(router, true)) {
      if (msg->command.empty()) {
        ++stats.malformed;  // dropped, never acted on
        continue;
      }
      auto it = workers.find(msg->identity);
      if (msg->command == protocol::kReady) {
        WorkerState& w = workers[msg->identity];
        if (w.trial) {  // it restarted mid-trial: that attempt is lost
          MT_ASSIGN_OR_RETURN(int64_t n, store.Requeue(study, w.name));
          progress.running -= n;
          progress.queued += n;
          --running;
        }
        w = WorkerState{msg->body.value("name", msg->identity), now, 0, 0};
        MT_RETURN_IF_ERROR(store.TouchWorker(study, w.name, msg->body.dump()));
        outbox.push_back({msg->identity, {protocol::kWelcome, welcome}});
        changed = true;
        continue;
      }
      if (it == workers.end()) {
        // Unknown peer (e.g. we restarted): ask it to introduce itself.
        outbox.push_back({msg->identity, {protocol::kHeartbeat, json::object()}});
        continue;
      }
      WorkerState& w = it->second;
      w.last_seen = now;
      if (msg->command == protocol::kResult || msg->command == protocol::kFailed) {
        const int64_t trial = msg->body.value("trial", int64_t{0});
        const int64_t attempt = msg->body.value("attempt", int64_t{0});
        if (trial != w.trial || attempt != w.attempt) {
          ++stats.malformed;  // not the trial this worker runs: ignored
          continue;
        }
        if (msg->command == protocol::kResult && msg->body.contains("metrics") &&
            msg->body["metrics"].is_object()) {
          Metrics m;
          for (auto& [k, v] : msg->body["metrics"].items())
            if (v.is_number()) m[k] = v.get<double>();
          MT_ASSIGN_OR_RETURN(bool recorded, store.RecordResult(trial, attempt, m,
                                                                search::ObjectiveValue(sweep.objective, m)));
          stats.results += recorded;
          progress.done += recorded;
          progress.running -= recorded;
          if (recorded && tpe && dispatched.count(trial)) {
            auto& [stack_name, params] = dispatched[trial];
            stacks[stack_name].history.push_back({params, search::ObjectiveValue(sweep.objective, m)});
          }
        } else {
          const std::string error = msg->body.value("error", std::string("malformed result"));
          MT_ASSIGN_OR_RETURN(bool recorded, store.RecordFailure(trial, attempt, error, sweep.search.max_failures));
          ++stats.failures;
          if (recorded) {
            --progress.running;
            ++(attempt >= sweep.search.max_failures ? progress.failed : progress.queued);
          }
        }
        w.trial = w.attempt = 0;
        --running;
        changed = true;
      }
    }
    // 2. Silent workers lose their trials.
    for (auto it = workers.begin(); it != workers.end();) {
      if (now - it->second.last_seen > protocol::kHeartbeatLiveness * interval) {
        if (it->second.trial) {
          MT_ASSIGN_OR_RETURN(int64_t n, store.Requeue(study, it->second.name));
          stats.requeued += n;
          progress.running -= n;
          progress.queued += n;
          --running;
        }
        it = workers.erase(it);
        changed = true;
      } else {
        ++it;
      }
    }
    // 3. Idle workers get trials, written as running before they are sent.
    for (auto& [id, w] : workers) {
      if (w.trial || (max_running > 0 && running >= max_running)) continue;
      if (tpe && progress.queued == 0) {
        // Suggest the next trial of the stack that is furthest behind.
        const search::StackPlan* next = nullptr;
        for (const auto& p : plans) {
          const StackState& st = stacks[p.stack->name];
          if (st.created < p.trials && (!next || st.created < stacks[next->stack->name].created)) next = &p;
        }
        if (next) {
          StackState& st = stacks[next->stack->name];
          MT_RETURN_IF_ERROR(store.AddTrial(
              st.id, st.created,
              search::ParamsToJson(search::SuggestTpe(sweep, *next, st.created, st.history))));
          ++st.created;
          ++progress.queued;
        }
      }
      if (progress.queued == 0) break;
      MT_ASSIGN_OR_RETURN(auto trial, store.StartNext(study, w.name));
      if (!trial) break;
      --progress.queued;
      ++progress.running;
      const search::StackPlan& plan = *plan_of.at(trial->stack);
      auto parsed = search::ParamsFromJson(trial->params);
      const search::TrialParams params = parsed.ok() ? parsed.value() : search::TrialParams{};
      auto configs = parsed.ok() ? search::Materialize(registry, plan, params)
                                 : Result<std::vector<MaskerConfig>>(parsed.status());
      if (!configs.ok()) {  // only for a damaged database: fail the trial, not the study
        MT_RETURN_IF_ERROR(store.RecordFailure(trial->id, trial->attempts, configs.status().message(), 1).status());
        --progress.running;
        ++progress.failed;
        continue;
      }
      json maskers = json::array();
      for (const MaskerConfig& c : configs.value()) {
        json m = {{"type", c.type}};
        for (const auto& [f, v] : c.values) m[f] = FieldValueToJson(v);
        maskers.push_back(m);
      }
      w.trial = trial->id;
      w.attempt = trial->attempts;
      if (tpe) dispatched[trial->id] = {trial->stack, params};
      ++running;
      changed = true;
      outbox.push_back({id, {protocol::kTrial, {{"trial", trial->id}, {"attempt", trial->attempts},
                                                {"stack", trial->stack}, {"maskers", maskers}}}});
    }
    bool all_created = true;
    if (tpe)
      for (const auto& p : plans) all_created &= stacks[p.stack->name].created >= p.trials;
    const bool finished = progress.queued == 0 && progress.running == 0 && all_created;
    if (finished) MT_RETURN_IF_ERROR(store.SetStudyStatus(study, "finished"));
    MT_RETURN_IF_ERROR(store.Commit());
    // 4. Only now, with the state durable, act on it.
    for (auto& [id, msg] : outbox) protocol::Send(router, msg.first, msg.second, &id);
    outbox.clear();
    if (now >= next_heartbeat) {
      for (auto& [id, w] : workers) protocol::Send(router, protocol::kHeartbeat, json::object(), &id);
      next_heartbeat = now + interval;
    }
    if (changed && options.on_progress) options.on_progress(progress);
    if (finished) {
      for (auto& [id, w] : workers) protocol::Send(router, protocol::kDone, json::object(), &id);
      if (auth) stats.refused = auth->refused();
      return stats;
    }
  }
}

}  // namespace masktune
