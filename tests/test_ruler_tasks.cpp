// File: tests/test_ruler_tasks.cpp
//
// RULER needle-in-a-haystack generators (engine/benchmarks/ruler_tasks.h):
// determinism, needles against the expected values, RULER's templates, the
// token budget under simple counters, errors, and the string-match score.
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "engine/benchmarks/ruler_tasks.h"

namespace masktune::ruler {
namespace {

int64_t CountWords(const std::string& text) {
  int64_t n = 0;
  bool in_word = false;
  for (char c : text) {
    const bool space = std::isspace(static_cast<unsigned char>(c)) != 0;
    n += !space && !in_word;
    in_word = !space;
  }
  return n;
}

int64_t CountQuarterChars(const std::string& text) {
  return static_cast<int64_t>((text.size() + 3) / 4);
}

size_t Occurrences(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

Sample Make(const std::string& task, int64_t tokens, uint64_t seed = 7, int64_t index = 0,
            const TokenCounter& count = CountWords) {
  auto r = Generate(task, tokens, seed, index, count);
  INFO(task, " ", tokens, ": ", r.status().message());
  REQUIRE(r.ok());
  return std::move(r).value();
}

struct Needle {
  std::string key, value;
  size_t at;  // where the value starts in the context
};

// Every "One of the special magic T for KEY is: VALUE." in `context`.
std::vector<Needle> Needles(const std::string& context) {
  std::vector<Needle> out;
  const std::string head = "One of the special magic ";
  for (size_t at = context.find(head); at != std::string::npos; at = context.find(head, at + 1)) {
    const size_t key = context.find(" for ", at) + 5;
    const size_t is = context.find(" is: ", key);
    const size_t dot = context.find('.', is + 5);
    REQUIRE(dot != std::string::npos);
    out.push_back({context.substr(key, is - key), context.substr(is + 5, dot - is - 5), is + 5});
  }
  return out;
}

bool IsNumber(const std::string& s) {
  return s.size() == 7 && s[0] != '0' && std::all_of(s.begin(), s.end(), ::isdigit);
}

bool IsUuid(const std::string& s) {
  if (s.size() != 36 || s[14] != '4' || std::string("89ab").find(s[19]) == std::string::npos)
    return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (s[i] == '-')) return false;
    if (!dash && std::string("0123456789abcdef").find(s[i]) == std::string::npos) return false;
  }
  return true;
}

bool IsWordPair(const std::string& s) {
  const size_t dash = s.find('-');
  return dash != std::string::npos && dash > 0 && dash + 1 < s.size() &&
         s.find('-', dash + 1) == std::string::npos &&
         std::all_of(s.begin(), s.end(), [](char c) { return c == '-' || std::islower(c); });
}

bool OfType(const std::string& s, NeedleType type) {
  switch (type) {
    case NeedleType::kWords:
      return IsWordPair(s);
    case NeedleType::kNumbers:
      return IsNumber(s);
    case NeedleType::kUuids:
      return IsUuid(s);
  }
  return false;
}

TEST_CASE("ruler: tasks are RULER's synthetic.yaml niah configurations") {
  const std::vector<std::string> names = {"niah_single_1",   "niah_single_2",   "niah_single_3",
                                          "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
                                          "niah_multivalue", "niah_multiquery"};
  CHECK(TaskNames() == names);
  const TaskSpec s1 = FindTask("niah_single_1").value();
  CHECK((s1.haystack == Haystack::kNoise && s1.key_type == NeedleType::kWords &&
         s1.value_type == NeedleType::kNumbers));
  const TaskSpec s3 = FindTask("niah_single_3").value();
  CHECK((s3.haystack == Haystack::kEssay && s3.value_type == NeedleType::kUuids));
  const TaskSpec mk1 = FindTask("niah_multikey_1").value();
  CHECK((mk1.haystack == Haystack::kEssay && mk1.num_keys == 4 && mk1.num_queries == 1));
  const TaskSpec mk3 = FindTask("niah_multikey_3").value();
  CHECK((mk3.haystack == Haystack::kNeedles && mk3.key_type == NeedleType::kUuids &&
         mk3.value_type == NeedleType::kUuids));
  CHECK(FindTask("niah_multivalue").value().num_values == 4);
  CHECK(FindTask("niah_multiquery").value().num_queries == 4);
}

TEST_CASE("ruler: same arguments give the same sample; index and seed change it") {
  for (const auto& task : TaskNames()) {
    INFO(task);
    const Sample a = Make(task, 1024, 3, 5);
    const Sample b = Make(task, 1024, 3, 5);
    CHECK(a.task == task);
    CHECK(a.context == b.context);
    CHECK(a.question == b.question);
    CHECK(a.answer_prefix == b.answer_prefix);
    CHECK(a.expected == b.expected);
    const Sample other_index = Make(task, 1024, 3, 6);
    const Sample other_seed = Make(task, 1024, 4, 5);
    CHECK(other_index.expected != a.expected);
    CHECK(other_index.context != a.context);
    CHECK(other_seed.expected != a.expected);
    CHECK(other_seed.context != a.context);
  }
}

TEST_CASE("ruler: the needles hold the expected values where the question asks") {
  for (const auto& task : TaskNames()) {
    const TaskSpec spec = FindTask(task).value();
    for (int64_t index = 0; index < 3; ++index) {
      INFO(task, " sample ", index);
      const Sample s = Make(task, 2048, 11, index);
      const std::vector<Needle> needles = Needles(s.context);
      // Keys the question asks about, in the order it names them.
      std::vector<std::string> queried;
      for (const auto& n : needles)
        if (s.question.find(" for " + n.key + " ") != std::string::npos ||
            s.question.find(" " + n.key + ",") != std::string::npos ||
            s.question.find(" " + n.key + " mentioned") != std::string::npos)
          if (std::find(queried.begin(), queried.end(), n.key) == queried.end())
            queried.push_back(n.key);
      CHECK(queried.size() == static_cast<size_t>(spec.num_queries));
      std::vector<std::string> found;
      for (const auto& n : needles) {
        CHECK(OfType(n.key, spec.key_type));
        CHECK(OfType(n.value, spec.value_type));
        if (std::find(queried.begin(), queried.end(), n.key) != queried.end())
          found.push_back(n.value);
      }
      const size_t per_query = static_cast<size_t>(spec.num_values);
      CHECK(s.expected.size() == per_query * static_cast<size_t>(spec.num_queries));
      std::vector<std::string> expected = s.expected;
      std::sort(expected.begin(), expected.end());
      std::sort(found.begin(), found.end());
      CHECK(found == expected);
      // Each value occurs once, inside the needle of a queried key.
      for (const auto& v : s.expected) {
        CHECK(Occurrences(s.context, v) == 1);
        const auto it = std::find_if(needles.begin(), needles.end(),
                                     [&](const Needle& n) { return n.value == v; });
        REQUIRE(it != needles.end());
        CHECK(s.context.find(v) == it->at);
        CHECK(s.answer_prefix.find(it->key) != std::string::npos);
      }
      // The sample's own needles; a needle haystack adds distractors with other keys.
      const size_t own =
          static_cast<size_t>(std::max(spec.num_keys, spec.num_queries) * spec.num_values);
      if (spec.haystack == Haystack::kNeedles)
        CHECK(needles.size() > 20);
      else
        CHECK(needles.size() == own);
    }
  }
}

TEST_CASE("ruler: prompts follow RULER's template, singular for one value") {
  const Sample one = Make("niah_single_1", 512);
  const std::string key = Needles(one.context)[0].key;
  CHECK(one.context.rfind("A special magic number is hidden within the following text. Make sure "
                          "to memorize it. I will quiz you about the number afterwards.\n",
                          0) == 0);
  CHECK(one.question ==
        "What is the special magic number for " + key + " mentioned in the provided text?");
  CHECK(one.answer_prefix ==
        "The special magic number for " + key + " mentioned in the provided text is");
  CHECK(one.context.find("One of the special magic numbers for " + key + " is: " + one.expected[0] +
                         ".") != std::string::npos);
  // Noise haystack: RULER's five sentences per line, the needle on a line of its own.
  const std::string noise =
      "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
  const std::string body = one.context.substr(one.context.find('\n') + 1);
  size_t lines = 0, needle_lines = 0;
  for (size_t at = 0; at <= body.size();) {
    size_t end = body.find('\n', at);
    if (end == std::string::npos) end = body.size();
    const std::string line = body.substr(at, end - at);
    if (line.rfind("One of the special magic", 0) == 0) {
      ++needle_lines;
    } else {
      CHECK(noise.rfind(line, 0) == 0);  // a whole repeat, or the last one cut short
      if (end < body.size() && body.compare(end + 1, 3, "One") != 0) CHECK(line == noise);
      ++lines;
    }
    at = end + 1;
  }
  CHECK(needle_lines == 1);
  CHECK(lines > 10);

  const Sample multi = Make("niah_multivalue", 1024);
  CHECK(multi.context.rfind("Some special magic numbers are hidden within the following text. "
                            "Make sure to memorize it. I will quiz you about the numbers "
                            "afterwards.\n",
                            0) == 0);
  CHECK(multi.question.rfind("What are all the special magic numbers for ", 0) == 0);
  CHECK(multi.answer_prefix.size() > 4);
  CHECK(multi.answer_prefix.substr(multi.answer_prefix.size() - 4) == " are");
  // Essay haystack: one line of prose after the instruction.
  CHECK(Occurrences(multi.context, "\n") == 1);

  const Sample query = Make("niah_multiquery", 1024);
  CHECK(Occurrences(query.question, ", ") == 3);
  CHECK(Occurrences(query.question, ", and ") == 1);

  const Sample uuid = Make("niah_single_3", 1024);
  CHECK(uuid.question.rfind("What is the special magic uuid for ", 0) == 0);
  CHECK(IsUuid(uuid.expected[0]));
}

TEST_CASE("ruler: needles sit between sentences at spread-out depths") {
  double lowest = 1, highest = 0;
  for (int64_t index = 0; index < 24; ++index) {
    const Sample s = Make("niah_single_2", 1024, 1, index);
    const size_t at = s.context.find("One of the special magic");
    const size_t end = s.context.find('.', at) + 1;
    const size_t body = s.context.find('\n') + 1;
    CHECK((at == body || s.context.compare(at - 2, 2, ". ") == 0));
    CHECK((end == s.context.size() || s.context[end] == ' '));
    const double depth = static_cast<double>(at - body) / static_cast<double>(s.context.size());
    lowest = std::min(lowest, depth);
    highest = std::max(highest, depth);
  }
  CHECK(lowest < 0.2);
  CHECK(highest > 0.8);
}

TEST_CASE("ruler: the prompt fills the token budget without passing it") {
  for (const int64_t length : {512, 4096, 32768}) {
    for (const auto& task : TaskNames()) {
      INFO(task, " at ", length);
      int calls = 0;
      const TokenCounter counter = [&](const std::string& text) {
        ++calls;
        return CountWords(text);
      };
      const Sample s = Make(task, length, 5, 2, counter);
      const int64_t used = CountWords(s.context + "\n" + s.question);
      CHECK(used <= length);
      // Within 2%, or one haystack unit (a needle line is 10 words) at the shortest length.
      CHECK(used >= length - std::max<int64_t>(length / 50, 10));
      CHECK(calls <= 16);
    }
  }
  for (const auto& task : {"niah_single_1", "niah_multikey_2", "niah_multiquery"}) {
    INFO(task);
    const Sample s = Make(task, 4096, 5, 2, CountQuarterChars);
    const int64_t used = CountQuarterChars(s.context + "\n" + s.question);
    CHECK(used <= 4096);
    CHECK(used >= 4096 - 4096 / 50);
  }
}

TEST_CASE("ruler: errors name the task and the length") {
  auto unknown = Generate("niah_single_9", 1024, 0, 0, CountWords);
  REQUIRE(!unknown.ok());
  CHECK(unknown.status().message() ==
        "ruler: unknown task 'niah_single_9' (valid: niah_single_1, niah_single_2, "
        "niah_single_3, niah_multikey_1, niah_multikey_2, niah_multikey_3, niah_multivalue, "
        "niah_multiquery)");
  CHECK(!FindTask("").ok());

  auto small = Generate("niah_multivalue", 40, 0, 0, CountWords);
  REQUIRE(!small.ok());
  const std::string m = small.status().message();
  INFO(m);
  CHECK(m.rfind("ruler: niah_multivalue: context_tokens 40 is too small: the instruction, "
                "needles and question alone take ",
                0) == 0);
  CHECK(m.find(" tokens") != std::string::npos);

  auto index = Generate("niah_single_1", 1024, 0, -1, CountWords);
  REQUIRE(!index.ok());
  CHECK(index.status().message() ==
        "ruler: niah_single_1: sample index -1 is out of range [0, 4294967295]");
}

TEST_CASE("ruler: score is the fraction of expected values in the answer") {
  const std::vector<std::string> expected = {"1234567", "7654321", "quiet-harbor", "2345678"};
  CHECK(Score("1234567, 7654321, quiet-harbor and 2345678.", expected) == 1.0);
  CHECK(Score("The numbers are 1234567 and Quiet-Harbor.", expected) == 0.5);
  CHECK(Score("QUIET-HARBOR", {"quiet-harbor"}) == 1.0);
  CHECK(Score("I do not know.", expected) == 0.0);
  CHECK(Score("", expected) == 0.0);
  CHECK(Score("anything", {}) == 0.0);
}

}  // namespace
}  // namespace masktune::ruler
