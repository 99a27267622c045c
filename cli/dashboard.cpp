// masktune dashboard: a read-only HTTP server (Boost.Beast) over one
// database: the list of its studies, and per study the report `masktune
// report` writes, reloaded by the page while the study runs.
//
//   GET /                  the studies (state, counts), reloaded on change
//   GET /study/NAME        the study's report, live
//   GET /api/studies       [{"study", "state", "total", "settled", "running", "counts"}]
//   GET /api/study/NAME    one of those
//
// Every request opens its own read-only connections (SQLite's WAL lets the
// coordinator write meanwhile); nothing is ever written. A report page is
// rendered again only when the study's counts changed since the last one
// (the cache's key is the study's summary), and while it keeps changing at
// most once per 2 s or per 10 times the last render's time, whichever is
// longer (the page may be that much behind; its live script polls at that
// pace anyway): however many readers, rendering a running study's report
// takes at most a tenth of one core. An acceptor thread hands
// connections to a fixed pool of threads (--threads); each serves its connection's requests
// (keep-alive) with 10 s socket timeouts, so a slow client holds one thread
// at most that long. SIGINT/SIGTERM stop it at once (exit 0): it holds
// nothing to save.
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/html_report.h"

namespace masktune::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr std::chrono::milliseconds kMinRenderInterval{2000};
constexpr int kRenderShare = 10;  // renders take at most 1/kRenderShare of a core

struct DashboardFlags {
  std::string db, bind = "127.0.0.1:8080";
  int threads = 8;
};

struct Reply {
  http::status status = http::status::ok;
  std::string type = "text/html; charset=utf-8";
  std::string body;
};

// "%2F" -> "/", "+" kept; nullopt for a malformed escape.
std::optional<std::string> PercentDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(s[i + 2])))
      return std::nullopt;
    out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
    i += 2;
  }
  return out;
}

class Dashboard {
 public:
  Dashboard(std::string db, std::string exe) : db_(std::move(db)), exe_(std::move(exe)) {}

  Reply Handle(const std::string& method, const std::string& target) {
    if (method != "GET" && method != "HEAD")
      return {http::status::method_not_allowed, "text/html; charset=utf-8",
              RenderErrorPage(405, "Method Not Allowed", "only GET and HEAD: it never writes")};
    const std::string raw_path = target.substr(0, target.find('?'));
    const std::optional<std::string> decoded = PercentDecode(raw_path);
    if (!decoded) return NotFound(raw_path);
    const std::string& path = *decoded;
    if (path == "/" || path == "/index.html") {
      auto studies = ListStudies(db_);
      if (!studies.ok()) return Error(studies.status().message());
      return {http::status::ok, "text/html; charset=utf-8",
              RenderStudyIndex(db_, studies.value(), true)};
    }
    if (path == "/api/studies") {
      auto studies = ListStudies(db_);
      if (!studies.ok()) return Error(studies.status().message());
      std::string body = "[";
      for (size_t i = 0; i < studies->size(); ++i)
        body += (i ? "," : "") + SummaryJson((*studies)[i]);
      return {http::status::ok, "application/json", body + "]"};
    }
    const std::string api = "/api/study/", page = "/study/";
    if (path.rfind(api, 0) == 0 && path.size() > api.size()) {
      auto summary = Summary(path.substr(api.size()));
      if (!summary.ok()) return Error(summary.status().message());
      if (!summary.value()) return NotFound(path);
      return {http::status::ok, "application/json", SummaryJson(*summary.value())};
    }
    if (path.rfind(page, 0) == 0 && path.size() > page.size())
      return Report(path.substr(page.size()));
    return NotFound(path);
  }

 private:
  Reply NotFound(const std::string& path) {
    return {http::status::not_found, "text/html; charset=utf-8",
            RenderErrorPage(404, "Not Found", "nothing at " + path)};
  }
  Reply Error(const std::string& message) {
    std::fprintf(stderr, "masktune dashboard: %s\n", message.c_str());
    return {http::status::internal_server_error, "text/html; charset=utf-8",
            RenderErrorPage(500, "Internal Server Error", message)};
  }

  Result<std::optional<StudySummary>> Summary(const std::string& study) {
    MT_ASSIGN_OR_RETURN(std::vector<StudySummary> all, ListStudies(db_));
    for (StudySummary& s : all)
      if (s.name == study) return std::optional<StudySummary>(std::move(s));
    return std::optional<StudySummary>();
  }

  Reply Report(const std::string& study) {
    auto summary = Summary(study);
    if (!summary.ok()) return Error(summary.status().message());
    if (!summary.value()) return NotFound("/study/" + study);
    const std::string key = SummaryJson(*summary.value());
    std::lock_guard<std::mutex> lock(
        render_mu_);  // one render at a time; others then hit the cache
    const auto now = std::chrono::steady_clock::now();
    if (auto it = cache_.find(study);
        it != cache_.end() && (it->second.key == key || now < it->second.next))
      return {http::status::ok, "text/html; charset=utf-8", it->second.page};
    LoadedReport loaded = LoadStudyReport(db_, study);
    if (!loaded.report) {
      if (loaded.code == kExitBadInput) return NotFound("/study/" + study);
      return Error(loaded.message);
    }
    RenderOptions o;
    o.exe = exe_;
    o.live = true;
    o.api_url = "/api/study/" + UrlEncode(study);
    o.index_url = "/";
    std::string html = RenderReport(*loaded.report, o);
    const auto took = std::chrono::steady_clock::now() - now;
    cache_[study] = {key, html,
                     now + std::max<std::chrono::steady_clock::duration>(kMinRenderInterval,
                                                                         kRenderShare * took)};
    return {http::status::ok, "text/html; charset=utf-8", std::move(html)};
  }

  std::string db_, exe_;
  std::mutex render_mu_;
  struct Rendered {
    std::string key, page;
    std::chrono::steady_clock::time_point next;  // no new render before, even if changed
  };
  std::map<std::string, Rendered> cache_;  // by study
};

// Serves one connection's requests until it closes, errs or times out.
void Serve(Dashboard& dashboard, tcp::socket socket) {
  timeval timeout{10, 0};
  setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  beast::flat_buffer buffer;
  for (;;) {
    beast::error_code ec;
    http::request_parser<http::string_body> parser;
    parser.body_limit(64 * 1024);
    http::read(socket, buffer, parser, ec);
    if (ec) break;  // closed, timed out or malformed: drop the connection
    const auto& req = parser.get();
    Reply reply;
    try {
      reply = dashboard.Handle(std::string(req.method_string()), std::string(req.target()));
    } catch (
        const std::exception& e) {  // a bug or out of memory: this request fails, not the server
      std::fprintf(stderr, "masktune dashboard: internal error: %s\n", e.what());
      reply = {http::status::internal_server_error, "text/html; charset=utf-8",
               RenderErrorPage(500, "Internal Server Error", e.what())};
    }
    http::response<http::string_body> res{reply.status, req.version()};
    res.set(http::field::server, "masktune dashboard");
    res.set(http::field::content_type, reply.type);
    res.set(http::field::cache_control, "no-store");
    res.set("X-Content-Type-Options", "nosniff");
    res.set("Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
            "connect-src 'self'; img-src data:");
    if (reply.status == http::status::method_not_allowed) res.set(http::field::allow, "GET, HEAD");
    res.keep_alive(req.keep_alive());
    if (req.method() == http::verb::head) {
      res.content_length(reply.body.size());
    } else {
      res.body() = reply.body;
      res.prepare_payload();
    }
    if (req.method() == http::verb::head) {
      http::response_serializer<http::string_body> sr{res};
      http::write_header(socket, sr, ec);
    } else {
      http::write(socket, res, ec);
    }
    if (ec || !res.keep_alive()) break;
  }
  beast::error_code ignored;
  socket.shutdown(tcp::socket::shutdown_both, ignored);
}

int RunDashboard(const DashboardFlags& f) {
  auto bad = [](const std::string& m) {
    std::fprintf(stderr, "masktune dashboard: %s\n", m.c_str());
    return kExitBadInput;
  };
  // --bind HOST:PORT, HOST an IP address (or localhost); [v6]:PORT for IPv6.
  const size_t colon = f.bind.rfind(':');
  const std::string expected = "--bind: '" + f.bind +
                               "': expected HOST:PORT with an IP address and a port 0-65535, "
                               "e.g. 127.0.0.1:8080";
  if (colon == std::string::npos || colon == 0 || colon + 1 == f.bind.size()) return bad(expected);
  std::string host = f.bind.substr(0, colon);
  const std::string port_text = f.bind.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host == "localhost") host = "127.0.0.1";
  if (port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string::npos)
    return bad(expected);
  const int port = std::stoi(port_text);
  if (port > 65535) return bad(expected);
  beast::error_code ec;
  const asio::ip::address address = asio::ip::make_address(host, ec);
  if (ec) return bad(expected);
  if (f.threads < 1 || f.threads > 256) return bad("--threads: expected 1 to 256");

  // The database must be a masktune database now; studies may come later.
  std::error_code fec;
  if (!std::filesystem::exists(f.db, fec)) return bad(f.db + ": no such database");
  if (auto studies = ListStudies(f.db); !studies.ok()) {
    std::fprintf(stderr, "masktune dashboard: %s\n", studies.status().message().c_str());
    return kExitFailure;
  }

  asio::io_context ioc;
  tcp::acceptor acceptor(ioc);
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return bad("--bind: cannot listen on " + f.bind + ": " + ec.message());

  // The stop signals go to the waiting main thread only.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::error_code self_ec;
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe", self_ec).string();
  Dashboard dashboard(f.db, self_ec ? "" : exe);
  std::mutex mu;
  std::condition_variable ready;
  std::deque<tcp::socket> queue;
  std::vector<std::thread> pool;
  for (int i = 0; i < f.threads; ++i)
    pool.emplace_back([&] {
      for (;;) {
        std::unique_lock<std::mutex> lock(mu);
        ready.wait(lock, [&] { return !queue.empty(); });
        tcp::socket s = std::move(queue.front());
        queue.pop_front();
        lock.unlock();
        Serve(dashboard, std::move(s));
      }
    });
  std::thread acceptor_thread([&] {
    for (;;) {
      tcp::socket s(ioc);
      beast::error_code aec;
      acceptor.accept(s, aec);
      if (aec) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // out of descriptors
        continue;
      }
      std::lock_guard<std::mutex> lock(mu);
      queue.push_back(std::move(s));
      ready.notify_one();
    }
  });

  const tcp::endpoint bound = acceptor.local_endpoint(ec);
  const std::string shown =
      (address.is_v6() ? "[" + address.to_string() + "]" : address.to_string()) + ":" +
      std::to_string(bound.port());
  if (!address.is_loopback())
    std::fprintf(stderr,
                 "masktune dashboard: %s is not a loopback address: anyone who can reach it "
                 "can read the studies (an SSH tunnel to 127.0.0.1 is safer)\n",
                 shown.c_str());
  std::printf("dashboard: http://%s/ serving %s read-only (%d threads; Ctrl-C stops)\n",
              shown.c_str(), f.db.c_str(), f.threads);
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop, &sig);
  std::printf("dashboard: stopped\n");
  std::fflush(stdout);
  std::_Exit(kExitOk);  // the threads hold only read-only connections
}

}  // namespace

Action AddDashboardCommand(CLI::App& app) {
  auto f = std::make_shared<DashboardFlags>();
  CLI::App* cmd = app.add_subcommand(
      "dashboard",
      "Serve a database's studies over HTTP, read-only: the list of studies and each\n"
      "study's report, live while it runs (the page polls /api/study/NAME).");
  cmd->add_option("--db", f->db, "SQLite database")->required();
  cmd->add_option("--bind", f->bind,
                  "HOST:PORT to listen on (default 127.0.0.1:8080; port 0: any)");
  cmd->add_option("--threads", f->threads, "requests served at once (default 8)");
  cmd->footer(
      "Pages: / (studies), /study/NAME (the report), /api/studies and /api/study/NAME (JSON).\n"
      "The database is opened read-only for every request and never written. It listens on\n"
      "loopback unless told otherwise; from another machine use an SSH tunnel:\n"
      "  ssh -L 8080:127.0.0.1:8080 head-node   then open http://127.0.0.1:8080/\n"
      "Exit codes: 0 stopped by SIGINT/SIGTERM, 1 storage, 2 bad input (no such database,\n"
      "a bad --bind or one that cannot be listened on).");
  return [f] { return RunDashboard(*f); };
}

}  // namespace masktune::cli
