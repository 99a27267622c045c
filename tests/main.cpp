// The test binary's main: doctest's own, plus a listener that prints one line
// per test case as it finishes, flushed, so a long run shows where it is:
//
//   [ 12/130] test_runtime.cpp: sweep over tcp ... ok 2.3 s
//
// Test cases skipped by a decorator (`* doctest::skip(cond)`, with the reason
// as `* doctest::description(...)`) are counted as skipped in doctest's
// summary; the listener names each reason once, just before that summary:
//
//   skipped: no CUDA device (4 test cases in test_cuda.cpp)
//
// The total comes from a first, silent pass over the same command line that
// only lists the test cases passing its filters.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <iomanip>
#include <map>
#include <ostream>
#include <set>
#include <string>
#include <vector>

namespace {

// What the listing pass found: the test cases that will run, and those a
// skip decorator holds back, by reason.
struct Plan {
  bool listing = false;  // the listing pass is running
  bool known = false;    // the listing pass saw the list
  int runs = 0;
  struct Skip {
    int count = 0;
    std::set<std::string> files;
  };
  std::map<std::string, Skip> skips;
};
Plan plan;

std::string BaseName(const doctest::String& path) {
  const std::string p = path.c_str();
  const auto slash = p.find_last_of("/\\");
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

std::string SkipReason(const doctest::TestCaseData& tc) {
  return tc.m_description && *tc.m_description ? tc.m_description : "skip decorator";
}

class Progress : public doctest::IReporter {
 public:
  explicit Progress(const doctest::ContextOptions& options) : options_(options) {}

  void report_query(const doctest::QueryData& query) override {
    if (!plan.listing || query.data == nullptr) return;
    plan.known = true;
    for (unsigned i = 0; i < query.num_data; ++i) {
      const doctest::TestCaseData& tc = *query.data[i];
      if (tc.m_skip) {
        auto& skip = plan.skips[SkipReason(tc)];
        ++skip.count;
        skip.files.insert(BaseName(tc.m_file));
      } else {
        ++plan.runs;
      }
    }
  }

  void test_run_start() override {
    if (!plan.known) return;
    total_ = plan.runs;
    if (options_.no_skip)
      for (const auto& [reason, skip] : plan.skips) total_ += skip.count;
  }

  void test_run_end(const doctest::TestRunStats&) override {
    if (options_.no_skip) return;  // they ran
    std::ostream& out = *options_.cout;
    for (const auto& [reason, skip] : plan.skips) {
      out << "skipped: " << reason << " (" << skip.count << " test case"
          << (skip.count == 1 ? "" : "s") << " in ";
      const char* sep = "";
      for (const auto& file : skip.files) out << sep << file, sep = ", ";
      out << ")\n";
    }
    out.flush();
  }

  void test_case_start(const doctest::TestCaseData& tc) override { current_ = &tc; }
  void test_case_reenter(const doctest::TestCaseData&) override {}

  void test_case_end(const doctest::CurrentTestCaseStats& stats) override {
    ++done_;
    std::ostream& out = *options_.cout;
    const int width = static_cast<int>(std::to_string(total_ > 0 ? total_ : done_).size());
    out << "[" << std::setw(width) << done_;
    if (total_ > 0) out << "/" << total_;
    out << "] ";
    if (current_) out << BaseName(current_->m_file) << ": " << current_->m_name;
    out << " ... " << (stats.testCaseSuccess ? "ok" : "FAILED") << " " << std::fixed
        << std::setprecision(1) << stats.seconds << " s" << std::endl;  // flushed
    current_ = nullptr;
  }

  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}

 private:
  const doctest::ContextOptions& options_;
  const doctest::TestCaseData* current_ = nullptr;
  int done_ = 0;
  int total_ = 0;
};

REGISTER_LISTENER("progress", 1, Progress);

}  // namespace

int main(int argc, char** argv) {
  {
    // The listing pass: the same filters, skip decorators ignored, no output.
    // (--list-test-cases is a flag, which setOption cannot set.)
    std::vector<const char*> args(argv, argv + argc);
    args.push_back("--list-test-cases");
    doctest::Context listing(static_cast<int>(args.size()), args.data());
    listing.setOption("no-skip", true);
    listing.setOption("quiet", true);
    plan.listing = true;
    listing.run();
    plan.listing = false;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
