#include "protocol/protocol.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <vector>

namespace masktune::protocol {
namespace {

using json = nlohmann::json;

// Field readers: each names the field and what was wrong with it.
Status Bad(const std::string& command, const std::string& field, const std::string& why) {
  return Status::Error(command + "." + field + ": " + why);
}

Result<int64_t> PositiveInt(const std::string& command, const json& body, const char* field) {
  auto it = body.find(field);
  if (it == body.end()) return Bad(command, field, "missing");
  if (!it->is_number_integer())
    return Bad(command, field, std::string("expected an integer, found ") + it->type_name());
  const int64_t v =
      it->is_number_unsigned() && it->get<uint64_t>() > INT64_MAX ? -1 : it->get<int64_t>();
  if (v < 1) return Bad(command, field, "expected an integer >= 1, found " + it->dump());
  return v;
}

Result<int64_t> CountOr0(const std::string& command, const json& body, const char* field) {
  auto it = body.find(field);
  if (it == body.end()) return int64_t{0};
  if (!it->is_number_integer())
    return Bad(command, field, std::string("expected an integer, found ") + it->type_name());
  if (it->is_number_unsigned() ? it->get<uint64_t>() > (1u << 20)
                               : (it->get<int64_t>() < 0 || it->get<int64_t>() > (1 << 20)))
    return Bad(command, field, "expected 0..1048576, found " + it->dump());
  return it->get<int64_t>();
}

Result<std::string> Text(const std::string& command, const json& body, const char* field,
                         size_t max_bytes, bool name) {
  auto it = body.find(field);
  if (it == body.end()) return Bad(command, field, "missing");
  if (!it->is_string())
    return Bad(command, field, std::string("expected a string, found ") + it->type_name());
  std::string s = it->get<std::string>();
  if (s.size() > max_bytes)
    return Bad(command, field, "longer than " + std::to_string(max_bytes) + " bytes");
  if (name) {
    if (s.empty()) return Bad(command, field, "empty");
    for (unsigned char c : s)
      if (c < 0x20 || c == 0x7f) return Bad(command, field, "control characters are not allowed");
  }
  return s;
}

}  // namespace

std::optional<Result<Frames>> ReceiveFrames(zmq::socket_t& socket, bool with_identity,
                                            std::string* identity) {
  std::vector<zmq::message_t> frames;
  zmq::message_t frame;
  try {
    if (!socket.recv(frame, zmq::recv_flags::dontwait)) return std::nullopt;
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return std::nullopt;  // a signal: the caller's loop looks at its flag
    throw;
  }
  frames.push_back(std::move(frame));
  while (frames.back().more()) {
    zmq::message_t next;
    if (!socket.recv(next, zmq::recv_flags::none)) break;
    frames.push_back(std::move(next));
  }
  Frames m;
  size_t i = 0;
  if (with_identity) m.identity = frames[i++].to_string();
  if (identity) *identity = m.identity;
  if (frames.size() - i != 3)
    return Result<Frames>(Status::Error(std::to_string(frames.size() - i) + " frames, expected 3"));
  if (frames[i].to_string() != kVersion)
    return Result<Frames>(Status::Error("unknown protocol version"));
  m.command = frames[i + 1].to_string();
  m.body = frames[i + 2].to_string();
  return Result<Frames>(std::move(m));
}

namespace {

// "metrics": an object of finite numbers with names of 1..kMaxNameBytes bytes.
Result<Metrics> MetricsField(const std::string& c, const json& body) {
  auto it = body.find("metrics");
  if (it == body.end() || !it->is_object())
    return Bad(c, "metrics",
               std::string("expected an object, found ") +
                   (it == body.end() ? "nothing" : it->type_name()));
  Metrics metrics;
  for (auto& [k, v] : it->items()) {
    if (k.empty() || k.size() > kMaxNameBytes)
      return Bad(c, "metrics", "a metric name is empty or too long");
    if (!v.is_number())
      return Bad(c, "metrics." + k, std::string("expected a number, found ") + v.type_name());
    const double x = v.get<double>();
    if (!std::isfinite(x)) return Bad(c, "metrics." + k, "not finite");
    metrics[k] = x;
  }
  return metrics;
}

Result<json> Body(const Frames& f) {
  json body = json::parse(f.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return Status::Error(f.command + ": body is not a JSON object");
  return body;
}

}  // namespace

Result<FromWorker> ParseFromWorker(const Frames& f) {
  const std::string& c = f.command;
  if (c != kReady && c != kResult && c != kFailed && c != kReport && c != kHeartbeat)
    return Status::Error("unknown command from a worker: '" + c.substr(0, 32) + "'");
  MT_ASSIGN_OR_RETURN(json body, Body(f));
  if (c == kReady) {
    Ready r;
    MT_ASSIGN_OR_RETURN(r.name, Text(c, body, "name", kMaxNameBytes, true));
    MT_ASSIGN_OR_RETURN(r.cores, CountOr0(c, body, "cores"));
    MT_ASSIGN_OR_RETURN(r.gpus, CountOr0(c, body, "gpus"));
    return FromWorker(std::move(r));
  }
  if (c == kResult) {
    TrialResult r;
    MT_ASSIGN_OR_RETURN(r.trial, PositiveInt(c, body, "trial"));
    MT_ASSIGN_OR_RETURN(r.attempt, PositiveInt(c, body, "attempt"));
    MT_ASSIGN_OR_RETURN(r.metrics, MetricsField(c, body));
    return FromWorker(std::move(r));
  }
  if (c == kReport) {
    StepReport r;
    MT_ASSIGN_OR_RETURN(r.trial, PositiveInt(c, body, "trial"));
    MT_ASSIGN_OR_RETURN(r.attempt, PositiveInt(c, body, "attempt"));
    MT_ASSIGN_OR_RETURN(r.step, PositiveInt(c, body, "step"));
    MT_ASSIGN_OR_RETURN(r.metrics, MetricsField(c, body));
    return FromWorker(std::move(r));
  }
  if (c == kFailed) {
    TrialFailure r;
    MT_ASSIGN_OR_RETURN(r.trial, PositiveInt(c, body, "trial"));
    MT_ASSIGN_OR_RETURN(r.attempt, PositiveInt(c, body, "attempt"));
    MT_ASSIGN_OR_RETURN(r.error, Text(c, body, "error", kMaxErrorBytes, false));
    return FromWorker(std::move(r));
  }
  return FromWorker(Heartbeat{});  // {}: extra fields are ignored, as in every command
}

Result<FromCoordinator> ParseFromCoordinator(const Frames& f) {
  const std::string& c = f.command;
  if (c != kWelcome && c != kTrial && c != kRejoin && c != kDone && c != kHeartbeat &&
      c != kDecision)
    return Status::Error("unknown command from the coordinator: '" + c.substr(0, 32) + "'");
  MT_ASSIGN_OR_RETURN(json body, Body(f));
  if (c == kWelcome) {
    Welcome w;
    MT_ASSIGN_OR_RETURN(w.study, Text(c, body, "study", kMaxNameBytes, true));
    auto it = body.find("benchmark");
    if (it == body.end() || !it->is_object()) return Bad(c, "benchmark", "expected an object");
    auto type = it->find("name");
    if (type == it->end() || !type->is_string())
      return Bad(c, "benchmark.name", "expected a string");
    w.benchmark = *it;
    if (body.contains("slots")) {
      MT_ASSIGN_OR_RETURN(w.slots, PositiveInt(c, body, "slots"));
      if (w.slots > kMaxSlots)
        return Bad(
            c, "slots",
            "expected 1.." + std::to_string(kMaxSlots) + ", found " + std::to_string(w.slots));
    }
    MT_ASSIGN_OR_RETURN(w.threads, CountOr0(c, body, "threads"));
    return FromCoordinator(std::move(w));
  }
  if (c == kTrial) {
    TrialRequest t;
    MT_ASSIGN_OR_RETURN(t.trial, PositiveInt(c, body, "trial"));
    MT_ASSIGN_OR_RETURN(t.attempt, PositiveInt(c, body, "attempt"));
    MT_ASSIGN_OR_RETURN(t.stack, Text(c, body, "stack", kMaxNameBytes, true));
    auto it = body.find("maskers");
    if (it == body.end() || !it->is_array()) return Bad(c, "maskers", "expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
      const json& m = (*it)[i];
      if (!m.is_object() || !m.contains("type") || !m["type"].is_string())
        return Bad(c, "maskers[" + std::to_string(i) + "]",
                   "expected an object with a string \"type\"");
    }
    t.maskers = *it;
    if (auto r = body.find("report"); r != body.end()) {
      if (!r->is_boolean())
        return Bad(c, "report", std::string("expected a boolean, found ") + r->type_name());
      t.report = r->get<bool>();
    }
    return FromCoordinator(std::move(t));
  }
  if (c == kDecision) {
    Decision d;
    MT_ASSIGN_OR_RETURN(d.trial, PositiveInt(c, body, "trial"));
    MT_ASSIGN_OR_RETURN(d.attempt, PositiveInt(c, body, "attempt"));
    MT_ASSIGN_OR_RETURN(d.step, PositiveInt(c, body, "step"));
    MT_ASSIGN_OR_RETURN(std::string action, Text(c, body, "action", 16, true));
    if (action != "continue" && action != "stop")
      return Bad(c, "action", "expected \"continue\" or \"stop\", found \"" + action + "\"");
    d.stop = action == "stop";
    return FromCoordinator(d);
  }
  if (c == kRejoin) return FromCoordinator(Rejoin{});
  if (c == kDone) return FromCoordinator(Done{});
  return FromCoordinator(Heartbeat{});
}

std::optional<std::pair<int64_t, int64_t>> ReadableTrialIds(const Frames& f) {
  if (f.command != kTrial && f.command != kResult && f.command != kFailed && f.command != kReport)
    return std::nullopt;
  auto body = Body(f);
  if (!body.ok()) return std::nullopt;
  auto trial = PositiveInt(f.command, body.value(), "trial");
  auto attempt = PositiveInt(f.command, body.value(), "attempt");
  if (!trial.ok() || !attempt.ok()) return std::nullopt;
  return std::pair{trial.value(), attempt.value()};
}

namespace {

bool SendFrames(zmq::socket_t& socket, const std::string* identity, const char* command,
                const json& body) {
  return SendRaw(socket, command, body.dump(-1, ' ', false, json::error_handler_t::replace),
                 identity);
}

}  // namespace

// Never blocks: a DEALER with no live peer (a refused handshake leaves none)
// would block a plain send forever. A message that cannot be queued is
// dropped (false); a peer that went away makes ROUTER drop it too.
bool SendRaw(zmq::socket_t& socket, const std::string& command, const std::string& body,
             const std::string* identity) {
  std::vector<zmq::const_buffer> parts;
  if (identity) parts.push_back(zmq::buffer(*identity));
  parts.push_back(zmq::buffer(kVersion, 3));
  parts.push_back(zmq::buffer(command));
  parts.push_back(zmq::buffer(body));
  for (int tries = 0; tries < 100; ++tries) {
    try {
      // Multipart messages are atomic: the first part decides for all.
      if (!socket.send(parts[0], parts.size() > 1
                                     ? zmq::send_flags::sndmore | zmq::send_flags::dontwait
                                     : zmq::send_flags::dontwait))
        return false;
      for (size_t i = 1; i < parts.size(); ++i)
        (void)socket.send(parts[i],
                          i + 1 < parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
      return true;
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
  return false;
}

bool Send(zmq::socket_t& socket, const FromWorker& message) {
  return std::visit(
      [&](const auto& m) -> bool {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, Ready>) {
          return SendFrames(socket, nullptr, kReady,
                            {{"name", m.name}, {"cores", m.cores}, {"gpus", m.gpus}});
        } else if constexpr (std::is_same_v<T, TrialResult>) {
          json metrics = json::object();
          for (const auto& [k, v] : m.metrics) metrics[k] = v;
          return SendFrames(socket, nullptr, kResult,
                            {{"trial", m.trial}, {"attempt", m.attempt}, {"metrics", metrics}});
        } else if constexpr (std::is_same_v<T, TrialFailure>) {
          return SendFrames(socket, nullptr, kFailed,
                            {{"trial", m.trial},
                             {"attempt", m.attempt},
                             {"error", m.error.substr(0, kMaxErrorBytes)}});
        } else if constexpr (std::is_same_v<T, StepReport>) {
          json metrics = json::object();
          for (const auto& [k, v] : m.metrics) metrics[k] = v;
          return SendFrames(
              socket, nullptr, kReport,
              {{"trial", m.trial}, {"attempt", m.attempt}, {"step", m.step}, {"metrics", metrics}});
        } else {
          return SendFrames(socket, nullptr, kHeartbeat, json::object());
        }
      },
      message);
}

bool Send(zmq::socket_t& socket, const FromCoordinator& message, const std::string& identity) {
  return std::visit(
      [&](const auto& m) -> bool {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, Welcome>) {
          return SendFrames(socket, &identity, kWelcome,
                            {{"study", m.study},
                             {"benchmark", m.benchmark},
                             {"slots", m.slots},
                             {"threads", m.threads}});
        } else if constexpr (std::is_same_v<T, TrialRequest>) {
          json body = {{"trial", m.trial},
                       {"attempt", m.attempt},
                       {"stack", m.stack},
                       {"maskers", m.maskers}};
          if (m.report) body["report"] = true;
          return SendFrames(socket, &identity, kTrial, body);
        } else if constexpr (std::is_same_v<T, Decision>) {
          return SendFrames(socket, &identity, kDecision,
                            {{"trial", m.trial},
                             {"attempt", m.attempt},
                             {"step", m.step},
                             {"action", m.stop ? "stop" : "continue"}});
        } else if constexpr (std::is_same_v<T, Rejoin>) {
          return SendFrames(socket, &identity, kRejoin, json::object());
        } else if constexpr (std::is_same_v<T, Done>) {
          return SendFrames(socket, &identity, kDone, json::object());
        } else {
          return SendFrames(socket, &identity, kHeartbeat, json::object());
        }
      },
      message);
}

int Poll(zmq::pollitem_t* items, size_t count, std::chrono::milliseconds timeout) {
  const int rc = zmq_poll(items, static_cast<int>(count), static_cast<long>(timeout.count()));
  if (rc < 0) {
    if (zmq_errno() == EINTR) {
      for (size_t i = 0; i < count; ++i) items[i].revents = 0;
      return 0;
    }
    throw zmq::error_t();
  }
  return rc;
}

HandshakeMonitor::HandshakeMonitor(zmq::context_t& context, zmq::socket_t& socket,
                                   const std::string& name)
    : pair_(context, zmq::socket_type::pair) {
  const std::string endpoint = "inproc://masktune-monitor-" + name;
  const int events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                     ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                     ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_DISCONNECTED;
  if (zmq_socket_monitor(socket.handle(), endpoint.c_str(), events) != 0) throw zmq::error_t();
  pair_.set(zmq::sockopt::linger, 0);
  pair_.connect(endpoint);
}

std::optional<HandshakeMonitor::Event> HandshakeMonitor::Next() {
  zmq::message_t head, address;
  try {
    if (!pair_.recv(head, zmq::recv_flags::dontwait)) return std::nullopt;
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return std::nullopt;
    throw;
  }
  if (head.more()) (void)pair_.recv(address, zmq::recv_flags::none);
  Event e;
  if (head.size() >= 6) {
    uint16_t id;
    uint32_t value;
    std::memcpy(&id, head.data(), 2);
    std::memcpy(&value, static_cast<const char*>(head.data()) + 2, 4);
    e.event = id;
    e.value = static_cast<int>(value);
  }
  switch (e.event) {
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
      e.text = "handshake failed (not a ZeroMQ peer, e.g. HTTP or garbage, or it hung up)";
      break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
      e.text =
          "handshake failed: protocol error (plain against CURVE: one side is --insecure, "
          "or the keys do not match)";
      break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
      e.text = "handshake refused by authentication (status " + std::to_string(e.value) +
               "): the key is not in authorized_workers";
      break;
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
      e.text = "handshake succeeded";
      break;
    case ZMQ_EVENT_CONNECT_RETRIED:
      e.text = "nothing accepts connections there (retrying)";
      break;
    case ZMQ_EVENT_DISCONNECTED:
      e.text = "disconnected";
      break;
    default:
      e.text = "event " + std::to_string(e.event);
      break;
  }
  return e;
}

}  // namespace masktune::protocol
