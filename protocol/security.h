// File: protocol/security.h
//
// ZeroMQ CURVE for every tcp socket between coordinator and workers.
// `masktune keys new DIR` writes two key pairs and an allow list:
//   DIR/coordinator.key   public + secret (mode 0600)    the coordinator's
//   DIR/coordinator.pub   public                         workers pin it
//   DIR/worker.key        public + secret (mode 0600)    workers present it
//   DIR/worker.pub        public
//   DIR/authorized_workers  public keys the coordinator accepts, one per line
// File format, one "name = Z85" per line ("public", "secret"); '#' comments.
// The coordinator runs a ZAP handler (RFC 27) on its context: a peer whose
// public key is not in the allow list, or that does not speak CURVE, is
// refused during the handshake and never reaches the trial queue; refusals
// are counted and logged at most once per second. inproc stays plain.
// Thread-safety: Authenticator runs its own thread; the rest are functions.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "engine/status.h"

namespace masktune::security {

// Largest message a peer may send (frames beyond it drop the connection).
inline constexpr int64_t kMaxMessageBytes = 64 << 20;

struct KeyPair {
  std::string public_key, secret_key;  // Z85, 40 characters each
};

// Creates DIR (if needed) and the files above; refuses to overwrite keys.
Status WriteKeyDir(const std::string& dir);

// A key file: public (and secret, when `need_secret`). A secret file that
// others can read is an error (chmod 600).
Result<KeyPair> ReadKeyFile(const std::string& path, bool need_secret);

// Public keys, one Z85 key per line or "public = KEY" lines.
Result<std::set<std::string>> ReadAllowList(const std::string& path);

struct ServerKeys {
  KeyPair coordinator;
  std::set<std::string> allowed;  // worker public keys (Z85)
};
struct ClientKeys {
  KeyPair worker;
  std::string coordinator_public;
};

// From a key folder written by WriteKeyDir.
Result<ServerKeys> LoadServerKeys(const std::string& dir);
Result<ClientKeys> LoadClientKeys(const std::string& dir);

// The ZAP handler: accepts CURVE clients whose key is allowed, refuses the
// rest. Lives while the coordinator's socket does; start it before binding.
class Authenticator {
 public:
  Authenticator(zmq::context_t& context, std::set<std::string> allowed);
  ~Authenticator();
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;
  int64_t accepted() const { return accepted_; }
  int64_t refused() const { return refused_; }

 private:
  void Loop();

  zmq::socket_t socket_;
  std::set<std::string> allowed_;  // Z85
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> accepted_{0}, refused_{0};
  std::thread thread_;
};

// Socket options for each side (call before bind / connect).
void ConfigureServer(zmq::socket_t& socket, const ServerKeys& keys);
void ConfigureClient(zmq::socket_t& socket, const ClientKeys& keys);

}  // namespace masktune::security
