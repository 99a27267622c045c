// File: engine/benchmarks/ruler_tasks.h
//
// RULER's needle-in-a-haystack tasks (Hsieh et al., 2024), generated natively:
// niah_single_1/2/3, niah_multikey_1/2/3, niah_multivalue, niah_multiquery.
// A sample is a context of a requested length in tokens (haystack of repeated
// filler sentences, or of generated essay-like text), needles of the form
// "One of the special magic {numbers|words|uuids} for KEY is: VALUE.", a
// question, the answer prefix and the expected values. Scoring is RULER's:
// the fraction of expected values found verbatim in the answer.
// Same (task, length, seed, index) -> same sample on any machine.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/status.h"

namespace masktune::ruler {

struct Sample {
  std::string task;
  std::string context;                // instruction + haystack with the needles
  std::string question;               // what is asked after the context
  std::string answer_prefix;          // RULER's answer prefix, appended after the chat prompt
  std::vector<std::string> expected;  // values the answer must contain
};

// Counts tokens of a text, so the haystack can be sized to a token budget.
using TokenCounter = std::function<int64_t(const std::string&)>;

// What fills the context around the needles (RULER's type_haystack).
enum class Haystack {
  kNoise,    // "The grass is green. The sky is blue. ..." repeated, one line per repeat
  kEssay,    // essay-like prose (generated here; RULER uses Paul Graham's essays)
  kNeedles,  // distractor needles with other keys and values, one per line
};

// What keys and values are (RULER's type_needle_k / type_needle_v).
enum class NeedleType {
  kWords,    // adjective-noun pairs, e.g. "quiet-harbor"
  kNumbers,  // 7-digit numbers
  kUuids,    // version-4 UUIDs, lowercase
};

// One task's configuration, as in RULER's scripts/synthetic.yaml.
struct TaskSpec {
  std::string name;
  Haystack haystack = Haystack::kNoise;
  NeedleType key_type = NeedleType::kWords;
  NeedleType value_type = NeedleType::kNumbers;
  int num_keys = 1;     // num_needle_k; a sample has max(num_keys, num_queries) keys
  int num_values = 1;   // num_needle_v: values (and needles) per key
  int num_queries = 1;  // num_needle_q: keys asked about
};

// The names above; a name not among them is an error listing the valid ones.
const std::vector<std::string>& TaskNames();

// The configuration of `task`, or an error listing the valid names.
Result<TaskSpec> FindTask(const std::string& task);

// Sample `index` (0 <= index < 2^32) of `task` whose `context + "\n" + question`
// fills about `context_tokens` tokens (never more) as counted by `count`, which is
// called O(log n) times. A budget too small for the instruction, the needles and
// the question alone is an error naming the task and the length.
Result<Sample> Generate(const std::string& task, int64_t context_tokens, uint64_t seed,
                        int64_t index, const TokenCounter& count);

// RULER's string-match score in [0, 1]: the fraction of `expected` that occur
// in `answer` (case-insensitive); 0 when `expected` is empty.
double Score(const std::string& answer, const std::vector<std::string>& expected);

}  // namespace masktune::ruler
