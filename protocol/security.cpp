#include "protocol/security.h"

#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "protocol/throttled_log.h"

namespace masktune::security {
namespace {

bool IsZ85Key(const std::string& s) {
  if (s.size() != 40) return false;
  uint8_t bin[32];
  return zmq_z85_decode(bin, s.c_str()) != nullptr;
}

std::string Trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r\n") - a + 1);
}

Status WriteFile(const std::filesystem::path& path, const std::string& text, bool secret) {
  const std::string tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return Status::Error(path.string() + ": cannot write");
    out << text;
    if (!out) return Status::Error(path.string() + ": write failed");
  }
  if (::chmod(tmp.c_str(), secret ? 0600 : 0644) != 0)
    return Status::Error(path.string() + ": cannot set its mode");
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::Error(path.string() + ": " + ec.message());
  return Status::Ok();
}

std::string KeyText(const KeyPair& k, bool with_secret, const std::string& what) {
  std::string s = "# masktune CURVE key: " + what + "\npublic = " + k.public_key + "\n";
  if (with_secret) s += "secret = " + k.secret_key + "\n";
  return s;
}

Result<KeyPair> NewPair() {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0)
    return Status::Error(std::string("cannot make a CURVE key pair: ") + zmq_strerror(zmq_errno()) +
                         " (libzmq without CURVE?)");
  return KeyPair{pub, sec};
}

}  // namespace

Status WriteKeyDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::Error(dir + ": " + ec.message());
  const std::filesystem::path d(dir);
  for (const char* f : {"coordinator.key", "worker.key"})
    if (std::filesystem::exists(d / f))
      return Status::Error((d / f).string() + " exists; masktune keys new does not overwrite keys");
  MT_ASSIGN_OR_RETURN(KeyPair coordinator, NewPair());
  MT_ASSIGN_OR_RETURN(KeyPair worker, NewPair());
  MT_RETURN_IF_ERROR(
      WriteFile(d / "coordinator.key", KeyText(coordinator, true, "coordinator"), true));
  MT_RETURN_IF_ERROR(
      WriteFile(d / "coordinator.pub", KeyText(coordinator, false, "coordinator"), false));
  MT_RETURN_IF_ERROR(WriteFile(d / "worker.key", KeyText(worker, true, "worker"), true));
  MT_RETURN_IF_ERROR(WriteFile(d / "worker.pub", KeyText(worker, false, "worker"), false));
  return WriteFile(
      d / "authorized_workers",
      "# worker public keys the coordinator accepts, one per line\n" + worker.public_key + "\n",
      false);
}

Result<KeyPair> ReadKeyFile(const std::string& path, bool need_secret) {
  std::ifstream in(path);
  if (!in) return Status::Error(path + ": cannot open the key file");
  if (need_secret) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 0077) != 0)
      return Status::Error(path + ": a secret key readable by others; run chmod 600 " + path);
  }
  KeyPair k;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    line = Trim(line);
    if (line.empty() || line[0] == '#') continue;
    const size_t eq = line.find('=');
    const std::string name = eq == std::string::npos ? "" : Trim(line.substr(0, eq));
    const std::string value = eq == std::string::npos ? "" : Trim(line.substr(eq + 1));
    const std::string where = path + ":" + std::to_string(n) + ": ";
    if (name != "public" && name != "secret")
      return Status::Error(where + "expected 'public = KEY' or 'secret = KEY'");
    if (!IsZ85Key(value)) return Status::Error(where + name + ": not a 40-character Z85 key");
    (name == "public" ? k.public_key : k.secret_key) = value;
  }
  if (k.public_key.empty()) return Status::Error(path + ": no public key");
  if (need_secret && k.secret_key.empty()) return Status::Error(path + ": no secret key");
  return k;
}

Result<std::set<std::string>> ReadAllowList(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::Error(path + ": cannot open the allow list");
  std::set<std::string> keys;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    line = Trim(line);
    if (line.empty() || line[0] == '#') continue;
    if (line.rfind("public", 0) == 0 && line.find('=') != std::string::npos)
      line = Trim(line.substr(line.find('=') + 1));
    if (!IsZ85Key(line))
      return Status::Error(path + ":" + std::to_string(n) + ": not a 40-character Z85 public key");
    keys.insert(line);
  }
  if (keys.empty()) return Status::Error(path + ": no keys: no worker could connect");
  return keys;
}

Result<ServerKeys> LoadServerKeys(const std::string& dir) {
  ServerKeys k;
  MT_ASSIGN_OR_RETURN(k.coordinator, ReadKeyFile(dir + "/coordinator.key", true));
  MT_ASSIGN_OR_RETURN(k.allowed, ReadAllowList(dir + "/authorized_workers"));
  return k;
}

Result<ClientKeys> LoadClientKeys(const std::string& dir) {
  ClientKeys k;
  MT_ASSIGN_OR_RETURN(k.worker, ReadKeyFile(dir + "/worker.key", true));
  MT_ASSIGN_OR_RETURN(KeyPair server, ReadKeyFile(dir + "/coordinator.pub", false));
  k.coordinator_public = server.public_key;
  return k;
}

Authenticator::Authenticator(zmq::context_t& context, std::set<std::string> allowed)
    : socket_(context, zmq::socket_type::rep), allowed_(std::move(allowed)) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.bind("inproc://zeromq.zap.01");  // the ZAP endpoint libzmq asks
  thread_ = std::thread([this] { Loop(); });
}

Authenticator::~Authenticator() {
  stop_ = true;
  thread_.join();
}

void Authenticator::Loop() {
  protocol::ThrottledLog log(
      [](const std::string& line) { std::fprintf(stderr, "masktune: %s\n", line.c_str()); });
  while (!stop_) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(50));
    if (!(item.revents & ZMQ_POLLIN)) continue;
    // Request: version, request id, domain, address, identity, mechanism, credentials...
    std::vector<zmq::message_t> frames;
    do {
      zmq::message_t m;
      if (!socket_.recv(m, zmq::recv_flags::none)) break;
      frames.push_back(std::move(m));
    } while (socket_.get(zmq::sockopt::rcvmore));
    if (frames.size() < 6) {  // not a ZAP request; REP still owes a reply
      socket_.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(frames.size() > 1 ? frames[1].to_string() : std::string()),
                   zmq::send_flags::sndmore);
      socket_.send(zmq::str_buffer("500"), zmq::send_flags::sndmore);
      socket_.send(zmq::str_buffer("malformed ZAP request"), zmq::send_flags::sndmore);
      socket_.send(zmq::str_buffer(""), zmq::send_flags::sndmore);
      socket_.send(zmq::str_buffer(""), zmq::send_flags::none);
      continue;
    }
    const std::string request_id = frames[1].to_string(), address = frames[3].to_string();
    const std::string mechanism = frames[5].to_string();
    std::string client, reason;
    if (mechanism != "CURVE") {
      reason = "does not speak CURVE (" + mechanism + ")";
    } else if (frames.size() < 7 || frames[6].size() != 32) {
      reason = "sent no CURVE key";
    } else {
      char z85[41];
      zmq_z85_encode(z85, static_cast<const uint8_t*>(frames[6].data()), 32);
      client = z85;
      if (!allowed_.count(client)) reason = "key " + client + " is not authorized";
    }
    const bool ok = reason.empty();
    (ok ? accepted_ : refused_)++;
    if (!ok) log("refused a worker from " + address + ": " + reason);
    const std::string status = ok ? "200" : "400";
    const std::string text = ok ? "OK" : reason;
    socket_.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(status), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(text), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(client), zmq::send_flags::sndmore);  // user id
    socket_.send(zmq::str_buffer(""), zmq::send_flags::none);     // metadata
  }
}

void ConfigureServer(zmq::socket_t& socket, const ServerKeys& keys) {
  socket.set(zmq::sockopt::zap_domain, "masktune");
  socket.set(zmq::sockopt::curve_server, true);
  socket.set(zmq::sockopt::curve_secretkey, keys.coordinator.secret_key);
}

void ConfigureClient(zmq::socket_t& socket, const ClientKeys& keys) {
  socket.set(zmq::sockopt::curve_serverkey, keys.coordinator_public);
  socket.set(zmq::sockopt::curve_publickey, keys.worker.public_key);
  socket.set(zmq::sockopt::curve_secretkey, keys.worker.secret_key);
}

}  // namespace masktune::security
