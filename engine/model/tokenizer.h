// File: engine/model/tokenizer.h
//
// The byte-level BPE tokenizer of a GGUF model (tokenizer.ggml.model "gpt2"):
// the GGUF's own vocabulary, merges, token types and pre-tokenizer
// (tokenizer.ggml.pre), special tokens matched verbatim before BPE, and
// bytes mapped to printable characters as GPT-2 does. Also the chat template
// of SmolLM2-Instruct (ChatML) for prompts.
//
// Encoding, in order: (1) special tokens are cut out of the text, leftmost
// and longest first (control tokens only when `parse_special`; user-defined
// tokens always, as llama.cpp does); (2) each stretch between them is split
// by the pre-tokenizer's expressions, written by hand over Unicode classes
// (see tokenizer.cpp); (3) each piece's bytes become GPT-2 byte characters
// and are merged by BPE, lowest merge rank first, leftmost among equals.
// Nothing is added around the text (no BOS): callers that want one ask
// add_bos(). Encoding never fails: any byte string (invalid UTF-8 included)
// encodes, and Decode gives the same bytes back, except bytes the vocabulary
// has no token for, which are dropped (see tokenizer.cpp).
// Thread-safety: a const Tokenizer may be used from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/model/gguf.h"
#include "engine/status.h"

namespace masktune::model {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// Everything a tokenizer is built from, as the GGUF keys hold it; FromGguf
// fills it, tests write small ones by hand.
struct TokenizerSpec {
  std::vector<std::string> tokens;   // tokenizer.ggml.tokens, in GPT-2 byte characters
  std::vector<std::string> merges;   // tokenizer.ggml.merges: "left right", best first
  std::vector<int32_t> token_types;  // empty (all normal) or one per token: 3 control, 4 user
  std::string pre = "gpt2";          // tokenizer.ggml.pre: "gpt2" or "smollm"
  int32_t bos = -1, eos = -1;        // -1: none
  int32_t unknown = -1, padding = -1;
  bool add_bos = false;       // tokenizer.ggml.add_bos_token
  std::string chat_template;  // empty: plain ChatML without a default system turn
};

class Tokenizer {
 public:
  // Reads tokenizer.ggml.* from `file`; an unsupported model or pre-tokenizer
  // is an error naming the file and the value.
  static Result<Tokenizer> FromGguf(const GgufFile& file);
  // Builds from `spec`; errors begin with `source` (a file name, or what the spec is).
  static Result<Tokenizer> Build(const TokenizerSpec& spec, const std::string& source);

  // Token ids of `text`. Special tokens written in the text ("<|im_start|>")
  // become their ids when `parse_special`; otherwise they are plain text.
  std::vector<int32_t> Encode(const std::string& text, bool parse_special = true) const;
  // The text of `ids` (special tokens included as their text); ids outside the
  // vocabulary write nothing.
  std::string Decode(const std::vector<int32_t>& ids) const;
  // The bytes one token decodes to ("" outside the vocabulary).
  std::string TokenText(int32_t id) const;

  int32_t bos() const;  // -1 when the model has none
  int32_t eos() const;
  bool add_bos() const;  // whether the model expects BOS in front of a prompt
  // Tokens that end generation: eos and the chat template's end of turn.
  const std::vector<int32_t>& stop_tokens() const;
  int64_t vocab_size() const;

  // The prompt for `messages` in the model's chat template, ending with the
  // assistant's turn opened when `add_generation_prompt`.
  std::string ApplyChatTemplate(const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt = true) const;

 private:
  enum class Pre { kGpt2, kDigitsThenGpt2 };
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  struct Special {
    std::string text;
    int32_t id;
    bool control;  // matched only when parse_special (user-defined: always)
  };

  // Appends the BPE tokens of text[begin, end) to `out`.
  void EncodePiece(const std::string& text, size_t begin, size_t end,
                   std::vector<int32_t>& out) const;
  // Pre-tokenizes and encodes a stretch without special tokens.
  void EncodeOrdinary(const std::string& text, size_t begin, size_t end,
                      std::vector<int32_t>& out) const;

  std::vector<std::string> decoded_;  // per token: the bytes it stands for
  std::vector<int32_t> types_;
  std::array<int32_t, 256> byte_token_{};           // token of each byte's character; -1: none
  std::unordered_map<uint64_t, Merge> merges_;      // (left id << 32 | right id) -> merge
  std::array<std::vector<Special>, 256> specials_;  // by first byte, longest first
  Pre pre_ = Pre::kGpt2;
  int32_t bos_ = -1;
  int32_t eos_ = -1;
  bool add_bos_ = false;
  std::vector<int32_t> stop_tokens_;
  bool default_system_present_ = false;
  std::string default_system_;  // the system turn the template writes when none is given
};

}  // namespace masktune::model
