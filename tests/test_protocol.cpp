// The wire protocol's checks (protocol/), and both sides under attack by a
// peer that holds the right keys but sends wrong messages: real ZeroMQ
// sockets (inproc), real SQLite files. Nothing may crash, hang or record a
// wrong value; every dropped message is counted.
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "coordinator/coordinator.h"
#include "local/local.h"
#include "protocol/protocol.h"
#include "tests/helpers.h"
#include "worker/worker.h"

namespace masktune {
namespace {

using json = nlohmann::json;
constexpr int64_t kBeatMs = 50;

protocol::Frames F(const std::string& command, const std::string& body) {
  return {"", command, body};
}

std::string WorkerError(const std::string& command, const std::string& body) {
  auto r = protocol::ParseFromWorker(F(command, body));
  return r.ok() ? "" : r.status().message();
}

TEST_CASE("protocol: every field of a worker's message is type-checked, with the field named") {
  CHECK(WorkerError("READY", R"({"name":5})") == "READY.name: expected a string, found number");
  CHECK(WorkerError("READY", R"({"name":null})") == "READY.name: expected a string, found null");
  CHECK(WorkerError("READY", R"({})") == "READY.name: missing");
  CHECK(WorkerError("READY", R"({"name":""})") == "READY.name: empty");
  CHECK(WorkerError("READY", R"({"name":"a\nb"})") ==
        "READY.name: control characters are not allowed");
  CHECK(WorkerError("READY", json{{"name", std::string(300, 'x')}}.dump()) ==
        "READY.name: longer than 256 bytes");
  CHECK(WorkerError("READY", R"({"name":"w","cores":"8"})") ==
        "READY.cores: expected an integer, found string");
  CHECK(WorkerError("READY", R"({"name":"w","gpus":-1})") ==
        "READY.gpus: expected 0..1048576, found -1");
  CHECK(WorkerError("RESULT", R"({"trial":"x","attempt":1,"metrics":{}})") ==
        "RESULT.trial: expected an integer, found string");
  CHECK(WorkerError("RESULT", R"({"trial":1,"attempt":"1","metrics":{}})") ==
        "RESULT.attempt: expected an integer, found string");
  CHECK(WorkerError("RESULT", R"({"trial":1.5,"attempt":1,"metrics":{}})") ==
        "RESULT.trial: expected an integer, found number");
  CHECK(WorkerError("RESULT", R"({"trial":0,"attempt":1,"metrics":{}})") ==
        "RESULT.trial: expected an integer >= 1, found 0");
  CHECK(WorkerError("RESULT", R"({"trial":18446744073709551615,"attempt":1,"metrics":{}})") ==
        "RESULT.trial: expected an integer >= 1, found 18446744073709551615");
  CHECK(WorkerError("RESULT", R"({"trial":1,"attempt":1,"metrics":[]})") ==
        "RESULT.metrics: expected an object, found array");
  CHECK(WorkerError("RESULT", R"({"trial":1,"attempt":1})") ==
        "RESULT.metrics: expected an object, found nothing");
  CHECK(WorkerError("RESULT", R"({"trial":1,"attempt":1,"metrics":{"error":"0.1"}})") ==
        "RESULT.metrics.error: expected a number, found string");
  CHECK(WorkerError("RESULT", R"({"trial":1,"attempt":1,"metrics":{"error":null}})") ==
        "RESULT.metrics.error: expected a number, found null");
  CHECK(WorkerError("FAILED", R"({"trial":1,"attempt":1,"error":5})") ==
        "FAILED.error: expected a string, found number");
  CHECK(WorkerError("FAILED", R"({"trial":1,"attempt":1})") == "FAILED.error: missing");
  CHECK(WorkerError("RESULT", "[1]") == "RESULT: body is not a JSON object");
  CHECK(WorkerError("RESULT", "{not json") == "RESULT: body is not a JSON object");
  CHECK(WorkerError("WELCOME", "{}") == "unknown command from a worker: 'WELCOME'");

  auto ok = protocol::ParseFromWorker(
      F("RESULT", R"({"trial":3,"attempt":2,"metrics":{"error":0.25,"density":0.1}})"));
  REQUIRE(ok.ok());
  const auto& r = std::get<protocol::TrialResult>(ok.value());
  CHECK(r.trial == 3);
  CHECK(r.attempt == 2);
  CHECK(r.metrics.at("error") == 0.25);
  CHECK(r.metrics.at("density") == 0.1);
  auto ready = protocol::ParseFromWorker(F("READY", R"({"name":"w@h:1","cores":8})"));
  REQUIRE(ready.ok());
  CHECK(std::get<protocol::Ready>(ready.value()).name == "w@h:1");
  CHECK(std::get<protocol::Ready>(ready.value()).cores == 8);
}

TEST_CASE("protocol: every field of a coordinator's message is type-checked") {
  auto error = [](const std::string& command, const std::string& body) {
    auto r = protocol::ParseFromCoordinator(F(command, body));
    return r.ok() ? "" : r.status().message();
  };
  CHECK(error("TRIAL", R"({"trial":"x","attempt":1,"stack":"a","maskers":[]})") ==
        "TRIAL.trial: expected an integer, found string");
  CHECK(error("TRIAL", R"({"trial":1,"attempt":1,"stack":"a","maskers":{}})") ==
        "TRIAL.maskers: expected an array");
  CHECK(error("TRIAL", R"({"trial":1,"attempt":1,"stack":"a","maskers":[{"type":5}]})") ==
        "TRIAL.maskers[0]: expected an object with a string \"type\"");
  CHECK(error("WELCOME", R"({"study":"s"})") == "WELCOME.benchmark: expected an object");
  CHECK(error("WELCOME", R"({"study":"s","benchmark":{"name":7}})") ==
        "WELCOME.benchmark.name: expected a string");
  CHECK(error("WELCOME", R"({"study":"s","benchmark":{"name":"noop"},"slots":0})") ==
        "WELCOME.slots: expected an integer >= 1, found 0");
  CHECK(error("WELCOME", R"({"study":"s","benchmark":{"name":"noop"},"slots":"4"})") ==
        "WELCOME.slots: expected an integer, found string");
  CHECK(error("WELCOME", R"({"study":"s","benchmark":{"name":"noop"},"slots":5000})") ==
        "WELCOME.slots: expected 1..1024, found 5000");
  CHECK(error("WELCOME", R"({"study":"s","benchmark":{"name":"noop"},"threads":-1})") ==
        "WELCOME.threads: expected 0..1048576, found -1");
  {
    auto w = protocol::ParseFromCoordinator(
        F("WELCOME", R"({"study":"s","benchmark":{"name":"noop"},"slots":4,"threads":2})"));
    REQUIRE(w.ok());
    CHECK(std::get<protocol::Welcome>(w.value()).slots == 4);
    CHECK(std::get<protocol::Welcome>(w.value()).threads == 2);
    auto old = protocol::ParseFromCoordinator(
        F("WELCOME", R"({"study":"s","benchmark":{"name":"noop"}})"));  // before slots existed
    REQUIRE(old.ok());
    CHECK(std::get<protocol::Welcome>(old.value()).slots == 1);
    CHECK(std::get<protocol::Welcome>(old.value()).threads == 0);
  }
  CHECK(error("READY", "{}") == "unknown command from the coordinator: 'READY'");
  auto t = protocol::ParseFromCoordinator(F(
      "TRIAL", R"({"trial":4,"attempt":1,"stack":"a","maskers":[{"type":"sink","sink_size":4}]})"));
  REQUIRE(t.ok());
  CHECK(std::get<protocol::TrialRequest>(t.value()).maskers[0]["sink_size"] == 4);
}

configs::SweepConfig Sweep(const std::string& yaml) {
  auto r = configs::ParseSweep(yaml, "t.yaml", MaskerRegistry::WithBuiltins());
  REQUIRE_MESSAGE(r.ok(), r.status().message());
  return std::move(r).value();
}

// Waits up to 5 s for a message on `socket` that `want` accepts.
template <typename Want>
bool Await(zmq::socket_t& socket, Want want) {
  for (int i = 0; i < 500; ++i) {
    zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(10));
    while (auto frames = protocol::ReceiveFrames(socket, false)) {
      if (!frames->ok()) continue;
      auto m = protocol::ParseFromCoordinator(frames->value());
      if (m.ok() && want(m.value())) return true;
    }
  }
  return false;
}

TEST_CASE(
    "an authorized worker sending wrong JSON types: dropped and counted, the coordinator lives "
    "on") {
  testing::TempDir dir;
  const std::string yaml =
      "study: types\nbenchmark: {name: noop}\nsearch: {algorithm: grid}\n"
      "attention: {a: [{sink: {sink_size: {grid_search: [1, 2, 3, 4, 5, 6]}}}]}\n";
  const auto sweep = Sweep(yaml);
  auto store = storage::Store::Open(dir / "t.db");
  REQUIRE(store.ok());
  auto study = PrepareStudy(store.value(), sweep, yaml);
  REQUIRE(study.ok());
  std::unique_ptr<zmq::socket_t> rogue;
  int64_t rogue_trial = 0;
  CoordinatorOptions copt;
  copt.bind = "inproc://types";
  copt.heartbeat_interval_ms = kBeatMs;
  copt.log = [](const std::string&) {};
  LocalRun local;
  local.workers = 1;
  local.threads_per_worker = 1;
  local.before_workers = [&](zmq::context_t& ctx, const std::string& endpoint) {
    rogue = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::dealer);
    rogue->set(zmq::sockopt::linger, 0);
    rogue->connect(endpoint);
    // Before it registers, and after: every message the old coordinator died on.
    for (const char* body : {R"({"name":5})", R"({"name":null})", R"({"name":[]})"})
      protocol::SendRaw(*rogue, "READY", body);
    protocol::Send(*rogue, protocol::Ready{"rogue", 1, 0});
    REQUIRE(Await(*rogue, [&](const protocol::FromCoordinator& m) {
      if (auto* t = std::get_if<protocol::TrialRequest>(&m)) rogue_trial = t->trial;
      return rogue_trial != 0;
    }));
    protocol::SendRaw(*rogue, "RESULT", R"({"trial":"x","attempt":1,"metrics":{"error":0}})");
  };
  zmq::context_t context;
  auto stats = RunWithLocalWorkers(context, store.value(), study.value(), sweep,
                                   MaskerRegistry::WithBuiltins(), copt, local);
  rogue.reset();
  REQUIRE_MESSAGE(stats.ok(), stats.status().message());
  CHECK(stats->malformed == 4);  // three READYs and the RESULT
  CHECK(stats->results == 6);    // the good worker ran every trial in the end
  CHECK(stats->failures >= 1);   // the rogue's unreadable report failed its attempt
  auto rows = store->Trials(study.value());
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 6);
  for (const auto& r : rows.value()) {
    if (r.id == rogue_trial) {
      // Its report could not be read: that attempt failed, with the reason,
      // and the trial ran again (the rogue, idle and silent, may take it once
      // more before it is purged), finishing on the good worker.
      CHECK(r.status == "done");
      CHECK(r.attempts >= 2);
    } else {
      CHECK(r.status == "done");
      CHECK(r.attempts == 1);
    }
    CHECK(r.worker != "rogue");
  }
}

// A study's coordinator on its own thread (inproc `bind`), and a DEALER
// peer connected to it that a test drives by hand, as a worker would.
struct ByHand {
  ByHand(const std::string& yaml, const std::string& bind)
      : sweep(Sweep(yaml)), store(storage::Store::Open(dir / "t.db")) {
    REQUIRE(store.ok());
    auto id = PrepareStudy(store.value(), sweep, yaml);
    REQUIRE(id.ok());
    study = id.value();
    copt.bind = bind;
    copt.heartbeat_interval_ms = kBeatMs;
    copt.log = [](const std::string&) {};
    copt.on_bound = [this](const std::string&) { bound = true; };
    coordinator = std::thread(
        [this] { stats = RunCoordinator(context, store.value(), study, sweep, registry, copt); });
    while (!bound) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    peer.set(zmq::sockopt::linger, 0);
    peer.connect(bind);
  }
  ~ByHand() {
    if (coordinator.joinable()) coordinator.join();
  }
  testing::TempDir dir;
  const configs::SweepConfig sweep;
  Result<storage::Store> store;
  int64_t study = 0;
  zmq::context_t context;
  CoordinatorOptions copt;
  std::atomic<bool> bound{false};
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  Result<CoordinatorStats> stats = Status::Error("not run");
  std::thread coordinator;
  zmq::socket_t peer{context, zmq::socket_type::dealer};
};

TEST_CASE("a peer the coordinator does not know is told to REJOIN, and is welcomed after READY") {
  ByHand h(
      "study: rejoin\nbenchmark: {name: noop}\nsearch: {algorithm: grid}\n"
      "attention: {a: [{sink: {sink_size: {grid_search: [1, 2]}}}]}\n",
      "inproc://rejoin");
  zmq::socket_t& peer = h.peer;
  // What a worker of the coordinator's previous life sends first.
  protocol::Send(peer, protocol::Heartbeat{});
  CHECK(Await(peer, [](const protocol::FromCoordinator& m) {
    return std::holds_alternative<protocol::Rejoin>(m);
  }));
  protocol::Send(peer, protocol::TrialResult{
                           1, 1, {{"error", 0.5}}});  // a result from that life: not recorded
  CHECK(Await(peer, [](const protocol::FromCoordinator& m) {
    return std::holds_alternative<protocol::Rejoin>(m);
  }));
  // Now it runs both trials by hand, then hears DONE.
  protocol::Send(peer, protocol::Ready{"by-hand", 1, 0});
  CHECK(Await(peer, [](const protocol::FromCoordinator& m) {
    return std::holds_alternative<protocol::Welcome>(m);
  }));
  int finished = 0;
  bool done = false;
  for (int i = 0; i < 1000 && !done; ++i) {
    zmq::pollitem_t items[] = {{peer.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(5));
    protocol::Send(peer, protocol::Heartbeat{});
    while (auto frames = protocol::ReceiveFrames(peer, false)) {
      REQUIRE(frames->ok());
      auto m = protocol::ParseFromCoordinator(frames->value());
      REQUIRE(m.ok());
      if (auto* t = std::get_if<protocol::TrialRequest>(&m.value())) {
        protocol::Send(peer, protocol::TrialResult{
                                 t->trial, t->attempt, {{"error", 0.125}, {"density", 1.0}}});
        ++finished;
      }
      done |= std::holds_alternative<protocol::Done>(m.value());
    }
  }
  h.coordinator.join();
  REQUIRE(h.stats.ok());
  CHECK(done);
  CHECK(finished == 2);
  CHECK(h.stats->rejoins == 2);
  CHECK(h.stats->results == 2);
  auto rows = h.store->Trials(h.study);
  REQUIRE(rows.ok());
  for (const auto& r : rows.value()) {
    CHECK(r.metrics.at("error") == 0.125);  // not the stale 0.5
    CHECK(r.worker == "by-hand");
  }
}

// The fake coordinator's side: receives the worker's messages on `router`
// (remembering its identity), polling `polls` times for 10 ms, until `take`
// returns true for one of them.
template <typename Take>
bool FromWorkerUntil(zmq::socket_t& router, std::string& identity, Take take, int polls) {
  for (int i = 0; i < polls; ++i) {
    zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(10));
    while (auto frames = protocol::ReceiveFrames(router, true)) {
      REQUIRE(frames->ok());
      identity = frames->value().identity;
      auto m = protocol::ParseFromWorker(frames->value());
      REQUIRE(m.ok());
      if (take(m.value())) return true;
    }
  }
  return false;
}

TEST_CASE(
    "a coordinator holding the right key sends a worker wrong messages: it answers, drops, goes "
    "on") {
  zmq::context_t context;
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("inproc://fake-coordinator");
  std::vector<std::string> log;
  std::mutex log_mu;
  WorkerOptions w;
  w.connect = "inproc://fake-coordinator";
  w.name = "victim";
  w.heartbeat_interval_ms = kBeatMs;
  w.log = [&](const std::string& line) {
    std::lock_guard<std::mutex> lock(log_mu);
    log.push_back(line);
  };
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  Result<WorkerStats> stats = Status::Error("not run");
  std::thread worker([&] { stats = RunWorker(context, registry, w); });
  // Receives until a message from the worker that `want` accepts (5 s).
  std::string identity;
  auto await = [&](auto want) { return FromWorkerUntil(router, identity, want, 500); };
  auto failure = [&](int64_t trial, const std::string& contains) {
    return await([&](const protocol::FromWorker& m) {
      auto* f = std::get_if<protocol::TrialFailure>(&m);
      return f && f->trial == trial && f->error.find(contains) != std::string::npos;
    });
  };
  REQUIRE(await(
      [](const protocol::FromWorker& m) { return std::holds_alternative<protocol::Ready>(m); }));
  const std::string trial_body =
      R"({"trial":7,"attempt":1,"stack":"a","maskers":[{"type":"sink","sink_size":2}]})";
  // 1. TRIAL before WELCOME (the old worker aborted: parse_error): failed, with the reason.
  protocol::SendRaw(router, "TRIAL", trial_body, &identity);
  CHECK(failure(7, "TRIAL before WELCOME"));
  // 2. A TRIAL whose trial id is a string (the old worker exited): dropped.
  protocol::SendRaw(router, "TRIAL", R"({"trial":"x","attempt":1,"stack":"a","maskers":[]})",
                    &identity);
  // 3. A TRIAL with good ids and a bad masker list: failed, so it is not lost.
  protocol::SendRaw(router, "TRIAL",
                    R"({"trial":8,"attempt":1,"stack":"a","maskers":[{"type":5}]})", &identity);
  CHECK(failure(8, "TRIAL.maskers[0]"));
  // 4. WELCOME with an unknown benchmark: accepted, and its trials fail naming it.
  protocol::SendRaw(router, "WELCOME", R"({"study":"s","benchmark":{"name":"nonesuch"}})",
                    &identity);
  protocol::SendRaw(router, "TRIAL", R"({"trial":9,"attempt":1,"stack":"a","maskers":[]})",
                    &identity);
  CHECK(failure(9, "unknown benchmark 'nonesuch'"));
  // 5. A benchmark spec of the wrong types (a string where an object goes): failed, not fatal.
  protocol::SendRaw(router, "WELCOME",
                    R"({"study":"s","benchmark":{"name":"attention_error","folder":5}})",
                    &identity);
  protocol::SendRaw(router, "TRIAL", R"({"trial":10,"attempt":1,"stack":"a","maskers":[]})",
                    &identity);
  CHECK(failure(10, "bad trial or benchmark spec"));
  // 6. It still works: a good WELCOME and TRIAL give a RESULT.
  protocol::SendRaw(router, "WELCOME", R"({"study":"s","benchmark":{"name":"noop"}})", &identity);
  protocol::SendRaw(router, "TRIAL", R"({"trial":11,"attempt":1,"stack":"a","maskers":[]})",
                    &identity);
  CHECK(await([](const protocol::FromWorker& m) {
    auto* r = std::get_if<protocol::TrialResult>(&m);
    return r && r->trial == 11;
  }));
  // 7. Garbage frames, then DONE: the worker returns normally.
  protocol::SendRaw(router, "EXPLODE", "{}", &identity);
  protocol::SendRaw(router, "DONE", "[", &identity);
  protocol::Send(router, protocol::Done{}, identity);
  worker.join();
  REQUIRE_MESSAGE(stats.ok(), stats.status().message());
  CHECK(stats->done);
  CHECK(stats->dropped == 4);  // TRIAL "x", TRIAL bad maskers, EXPLODE, DONE "["
  CHECK(stats->trials == 1);
}

TEST_CASE("a worker whose coordinator never answers gives up after --give-up-after, saying why") {
  zmq::context_t context;
  std::vector<std::string> log;
  WorkerOptions w;
  w.connect = "tcp://127.0.0.1:1";  // nothing listens on port 1
  w.name = "lonely";
  w.heartbeat_interval_ms = kBeatMs;
  w.welcome_timeout_ms = 200;
  w.give_up_after_ms = 700;
  w.log = [&](const std::string& line) { log.push_back(line); };
  auto stats = RunWorker(context, MaskerRegistry::WithBuiltins(), w);
  REQUIRE_FALSE(stats.ok());
  CHECK(stats.status().message() == "no answer from tcp://127.0.0.1:1 for 0.7 s: giving up");
  bool said = false;
  for (const auto& l : log)
    said |=
        l.find("not running, or our key is not in its authorized_workers") != std::string::npos ||
        l.find("nothing accepts connections") != std::string::npos;
  CHECK(said);
}

// resources: {gpus_per_trial: 0.25} on a worker announcing one GPU and 4
// cores: WELCOME gives it 4 slots and 1 thread each, it is sent 4 trials at
// once and no fifth; a broken RESULT naming one of them fails that attempt
// only, and the trial runs again.
TEST_CASE("coordinator: a worker with 4 slots gets 4 trials at once; a bad report fails its own") {
  ByHand h(
      "study: slots\nbenchmark: {name: noop}\nsearch: {algorithm: grid}\n"
      "resources: {gpus_per_trial: 0.25}\n"
      "attention: {a: [{sink: {sink_size: {grid_search: [1, 2, 3, 4, 5, 6]}}}]}\n",
      "inproc://slots");
  zmq::socket_t& peer = h.peer;
  protocol::Send(peer, protocol::Ready{"four-slots", 4, 1});
  protocol::Welcome welcome;
  CHECK(Await(peer, [&](const protocol::FromCoordinator& m) {
    if (auto* w = std::get_if<protocol::Welcome>(&m)) welcome = *w;
    return std::holds_alternative<protocol::Welcome>(m);
  }));
  CHECK(welcome.slots == 4);
  CHECK(welcome.threads == 1);  // 4 cores shared by 4 trials
  // Collect what it is sent for a while, answering nothing but heartbeats.
  std::vector<protocol::TrialRequest> sent;
  auto collect = [&](int ms) {
    for (int i = 0; i < ms / 5; ++i) {
      zmq::pollitem_t items[] = {{peer.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 1, std::chrono::milliseconds(5));
      if (i % 5 == 0) protocol::Send(peer, protocol::Heartbeat{});
      while (auto frames = protocol::ReceiveFrames(peer, false)) {
        REQUIRE(frames->ok());
        auto m = protocol::ParseFromCoordinator(frames->value());
        REQUIRE(m.ok());
        if (auto* t = std::get_if<protocol::TrialRequest>(&m.value())) sent.push_back(*t);
      }
    }
  };
  collect(400);
  REQUIRE(sent.size() == 4);  // four at once, never a fifth
  const protocol::TrialRequest broken = sent[1];
  // A RESULT for sent[1] with a metric of the wrong type: that attempt fails.
  protocol::SendRaw(peer, "RESULT",
                    "{\"trial\":" + std::to_string(broken.trial) + ",\"attempt\":" +
                        std::to_string(broken.attempt) + ",\"metrics\":{\"error\":\"x\"}}");
  collect(300);
  REQUIRE(sent.size() == 5);  // its slot was freed and refilled (the requeued trial or the next)
  // Now answer everything until DONE.
  std::set<int64_t> finished;
  bool done = false;
  size_t answered = 0;
  for (int i = 0; i < 2000 && !done; ++i) {
    for (; answered < sent.size(); ++answered)
      if (!(sent[answered].trial == broken.trial && sent[answered].attempt == broken.attempt)) {
        protocol::Send(peer, protocol::TrialResult{sent[answered].trial,
                                                   sent[answered].attempt,
                                                   {{"error", 0.25}, {"density", 0.5}}});
        finished.insert(sent[answered].trial);
      }
    zmq::pollitem_t items[] = {{peer.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(5));
    if (i % 5 == 0) protocol::Send(peer, protocol::Heartbeat{});
    while (auto frames = protocol::ReceiveFrames(peer, false)) {
      REQUIRE(frames->ok());
      auto m = protocol::ParseFromCoordinator(frames->value());
      REQUIRE(m.ok());
      if (auto* t = std::get_if<protocol::TrialRequest>(&m.value())) sent.push_back(*t);
      done |= std::holds_alternative<protocol::Done>(m.value());
    }
  }
  h.coordinator.join();
  REQUIRE_MESSAGE(h.stats.ok(), h.stats.status().message());
  CHECK(done);
  CHECK(finished.size() == 6);
  CHECK(h.stats->failures == 1);
  CHECK(h.stats->malformed == 1);
  auto rows = h.store->Trials(h.study);
  REQUIRE(rows.ok());
  for (const auto& r : rows.value()) {
    CHECK(r.status == "done");
    CHECK(r.attempts == (r.id == broken.trial ? 2 : 1));
  }
}

// A worker told to run 2 trials at once runs them side by side: both
// trials report their first sample and wait for a DECISION at the same time
// (one runner could not), a third is refused naming both, each decision
// reaches its own trial, and each trial gets the threads WELCOME asked for.
TEST_CASE("worker: WELCOME's slots run trials side by side with their threads") {
  zmq::context_t context;
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("inproc://fake-coordinator-slots");
  WorkerOptions w;
  w.connect = "inproc://fake-coordinator-slots";
  w.name = "two-slots";
  w.announce_cores = 4;  // slots and threads are capped at the cores announced
  w.heartbeat_interval_ms = kBeatMs;
  w.log = [](const std::string&) {};
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  Result<WorkerStats> stats = Status::Error("not run");
  std::thread worker([&] { stats = RunWorker(context, registry, w); });
  std::string identity;
  std::vector<protocol::FromWorker> got;
  auto pump = [&](auto until) {
    return until() || FromWorkerUntil(
                          router, identity,
                          [&](const protocol::FromWorker& m) {
                            got.push_back(m);
                            return until();
                          },
                          500);
  };
  auto count = [&](auto pred) {
    int n = 0;
    for (const auto& m : got) n += pred(m);
    return n;
  };
  REQUIRE(pump([&] {
    return count([](const auto& m) { return std::holds_alternative<protocol::Ready>(m); }) > 0;
  }));
  protocol::SendRaw(router, "WELCOME",
                    R"({"study":"s","benchmark":{"name":"noop","steps":2},"slots":2,)"
                    R"("threads":3})",
                    &identity);
  for (int t : {1, 1, 2, 3})  // the repeated 1 is dropped: it must not run twice
    protocol::SendRaw(router, "TRIAL",
                      "{\"trial\":" + std::to_string(t) +
                          ",\"attempt\":1,\"stack\":\"a\",\"maskers\":[],\"report\":true}",
                      &identity);
  auto reports = [&](int64_t trial) {
    return count([trial](const auto& m) {
      auto* r = std::get_if<protocol::StepReport>(&m);
      return r && r->trial == trial && r->step == 1;
    });
  };
  // Both wait on their first decision at once.
  REQUIRE(pump([&] { return reports(1) > 0 && reports(2) > 0; }));
  CHECK(count([](const auto& m) {
          auto* f = std::get_if<protocol::TrialFailure>(&m);
          return f && f->trial == 1;
        }) == 0);  // a FAILED would have failed the attempt it runs
  CHECK(count([](const auto& m) {
          auto* f = std::get_if<protocol::TrialFailure>(&m);
          return f && f->trial == 3 &&
                 f->error == "worker two-slots: busy with trial 1, trial 2 (2 slots)";
        }) == 1);
  // Trial 2 is stopped, trial 1 goes on to its second sample: each its own.
  protocol::Send(router, protocol::Decision{2, 1, 1, true}, identity);
  protocol::Send(router, protocol::Decision{1, 1, 1, false}, identity);
  REQUIRE(pump([&] {
    return count([](const auto& m) {
             auto* r = std::get_if<protocol::StepReport>(&m);
             return r && r->trial == 1 && r->step == 2;
           }) > 0;
  }));
  protocol::Send(router, protocol::Decision{1, 1, 2, false}, identity);
  REQUIRE(pump([&] {
    return count([](const auto& m) { return std::holds_alternative<protocol::TrialResult>(m); }) ==
           2;
  }));
  CHECK(count([](const auto& m) {
          auto* r = std::get_if<protocol::StepReport>(&m);
          return r && r->trial == 2 && r->step == 2;
        }) == 0);  // stopped after its first sample
  for (const auto& m : got)
    if (auto* r = std::get_if<protocol::TrialResult>(&m)) CHECK(r->metrics.at("omp_threads") == 3);
  // A WELCOME asking for a million threads gets the 4 cores announced.
  protocol::SendRaw(router, "WELCOME",
                    R"({"study":"s","benchmark":{"name":"noop"},"slots":2,"threads":1048576})",
                    &identity);
  protocol::SendRaw(router, "TRIAL", R"({"trial":4,"attempt":1,"stack":"a","maskers":[]})",
                    &identity);
  REQUIRE(pump([&] {
    return count([](const auto& m) {
             auto* r = std::get_if<protocol::TrialResult>(&m);
             return r && r->trial == 4;
           }) == 1;
  }));
  for (const auto& m : got)
    if (auto* r = std::get_if<protocol::TrialResult>(&m); r && r->trial == 4)
      CHECK(r->metrics.at("omp_threads") == 4);
  protocol::Send(router, protocol::Done{}, identity);
  worker.join();
  REQUIRE(stats.ok());
  CHECK(stats->trials == 3);
}

}  // namespace
}  // namespace masktune
