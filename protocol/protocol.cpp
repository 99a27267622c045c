#include "protocol/protocol.h"

#include <set>
#include <vector>

namespace masktune::protocol {

void Send(zmq::socket_t& socket, const std::string& command, const nlohmann::json& body,
          const std::string* identity) {
  if (identity) socket.send(zmq::buffer(*identity), zmq::send_flags::sndmore);
  socket.send(zmq::buffer(std::string(kVersion)), zmq::send_flags::sndmore);
  socket.send(zmq::buffer(command), zmq::send_flags::sndmore);
  socket.send(zmq::buffer(body.dump()), zmq::send_flags::none);
}

std::optional<Message> Receive(zmq::socket_t& socket, bool with_identity) {
  std::vector<zmq::message_t> frames;
  zmq::message_t frame;
  if (!socket.recv(frame, zmq::recv_flags::dontwait)) return std::nullopt;
  frames.push_back(std::move(frame));
  while (frames.back().more()) {
    zmq::message_t next;
    if (!socket.recv(next, zmq::recv_flags::none)) break;
    frames.push_back(std::move(next));
  }
  Message m;
  size_t i = 0;
  if (with_identity) m.identity = frames[i++].to_string();
  auto bad = [&](const std::string& why) {
    m.command.clear();
    m.body = {{"error", why}};
    return m;
  };
  if (frames.size() - i != 3) return bad(std::to_string(frames.size() - i) + " frames, expected 3");
  if (frames[i].to_string() != kVersion) return bad("unknown protocol version");
  m.command = frames[i + 1].to_string();
  static const std::set<std::string> kCommands = {kReady, kResult, kFailed, kWelcome,
                                                  kTrial, kDone,   kHeartbeat};
  if (!kCommands.count(m.command)) return bad("unknown command");
  m.body = nlohmann::json::parse(frames[i + 2].to_string(), nullptr, false);
  if (m.body.is_discarded() || !m.body.is_object()) return bad("body is not a JSON object");
  return m;
}

}  // namespace masktune::protocol
