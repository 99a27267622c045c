// File: engine/benchmarks/ruler_niah.h
//
// Pieces of the ruler_niah benchmark (engine/benchmarks/ruler_niah.cpp) that
// other commands reuse (masktune capture): where the default model is, a
// process-wide model cache, and how a RULER sample becomes the model's
// prompt tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/model/llama.h"
#include "engine/status.h"

namespace masktune {

// The default model: $MASKTUNE_MODEL, else models/ under the current folder,
// else models/ beside the folder holding this binary (build/../models).
std::string DefaultModelPath();

// `path` loaded once per process (shared by every benchmark of it); a
// missing file is an error naming it and scripts/fetch_model.sh.
Result<std::shared_ptr<const model::LlamaModel>> SharedModel(const std::string& path);

// Sample `index` of `task` as the model sees it: the chat template around
//   user: {context}\n{question}     assistant: {answer prefix}
// tokenised and split at the end of the context.
struct RulerPrompt {
  std::vector<int32_t> context, question;
  std::vector<std::string> expected;
};
Result<RulerPrompt> BuildRulerPrompt(const model::Tokenizer& tok, const std::string& task,
                                     int64_t context_tokens, uint64_t seed, int64_t index);

}  // namespace masktune
