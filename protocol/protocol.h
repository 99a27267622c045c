// File: protocol/protocol.h
//
// The coordinator-worker protocol (docs/PROTOCOL.md), shared by coordinator/
// and worker/: every message is three frames, [protocol version, command,
// JSON body]; the coordinator's ROUTER sees the worker's routing id in front.
//
// Every message is parsed into a typed struct here and only here: the frame
// count, version, command and every field's JSON type and range are checked
// before either side acts on it. A message that fails any check is dropped
// and counted by the caller (Parse* return the reason), never acted on and
// never fatal: an authorized peer can still be wrong.
// Thread-safety: functions only.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <zmq.hpp>

#include "engine/benchmarks/benchmark.h"
#include "engine/status.h"

namespace masktune::protocol {

inline constexpr const char* kVersion = "MT1";
// Silent heartbeat intervals after which a peer counts as dead.
inline constexpr int kHeartbeatLiveness = 3;
// Longest worker name, stack name and error text accepted on the wire.
inline constexpr size_t kMaxNameBytes = 256;
inline constexpr size_t kMaxErrorBytes = 64 << 10;

// Commands, worker -> coordinator.
inline constexpr const char* kReady = "READY";    // {"name", "cores", "gpus"}
inline constexpr const char* kResult = "RESULT";  // {"trial", "attempt", "metrics": {..}}
inline constexpr const char* kFailed = "FAILED";  // {"trial", "attempt", "error"}
inline constexpr const char* kReport = "REPORT";  // {"trial", "attempt", "step", "metrics": {..}}
// Commands, coordinator -> worker.
// {"study", "benchmark": spec, "slots", "threads"}
inline constexpr const char* kWelcome = "WELCOME";
inline constexpr const char* kTrial = "TRIAL";    // {"trial", "attempt", "stack", "maskers": [..]}
inline constexpr const char* kRejoin = "REJOIN";  // {} I do not know you: send READY
inline constexpr const char* kDone = "DONE";      // {} the study is over: exit
// {"trial", "attempt", "step", "action": "continue"|"stop"}: the answer to a REPORT
inline constexpr const char* kDecision = "DECISION";
// Both ways.
inline constexpr const char* kHeartbeat = "HEARTBEAT";  // {}

// --- Worker -> coordinator --------------------------------------------------
struct Ready {
  std::string name;  // 1..kMaxNameBytes printable bytes
  int64_t cores = 0, gpus = 0;
};
struct TrialResult {
  int64_t trial = 0, attempt = 0;  // both >= 1
  Metrics metrics;                 // finite numbers only
};
struct TrialFailure {
  int64_t trial = 0, attempt = 0;
  std::string error;
};
// A scheduled trial's metrics after sample `step` (1-based) of its benchmark.
struct StepReport {
  int64_t trial = 0, attempt = 0, step = 0;  // all >= 1
  Metrics metrics;                           // finite numbers only
};
struct Heartbeat {};
using FromWorker = std::variant<Ready, TrialResult, TrialFailure, StepReport, Heartbeat>;

// --- Coordinator -> worker --------------------------------------------------
struct Welcome {
  std::string study;
  nlohmann::json benchmark;  // an object with a string "name"
  // Trials the worker runs at once (resources: configs::ResourcesSpec::
  // Concurrency) and the OpenMP threads each gets (0: the default). Optional
  // on the wire (absent: 1 and 0); slots 1..kMaxSlots, threads 0..2^20.
  int64_t slots = 1, threads = 0;
};
inline constexpr int64_t kMaxSlots = 1024;
struct TrialRequest {
  int64_t trial = 0, attempt = 0;
  std::string stack;
  nlohmann::json maskers;  // an array of objects, each with a string "type"
  // Under a scheduler: REPORT after every sample and wait for its DECISION
  // (optional on the wire, a boolean; absent: false).
  bool report = false;
};
struct Rejoin {};
struct Done {};
// The scheduler's answer to a REPORT: go on with the next sample, or stop.
struct Decision {
  int64_t trial = 0, attempt = 0, step = 0;  // all >= 1
  bool stop = false;                         // "action": "stop" | "continue"
};
using FromCoordinator = std::variant<Welcome, TrialRequest, Rejoin, Done, Heartbeat, Decision>;

// Frames as they came off the socket: [identity,] version, command, body.
struct Frames {
  std::string identity;  // ROUTER side only
  std::string command;
  std::string body;
};

// Receives one multipart message without blocking; nullopt: nothing waiting.
// Frame-level problems (count, version) come back as an error with the
// identity still filled in where there was one.
std::optional<Result<Frames>> ReceiveFrames(zmq::socket_t& socket, bool with_identity,
                                            std::string* identity = nullptr);

// Typed parsing: an error says which field is wrong and how.
Result<FromWorker> ParseFromWorker(const Frames& frames);
Result<FromCoordinator> ParseFromCoordinator(const Frames& frames);
// The trial and attempt of a TRIAL, RESULT, FAILED or REPORT that failed the
// checks, when those two fields pass them: the worker answers a bad TRIAL
// with FAILED, and the coordinator fails the attempt a bad report names, so
// the trial is not lost.
std::optional<std::pair<int64_t, int64_t>> ReadableTrialIds(const Frames& frames);

// Encoding; `identity` addresses a worker from the ROUTER side. Never
// blocks: false when the message could not be queued (no live peer, or its
// pipe is full) and was dropped.
bool Send(zmq::socket_t& socket, const FromWorker& message);
bool Send(zmq::socket_t& socket, const FromCoordinator& message, const std::string& identity);

// Sends frames as given, unchecked: for tests and tools that must send what
// the typed Send above cannot (wrong types, unknown commands).
bool SendRaw(zmq::socket_t& socket, const std::string& command, const std::string& body,
             const std::string* identity = nullptr);

// zmq::poll that returns 0 when a signal interrupts it (EINTR) instead of throwing,
// so the caller's loop gets to look at its stop flag.
int Poll(zmq::pollitem_t* items, size_t count, std::chrono::milliseconds timeout);

// Handshake failures seen by a socket monitor (ZMQ_EVENT_HANDSHAKE_FAILED_*
// and connection events), drained without blocking. Used by the coordinator
// to log refused peers of every kind and by a worker to say why it is not
// getting in.
class HandshakeMonitor {
 public:
  struct Event {
    int event = 0;     // ZMQ_EVENT_*
    int value = 0;     // errno or ZAP status code
    std::string text;  // what it means, for a log line
  };
  HandshakeMonitor(zmq::context_t& context, zmq::socket_t& socket, const std::string& name);
  zmq::socket_t& socket() { return pair_; }
  std::optional<Event> Next();

 private:
  zmq::socket_t pair_;
};

}  // namespace masktune::protocol
