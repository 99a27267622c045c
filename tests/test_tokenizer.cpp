// File: tests/test_tokenizer.cpp
//
// The byte-level BPE tokenizer: its core on tiny hand-made vocabularies (merge
// order, byte characters, pre-tokenizer splits, special tokens, errors, the
// chat template), and the real SmolLM2 tokenizer against the reference that
// tools/make_model_reference.py wrote with Hugging Face transformers
// (tests/data/smollm2_reference.json). The reference half needs the model in
// models/; without it, it says so and checks nothing.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/model/gguf.h"
#include "engine/model/tokenizer.h"

namespace masktune::model {
namespace {

// GPT-2's printable character for a byte, written independently of tokenizer.cpp.
std::string ByteChar(int b) {
  int cp = b;
  if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE)) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

// A vocabulary of the 256 byte characters (id = byte), then `extra` tokens.
TokenizerSpec ByteSpec(const std::vector<std::string>& extra = {},
                       const std::vector<std::string>& merges = {}) {
  TokenizerSpec spec;
  for (int b = 0; b < 256; ++b) spec.tokens.push_back(ByteChar(b));
  for (const std::string& t : extra) spec.tokens.push_back(t);
  spec.merges = merges;
  return spec;
}

Tokenizer MustBuild(const TokenizerSpec& spec) {
  auto t = Tokenizer::Build(spec, "spec");
  REQUIRE_MESSAGE(t.ok(), t.status().message());
  return std::move(t).value();
}

// The token texts of `ids`, as the vocabulary writes them.
std::vector<std::string> Pieces(const TokenizerSpec& spec, const std::vector<int32_t>& ids) {
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(spec.tokens.at(static_cast<size_t>(id)));
  return out;
}

using Strings = std::vector<std::string>;

const char* const kSmolTemplate =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";

TEST_CASE("tokenizer: bytes without merges are one token each and decode back") {
  TokenizerSpec spec = ByteSpec();
  Tokenizer t = MustBuild(spec);
  CHECK(t.vocab_size() == 256);
  CHECK(t.Encode("").empty());
  CHECK(t.Decode({}).empty());
  CHECK(t.Encode("ab") == std::vector<int32_t>{'a', 'b'});
  // Space, newline and NUL are written as other characters (GPT-2's byte map).
  CHECK(spec.tokens[' '] == "\xC4\xA0");   // U+0120 'Ġ'
  CHECK(spec.tokens['\n'] == "\xC4\x8A");  // U+010A 'Ċ'
  CHECK(spec.tokens[0] == "\xC4\x80");     // U+0100 'Ā'
  CHECK(t.TokenText(' ') == " ");
  CHECK(t.TokenText(0) == std::string(1, '\0'));
  CHECK(t.TokenText(-1).empty());
  CHECK(t.TokenText(256).empty());
  CHECK(t.Decode({'h', -5, 'i', 9999}) == "hi");  // ids outside the vocabulary write nothing
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::vector<int32_t> ids = t.Encode(all);
  CHECK(ids.size() == 256);
  CHECK(t.Decode(ids) == all);
}

TEST_CASE("tokenizer: invalid UTF-8 does not crash and round-trips") {
  Tokenizer t = MustBuild(ByteSpec({"ab"}, {"a b"}));
  for (const std::string& text :
       {std::string("\x80"), std::string("\xFF\xFE ab"), std::string("ab\xC3"),
        std::string("\xE2\x82 ab \xF0\x9F\x98"), std::string("\xED\xA0\x80 surrogate"),
        std::string("\xC0\xAF overlong"), std::string("a\0b", 3),
        std::string("\xF4\x90\x80\x80")}) {
    CAPTURE(text);
    CHECK(t.Decode(t.Encode(text)) == text);
  }
}

TEST_CASE("tokenizer: merges apply lowest rank first, leftmost among equals") {
  {
    TokenizerSpec spec = ByteSpec({"bc", "ab"}, {"b c", "a b"});
    CHECK(Pieces(spec, MustBuild(spec).Encode("abc")) == Strings{"a", "bc"});
  }
  {
    TokenizerSpec spec = ByteSpec({"bc", "ab"}, {"a b", "b c"});
    CHECK(Pieces(spec, MustBuild(spec).Encode("abc")) == Strings{"ab", "c"});
  }
  {
    TokenizerSpec spec = ByteSpec({"aa"}, {"a a"});
    Tokenizer t = MustBuild(spec);
    CHECK(Pieces(spec, t.Encode("aaa")) == Strings{"aa", "a"});
    CHECK(Pieces(spec, t.Encode("aaaa")) == Strings{"aa", "aa"});
  }
  {
    // Merged symbols merge again; a merge that would need an unmerged side waits.
    TokenizerSpec spec = ByteSpec({"he", "ll", "hell", "hello", "\xC4\xA0w"},
                                  {"h e", "l l", "he ll", "hell o", "\xC4\xA0 w"});
    Tokenizer t = MustBuild(spec);
    CHECK(Pieces(spec, t.Encode("hello world")) ==
          Strings{"hello", "\xC4\xA0w", "o", "r", "l", "d"});
    CHECK(t.Decode(t.Encode("hello world")) == "hello world");
  }
}

TEST_CASE("tokenizer: the GPT-2 split, and smollm's digits first") {
  const std::string sp = ByteChar(' ');
  TokenizerSpec spec = ByteSpec(
      {sp + sp, sp + sp + sp, sp + "1", "it", "'s", "'l", "'ll", sp + "'"},
      {sp + " " + sp, sp + sp + " " + sp, sp + " 1", "i t", "' s", "' l", "'l l", sp + " '"});
  // Merges that would cross a split: one word when split the same way, never across.
  spec.tokens.push_back("a1");
  spec.merges.push_back("a 1");
  spec.pre = "gpt2";
  Tokenizer gpt2 = MustBuild(spec);
  // \s+(?!\S) leaves the last space to the word that follows.
  CHECK(Pieces(spec, gpt2.Encode("x   1")) == Strings{"x", sp + sp, sp + "1"});
  CHECK(Pieces(spec, gpt2.Encode("x   ")) == Strings{"x", sp + sp + sp});
  CHECK(Pieces(spec, gpt2.Encode("a1")) == Strings{"a", "1"});  // letters and numbers apart
  CHECK(Pieces(spec, gpt2.Encode("it's it'll")) == Strings{"it", "'s", sp, "it", "'ll"});
  CHECK(Pieces(spec, gpt2.Encode("it 's")) == Strings{"it", sp + "'", "s"});
  CHECK(Pieces(spec, gpt2.Encode("IT'S")) == Strings{"I", "T", "'", "S"});  // case-sensitive

  spec.pre = "smollm";
  Tokenizer smol = MustBuild(spec);
  CHECK(Pieces(spec, smol.Encode("x   1")) == Strings{"x", sp + sp + sp, "1"});
  CHECK(Pieces(spec, smol.Encode("x 12")) == Strings{"x", sp, "1", "2"});
  CHECK(smol.Decode(smol.Encode("x   1 22\t333\n")) == "x   1 22\t333\n");
}

TEST_CASE("tokenizer: Unicode letters and numbers") {
  // é is C3 A9 ("Ã©"), ½ is C2 BD ("Â½").
  TokenizerSpec spec = ByteSpec({"a\xC3\x83", "a\xC3\x83\xC2\xA9", "\xC3\x82\xC2\xBD",
                                 "\xC3\x82\xC2\xBD\xC3\x82\xC2\xBD", "a!"},
                                {"a \xC3\x83", "a\xC3\x83 \xC2\xA9", "\xC3\x82 \xC2\xBD",
                                 "\xC3\x82\xC2\xBD \xC3\x82\xC2\xBD", "a !"});
  Tokenizer gpt2 = MustBuild(spec);
  CHECK(gpt2.Encode("a\xC3\xA9").size() == 1);         // é is a letter: one word with a
  CHECK(gpt2.Encode("a!").size() == 2);                // ! is not
  CHECK(gpt2.Encode("\xC2\xBD\xC2\xBD").size() == 1);  // ½½: one run of numbers
  spec.pre = "smollm";
  CHECK(MustBuild(spec).Encode("\xC2\xBD\xC2\xBD").size() == 2);  // each number alone
}

TEST_CASE("tokenizer: special tokens are matched whole, longest first") {
  TokenizerSpec spec = ByteSpec({"<|im_start|>", "<|im_end|>", "<a>", "<a>b", "<u>"});
  spec.token_types.assign(spec.tokens.size(), 1);
  spec.token_types[256] = spec.token_types[257] = spec.token_types[258] = spec.token_types[259] = 3;
  spec.token_types[260] = 4;  // user-defined
  spec.eos = 257;
  Tokenizer t = MustBuild(spec);
  CHECK(t.Encode("x<|im_start|>y<|im_end|>") == std::vector<int32_t>{'x', 256, 'y', 257});
  CHECK(t.Encode("<a>bc") == std::vector<int32_t>{259, 'c'});
  CHECK(t.Encode("<|im_start") ==
        std::vector<int32_t>{'<', '|', 'i', 'm', '_', 's', 't', 'a', 'r', 't'});
  // Plain text when not parsing special tokens; user-defined tokens are always whole.
  const std::vector<int32_t> plain = t.Encode("<|im_end|><u>", /*parse_special=*/false);
  CHECK(plain.size() == 11);
  CHECK(plain.back() == 260);
  CHECK(t.Decode(plain) == "<|im_end|><u>");
  CHECK(t.Decode({256, 'h', 'i', 257}) == "<|im_start|>hi<|im_end|>");
  CHECK(t.TokenText(256) == "<|im_start|>");
  // eos is <|im_end|>: it is the only stop token.
  CHECK(t.stop_tokens() == std::vector<int32_t>{257});
  spec.eos = 'z';
  CHECK(MustBuild(spec).stop_tokens() == std::vector<int32_t>{'z', 257});
  CHECK(MustBuild(spec).bos() == -1);
}

TEST_CASE("tokenizer: bytes without a token are dropped") {
  TokenizerSpec spec = ByteSpec({"ab"}, {"a b"});
  spec.tokens[4] = "<unused4>";  // the vocabulary lacks byte 0x04's character
  Tokenizer t = MustBuild(spec);
  CHECK(Pieces(spec, t.Encode("a\x04"
                              "b\x04")) == Strings{"a", "b"});
  CHECK(t.Decode(t.Encode("x\x04y")) == "xy");
}

TEST_CASE("tokenizer: spec errors name the source and the value") {
  auto fails = [](const TokenizerSpec& spec, const std::string& part) {
    auto t = Tokenizer::Build(spec, "model.gguf");
    REQUIRE_FALSE(t.ok());
    CAPTURE(t.status().message());
    CHECK(t.status().message().rfind("model.gguf: ", 0) == 0);
    CHECK(t.status().message().find(part) != std::string::npos);
  };
  TokenizerSpec spec = ByteSpec();
  spec.pre = "llama3";
  fails(spec, "tokenizer.ggml.pre 'llama3'");
  spec = ByteSpec({}, {"ab"});
  fails(spec, "tokenizer.ggml.merges[0] 'ab'");
  spec = ByteSpec({}, {"a b"});
  fails(spec, "'ab' is not a token");
  spec = ByteSpec({}, {"a q!"});
  fails(spec, "'q!' is not a token");
  spec = ByteSpec();
  spec.token_types = {1, 1};
  fails(spec, "tokenizer.ggml.token_type has 2 entries for 256 tokens");
  spec = ByteSpec();
  spec.eos = 256;
  fails(spec, "eos_token_id 256");
  spec = ByteSpec();
  spec.chat_template =
      "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }}{% endfor %}";
  fails(spec, "not a ChatML template");
  fails(TokenizerSpec{}, "tokenizer.ggml.tokens is empty");
}

TEST_CASE("tokenizer: ChatML prompts as SmolLM2's template writes them") {
  TokenizerSpec spec = ByteSpec();
  spec.chat_template = kSmolTemplate;
  Tokenizer t = MustBuild(spec);
  const std::string sys =
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
      "Face<|im_end|>\n";
  CHECK(t.ApplyChatTemplate({{"user", "Hi"}}) ==
        sys + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  CHECK(t.ApplyChatTemplate({{"system", "Be brief."}, {"user", "Hi"}}, false) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  CHECK(t.ApplyChatTemplate({}, true) == "<|im_start|>assistant\n");

  // A ChatML template without a literal default system turn writes none; "\n"
  // escaped in the template's string literals reads as a newline.
  spec.chat_template =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
      "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
  CHECK(MustBuild(spec).ApplyChatTemplate({{"user", "Hi"}}, false) ==
        "<|im_start|>user\nHi<|im_end|>\n");
  spec.chat_template =
      "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nBe kind.<|im_end|>\\n' }}"
      "{% endif %}";
  CHECK(MustBuild(spec).ApplyChatTemplate({{"user", "Hi"}}, false) ==
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

// ------------------------------------------------ SmolLM2 against transformers ----

TEST_CASE("tokenizer: SmolLM2 matches the transformers reference") {
  const std::string data = MASKTUNE_SOURCE_DIR "/tests/data/smollm2_reference.json";
  std::ifstream in(data);
  REQUIRE_MESSAGE(in.good(), "reference missing: " << data);
  const nlohmann::json ref = nlohmann::json::parse(in);
  const std::string model = MASKTUNE_SOURCE_DIR "/models/" + ref["model_file"].get<std::string>();
  if (!std::filesystem::exists(model)) {
    MESSAGE("skipped: no " << model << " (the tokenizer's reference checks need the model)");
    return;
  }
  auto file = GgufFile::Open(model);
  REQUIRE_MESSAGE(file.ok(), file.status().message());
  auto loaded = Tokenizer::FromGguf(*file);
  REQUIRE_MESSAGE(loaded.ok(), loaded.status().message());
  const Tokenizer& t = *loaded;

  const nlohmann::json& special = ref["special"];
  CHECK(t.bos() == special["bos_id"].get<int32_t>());
  CHECK(t.eos() == special["eos_id"].get<int32_t>());
  CHECK(t.stop_tokens() == special["stop_ids"].get<std::vector<int32_t>>());
  CHECK(t.vocab_size() == special["vocab_size"].get<int64_t>());
  CHECK(t.add_bos() == ref["loading"]["adds_bos"].get<bool>());

  int cases = 0;
  for (const nlohmann::json& c : ref["tokenizer_cases"]) {
    const std::string text = c["text"];
    CAPTURE(text);
    const std::vector<int32_t> ids = t.Encode(text);
    CHECK(ids == c["ids"].get<std::vector<int32_t>>());
    const std::string decoded = c["decoded"];
    if (c["round_trip"].get<bool>()) {
      CHECK(t.Decode(ids) == text);
    } else if (decoded.find("\xEF\xBF\xBD") == std::string::npos) {
      CHECK(t.Decode(ids) == decoded);  // dropped bytes, the rest as the reference decodes it
    }
    ++cases;
  }
  CHECK(cases >= 30);

  for (const nlohmann::json& c : ref["chat_cases"]) {
    CAPTURE(c["name"].get<std::string>());
    std::vector<ChatMessage> messages;
    for (const nlohmann::json& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    const std::string prompt = t.ApplyChatTemplate(messages, c["add_generation_prompt"]);
    CHECK(prompt == c["text"].get<std::string>());
    CHECK(t.Encode(prompt) == c["ids"].get<std::vector<int32_t>>());
  }
  for (const nlohmann::json& c : ref["model_cases"]) {
    CAPTURE(c["name"].get<std::string>());
    CHECK(t.Encode(c["text"].get<std::string>()) == c["input_ids"].get<std::vector<int32_t>>());
    CHECK(t.Decode(c["greedy"]["ids"].get<std::vector<int32_t>>()) ==
          c["greedy"]["text"].get<std::string>());
  }
  // Special tokens as plain text when not parsing them.
  const std::vector<int32_t> plain = t.Encode("<|im_start|>user", /*parse_special=*/false);
  CHECK(std::find(plain.begin(), plain.end(), special["bos_id"].get<int32_t>()) == plain.end());
  CHECK(t.Decode(plain) == "<|im_start|>user");
}

}  // namespace
}  // namespace masktune::model
