// File: protocol/protocol.h
//
// The coordinator-worker protocol (docs/PROTOCOL.md): every message is three
// frames, [protocol version, command, JSON body]; the coordinator's ROUTER
// sees the worker's routing id in front. A message that does not parse is
// dropped and counted, never acted on. Thread-safety: functions only.
#pragma once

#include <optional>
#include <string>
#include <zmq.hpp>
#include <nlohmann/json.hpp>

namespace masktune::protocol {

inline constexpr const char* kVersion = "MT1";
// Silent heartbeat intervals after which a peer counts as dead.
inline constexpr int kHeartbeatLiveness = 3;

// Commands, worker -> coordinator.
inline constexpr const char* kReady = "READY";          // {"name", "cores", "gpus"}
inline constexpr const char* kResult = "RESULT";        // {"trial", "attempt", "metrics": {..}}
inline constexpr const char* kFailed = "FAILED";        // {"trial", "attempt", "error"}
// Commands, coordinator -> worker.
inline constexpr const char* kWelcome = "WELCOME";      // {"study", "benchmark": spec}
inline constexpr const char* kTrial = "TRIAL";          // {"trial", "attempt", "stack", "maskers": [..]}
inline constexpr const char* kDone = "DONE";            // {} the study is over: exit
// Both ways.
inline constexpr const char* kHeartbeat = "HEARTBEAT";  // {}

struct Message {
  std::string identity;  // ROUTER side only
  std::string command;
  nlohmann::json body;
};

// Sends [identity,] version, command, body.
void Send(zmq::socket_t& socket, const std::string& command, const nlohmann::json& body,
          const std::string* identity = nullptr);

// Receives one message without blocking. nullopt: nothing waiting. A malformed
// message is consumed and returned with an empty command and the reason in
// body["error"].
std::optional<Message> Receive(zmq::socket_t& socket, bool with_identity);

}  // namespace masktune::protocol
