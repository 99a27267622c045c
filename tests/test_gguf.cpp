// File: tests/test_gguf.cpp
//
// Tests of the GGUF reader (engine/model/gguf.h) on small files written here
// byte by byte (GgufBuilder below), so every value, layout detail and
// corruption is explicit: metadata of every type, versions 2 and 3, every
// tensor type with hand-computed values, and malformed files, whose errors must
// name the file and what is wrong. The last case reads the real SmolLM2 model
// when scripts/fetch_model.sh has fetched it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/model/gguf.h"
#include "tests/helpers.h"

namespace masktune::model {
namespace {

using testing::TempDir;
using Bytes = std::vector<uint8_t>;

// Metadata value types, as in the GGUF spec.
enum : uint32_t {
  kU8 = 0,
  kI8,
  kU16,
  kI16,
  kU32,
  kI32,
  kF32,
  kBool,
  kString,
  kArray,
  kU64,
  kI64,
  kF64,
};

constexpr uint32_t kTypeF32 = 0, kTypeF16 = 1, kTypeQ4_0 = 2, kTypeQ4_1 = 3, kTypeQ8_0 = 8,
                   kTypeBF16 = 30;

template <typename T>
void Put(Bytes& b, T v) {
  uint8_t raw[sizeof(T)];
  std::memcpy(raw, &v, sizeof(T));       // little-endian host
  for (uint8_t c : raw) b.push_back(c);  // (insert() trips GCC 12's -Wstringop-overflow)
}

void PutString(Bytes& b, const std::string& s) {
  Put<uint64_t>(b, s.size());
  for (char c : s) b.push_back(static_cast<uint8_t>(c));
}

// The encoding of one scalar value (no type tag).
template <typename T>
Bytes Enc(T v) {
  Bytes b;
  Put(b, v);
  return b;
}

Bytes EncString(const std::string& s) {
  Bytes b;
  PutString(b, s);
  return b;
}

// An array value: element type, count, elements.
template <typename T>
Bytes EncArray(uint32_t type, const std::vector<T>& values) {
  Bytes b;
  Put<uint32_t>(b, type);
  Put<uint64_t>(b, values.size());
  for (const T& v : values) Put(b, v);
  return b;
}

Bytes EncStringArray(const std::vector<std::string>& values) {
  Bytes b;
  Put<uint32_t>(b, kString);
  Put<uint64_t>(b, values.size());
  for (const auto& s : values) PutString(b, s);
  return b;
}

// An array of arrays: each element is an already encoded array value.
Bytes EncNestedArray(const std::vector<Bytes>& arrays) {
  Bytes b;
  Put<uint32_t>(b, kArray);
  Put<uint64_t>(b, arrays.size());
  for (const auto& a : arrays) b.insert(b.end(), a.begin(), a.end());
  return b;
}

Bytes Halves(std::initializer_list<uint16_t> values) {
  Bytes b;
  for (uint16_t v : values) Put(b, v);
  return b;
}

struct TensorSpec {
  TensorSpec(std::string name, std::vector<uint64_t> dims, uint32_t type, Bytes data,
             std::optional<uint64_t> offset = std::nullopt)
      : name(std::move(name)),
        dims(std::move(dims)),
        type(type),
        data(std::move(data)),
        offset(offset) {}

  std::string name;
  std::vector<uint64_t> dims;  // GGUF order, innermost first
  uint32_t type;
  Bytes data;
  std::optional<uint64_t> offset;  // default: packed, each aligned
};

// Where the parts of a built file start.
struct Built {
  Bytes bytes;
  size_t kv_start = 0, dir_start = 0, dir_end = 0, data_start = 0;
};

// Writes a GGUF file: header, metadata in the order added, tensor directory,
// padding, data. Raw type tags and counts are the caller's, so corrupt files
// are as easy to write as good ones.
struct GgufBuilder {
  uint32_t version = 3;
  uint64_t alignment = 32;  // layout only; add general.alignment yourself to change it
  std::vector<Bytes> kvs;
  std::vector<TensorSpec> tensors;
  std::optional<uint64_t> kv_count, tensor_count;  // override the real counts

  GgufBuilder& Kv(const std::string& key, uint32_t type, const Bytes& value) {
    Bytes b;
    PutString(b, key);
    Put<uint32_t>(b, type);
    b.insert(b.end(), value.begin(), value.end());
    kvs.push_back(std::move(b));
    return *this;
  }
  GgufBuilder& AddTensor(TensorSpec t) {
    tensors.push_back(std::move(t));
    return *this;
  }

  Built Build() const {
    Built out;
    Bytes& b = out.bytes;
    for (char c : {'G', 'G', 'U', 'F'}) b.push_back(static_cast<uint8_t>(c));
    Put<uint32_t>(b, version);
    Put<uint64_t>(b, tensor_count.value_or(tensors.size()));
    Put<uint64_t>(b, kv_count.value_or(kvs.size()));
    out.kv_start = b.size();
    for (const auto& kv : kvs) b.insert(b.end(), kv.begin(), kv.end());
    out.dir_start = b.size();
    uint64_t next = 0;
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors) {
      offsets.push_back(t.offset.value_or(next));
      next = (offsets.back() + t.data.size() + alignment - 1) / alignment * alignment;
      PutString(b, t.name);
      Put<uint32_t>(b, static_cast<uint32_t>(t.dims.size()));
      for (uint64_t d : t.dims) Put<uint64_t>(b, d);
      Put<uint32_t>(b, t.type);
      Put<uint64_t>(b, offsets.back());
    }
    out.dir_end = b.size();
    if (!tensors.empty()) b.resize((b.size() + alignment - 1) / alignment * alignment, 0);
    out.data_start = b.size();
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (offsets[i] > 1'000'000) continue;  // a deliberately wild offset: write nothing there
      const size_t at = out.data_start + offsets[i];
      if (b.size() < at + tensors[i].data.size()) b.resize(at + tensors[i].data.size(), 0);
      std::copy(tensors[i].data.begin(), tensors[i].data.end(), b.begin() + at);
    }
    return out;
  }
};

void WriteFile(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

Result<GgufFile> OpenBytes(const TempDir& dir, const std::string& name, const Bytes& bytes) {
  WriteFile(dir / name, bytes);
  return GgufFile::Open(dir / name);
}

// Expects `expr` (a Result or Status holder) to fail with a message holding every part.
#define CHECK_GGUF_ERROR(expr, ...)                                                    \
  do {                                                                                 \
    const auto _result = (expr);                                                       \
    REQUIRE_FALSE(_result.ok());                                                       \
    const std::string& _message = _result.status().message();                          \
    for (const char* _part : {__VA_ARGS__})                                            \
      CHECK_MESSAGE(_message.find(_part) != std::string::npos, "message: '", _message, \
                    "' lacks '", _part, "'");                                          \
  } while (0)

// A file with a bit of everything, its last tensor ending at the end of the file.
GgufBuilder RichFile() {
  GgufBuilder g;
  g.Kv("general.architecture", kString, EncString("llama"))
      .Kv("llama.block_count", kU32, Enc<uint32_t>(2))
      .Kv("tokenizer.ggml.tokens", kArray, EncStringArray({"a", "bc", "<|im_start|>"}))
      .Kv("tokenizer.ggml.scores", kArray, EncArray<float>(kF32, {0.5f, -1.0f, 2.0f}))
      .Kv("general.flag", kBool, Enc<uint8_t>(1));
  Bytes f32;
  for (int i = 0; i < 6; ++i) Put<float>(f32, static_cast<float>(i));
  g.AddTensor({"a.weight", {3, 2}, kTypeF32, f32});
  Bytes q41 = Halves({0x3800, 0xBC00});
  for (int j = 0; j < 16; ++j) q41.push_back(static_cast<uint8_t>(j | ((15 - j) << 4)));
  g.AddTensor({"b.weight", {32}, kTypeQ4_1, q41});
  return g;
}

TEST_CASE("gguf: every metadata type, scalars and arrays, in versions 2 and 3") {
  TempDir dir;
  for (const uint32_t version : {2u, 3u}) {
    CAPTURE(version);
    GgufBuilder g;
    g.version = version;
    g.Kv("u8", kU8, Enc<uint8_t>(255))
        .Kv("i8", kI8, Enc<int8_t>(-128))
        .Kv("u16", kU16, Enc<uint16_t>(65535))
        .Kv("i16", kI16, Enc<int16_t>(-32768))
        .Kv("u32", kU32, Enc<uint32_t>(4294967295u))
        .Kv("i32", kI32, Enc<int32_t>(std::numeric_limits<int32_t>::min()))
        .Kv("f32", kF32, Enc<float>(1.5f))
        .Kv("bool.true", kBool, Enc<uint8_t>(1))
        .Kv("bool.false", kBool, Enc<uint8_t>(0))
        .Kv("string", kString, EncString("h\xC3\xA9llo"))
        .Kv("string.empty", kString, EncString(""))
        .Kv("u64", kU64, Enc<uint64_t>(std::numeric_limits<int64_t>::max()))
        .Kv("i64", kI64, Enc<int64_t>(std::numeric_limits<int64_t>::min()))
        .Kv("f64", kF64, Enc<double>(0.1))
        .Kv("a.u8", kArray, EncArray<uint8_t>(kU8, {0, 200}))
        .Kv("a.i8", kArray, EncArray<int8_t>(kI8, {-1, 7}))
        .Kv("a.u16", kArray, EncArray<uint16_t>(kU16, {65535}))
        .Kv("a.i16", kArray, EncArray<int16_t>(kI16, {-300, 300}))
        .Kv("a.u32", kArray, EncArray<uint32_t>(kU32, {1, 4000000000u}))
        .Kv("a.i32", kArray, EncArray<int32_t>(kI32, {-5}))
        .Kv("a.f32", kArray, EncArray<float>(kF32, {0.25f, -2.0f}))
        .Kv("a.bool", kArray, EncArray<uint8_t>(kBool, {1, 0, 1}))
        .Kv("a.string", kArray, EncStringArray({"x", "", "yz"}))
        .Kv("a.u64", kArray, EncArray<uint64_t>(kU64, {0, 1ull << 40}))
        .Kv("a.i64", kArray, EncArray<int64_t>(kI64, {-(1ll << 50)}))
        .Kv("a.f64", kArray, EncArray<double>(kF64, {1e300}))
        .Kv("a.empty", kArray, EncArray<uint32_t>(kU32, {}));
    auto f = OpenBytes(dir, "meta.gguf", g.Build().bytes);
    REQUIRE_MESSAGE(f.ok(), f.status().message());
    CHECK(f->version() == version);
    CHECK(f->metadata().size() == 27);
    CHECK(f->tensors().empty());
    CHECK(f->GetInt("u8").value() == 255);
    CHECK(f->GetInt("i8").value() == -128);
    CHECK(f->GetInt("u16").value() == 65535);
    CHECK(f->GetInt("i16").value() == -32768);
    CHECK(f->GetInt("u32").value() == 4294967295ll);
    CHECK(f->GetInt("i32").value() == std::numeric_limits<int32_t>::min());
    CHECK(f->GetFloat("f32").value() == 1.5);
    CHECK(std::get<bool>(f->metadata().at("bool.true")) == true);
    CHECK(std::get<bool>(f->metadata().at("bool.false")) == false);
    CHECK(f->GetString("string").value() == "h\xC3\xA9llo");
    CHECK(f->GetString("string.empty").value().empty());
    CHECK(f->GetInt("u64").value() == std::numeric_limits<int64_t>::max());
    CHECK(f->GetInt("i64").value() == std::numeric_limits<int64_t>::min());
    CHECK(f->GetFloat("f64").value() == 0.1);
    CHECK(f->GetFloat("u8").value() == 255.0);  // integers pass as floats

    CHECK(f->GetArray("a.u8").value()->ints == std::vector<int64_t>{0, 200});
    CHECK(f->GetArray("a.i8").value()->ints == std::vector<int64_t>{-1, 7});
    CHECK(f->GetArray("a.u16").value()->ints == std::vector<int64_t>{65535});
    CHECK(f->GetArray("a.i16").value()->ints == std::vector<int64_t>{-300, 300});
    CHECK(f->GetArray("a.u32").value()->ints == std::vector<int64_t>{1, 4000000000ll});
    CHECK(f->GetArray("a.i32").value()->ints == std::vector<int64_t>{-5});
    CHECK(f->GetArray("a.f32").value()->floats == std::vector<double>{0.25, -2.0});
    CHECK(f->GetArray("a.bool").value()->bools == std::vector<bool>{true, false, true});
    CHECK(f->GetArray("a.string").value()->strings == std::vector<std::string>{"x", "", "yz"});
    CHECK(f->GetArray("a.u64").value()->ints == std::vector<int64_t>{0, 1ll << 40});
    CHECK(f->GetArray("a.i64").value()->ints == std::vector<int64_t>{-(1ll << 50)});
    CHECK(f->GetArray("a.f64").value()->floats == std::vector<double>{1e300});
    const GgufArray* empty = f->GetArray("a.empty").value();
    CHECK((empty->ints.empty() && empty->floats.empty() && empty->strings.empty() &&
           empty->bools.empty() && !empty->nested));
    // An array holds its elements in one list only.
    const GgufArray* strings = f->GetArray("a.string").value();
    CHECK((strings->ints.empty() && strings->floats.empty() && strings->bools.empty()));
  }
}

TEST_CASE("gguf: nested arrays are skipped and the keys after them still read") {
  TempDir dir;
  GgufBuilder g;
  g.Kv("nested", kArray,
       EncNestedArray({EncArray<uint32_t>(kU32, {1, 2, 3}), EncStringArray({"p", "qr"}),
                       EncNestedArray({EncArray<double>(kF64, {2.5})}),
                       EncArray<uint8_t>(kU8, {})}))
      .Kv("nested.empty", kArray, EncNestedArray({}))
      .Kv("after", kString, EncString("still here"));
  auto f = OpenBytes(dir, "nested.gguf", g.Build().bytes);
  REQUIRE_MESSAGE(f.ok(), f.status().message());
  for (const char* key : {"nested", "nested.empty"}) {
    const GgufArray* a = f->GetArray(key).value();
    CHECK(a->nested);
    CHECK((a->ints.empty() && a->floats.empty() && a->strings.empty() && a->bools.empty()));
  }
  CHECK(f->GetString("after").value() == "still here");
}

TEST_CASE("gguf: typed getters name the file and the key on a missing key or a wrong type") {
  TempDir dir;
  auto f = OpenBytes(dir, "getters.gguf", RichFile().Build().bytes);
  REQUIRE_MESSAGE(f.ok(), f.status().message());
  CHECK(f->HasKey("general.architecture"));
  CHECK_FALSE(f->HasKey("general.name"));
  CHECK_GGUF_ERROR(f->GetInt("general.name"),
                   "getters.gguf: ", "missing metadata key 'general.name'");
  CHECK_GGUF_ERROR(f->GetFloat("nope"), "getters.gguf: ", "missing metadata key 'nope'");
  CHECK_GGUF_ERROR(f->GetString("nope"), "getters.gguf: ", "missing metadata key 'nope'");
  CHECK_GGUF_ERROR(f->GetArray("nope"), "getters.gguf: ", "missing metadata key 'nope'");
  CHECK_GGUF_ERROR(f->GetInt("general.architecture"), "getters.gguf: ",
                   "metadata key 'general.architecture': expected an integer, found a string");
  CHECK_GGUF_ERROR(f->GetFloat("tokenizer.ggml.tokens"),
                   "getters.gguf: ", "'tokenizer.ggml.tokens': expected a number, found an array");
  CHECK_GGUF_ERROR(f->GetString("llama.block_count"),
                   "getters.gguf: ", "'llama.block_count': expected a string, found an integer");
  CHECK_GGUF_ERROR(f->GetArray("general.flag"),
                   "getters.gguf: ", "'general.flag': expected an array, found a bool");
  CHECK_GGUF_ERROR(f->GetInt("tokenizer.ggml.scores"), "'tokenizer.ggml.scores'", "found an array");
  CHECK(f->HasTensor("a.weight"));
  CHECK_FALSE(f->HasTensor("c.weight"));
  CHECK_GGUF_ERROR(f->ReadTensor("c.weight"), "getters.gguf: ", "missing tensor 'c.weight'");
}

TEST_CASE("gguf: F32, F16 and BF16 tensors read exactly, with dims reversed") {
  TempDir dir;
  GgufBuilder g;
  Bytes f32;
  for (int i = 0; i < 6; ++i) Put<float>(f32, 0.5f * static_cast<float>(i) - 1.0f);
  g.AddTensor({"f32", {3, 2}, kTypeF32, f32});
  // half: 1, -2, 0.5, 65504 (max), 2^-24 (smallest subnormal), -0, +inf
  g.AddTensor(
      {"f16", {7}, kTypeF16, Halves({0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001, 0x8000, 0x7C00})});
  // bfloat16: 1, -3, 3.140625, 0 as a 2 x 1 x 2 tensor
  g.AddTensor({"bf16", {2, 1, 2}, kTypeBF16, Halves({0x3F80, 0xC040, 0x4049, 0x0000})});
  Bytes f32_4d;
  for (int i = 0; i < 24; ++i) Put<float>(f32_4d, static_cast<float>(i));
  g.AddTensor({"f32.4d", {4, 3, 1, 2}, kTypeF32, f32_4d});
  auto f = OpenBytes(dir, "float.gguf", g.Build().bytes);
  REQUIRE_MESSAGE(f.ok(), f.status().message());
  REQUIRE(f->tensors().size() == 4);
  CHECK(f->tensors()[0].dims == std::vector<int64_t>{3, 2});  // as stored
  CHECK(f->tensors()[0].bytes == 24);
  CHECK(f->tensors()[1].offset == 32);  // packed at the default alignment

  const Tensor a = f->ReadTensor("f32").value();
  CHECK(a.shape() == Shape{2, 3});
  CHECK(a.vec() == std::vector<float>{-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f});
  const Tensor h = f->ReadTensor("f16").value();
  CHECK(h.shape() == Shape{7});
  CHECK(h.vec()[0] == 1.0f);
  CHECK(h.vec()[1] == -2.0f);
  CHECK(h.vec()[2] == 0.5f);
  CHECK(h.vec()[3] == 65504.0f);
  CHECK(h.vec()[4] == std::ldexp(1.0f, -24));
  CHECK((h.vec()[5] == 0.0f && std::signbit(h.vec()[5])));
  CHECK(h.vec()[6] == std::numeric_limits<float>::infinity());
  const Tensor b = f->ReadTensor("bf16").value();
  CHECK(b.shape() == Shape{2, 1, 2});
  CHECK(b.vec() == std::vector<float>{1.0f, -3.0f, 3.140625f, 0.0f});
  const Tensor d4 = f->ReadTensor("f32.4d").value();
  CHECK(d4.shape() == Shape{2, 1, 3, 4});
  CHECK(d4.at(1, 0, 2, 3) == 23.0f);  // row-major over the reversed dims = the file's order
  CHECK(d4.at(0, 0, 1, 2) == 6.0f);
}

TEST_CASE("gguf: Q8_0, Q4_0 and Q4_1 blocks dequantise to hand-computed values") {
  TempDir dir;
  GgufBuilder g;
  // Q8_0, 2 rows of one block: d = 0.25 with q = 8 i - 128; d = -1.5 with q = i - 16.
  Bytes q8 = Halves({0x3400});
  for (int i = 0; i < 32; ++i) q8.push_back(static_cast<uint8_t>(static_cast<int8_t>(8 * i - 128)));
  const Bytes d2 = Halves({0xBE00});
  q8.insert(q8.end(), d2.begin(), d2.end());
  for (int i = 0; i < 32; ++i) q8.push_back(static_cast<uint8_t>(static_cast<int8_t>(i - 16)));
  g.AddTensor({"q8_0", {32, 2}, kTypeQ8_0, q8});
  // Q4_0: d = 2; byte j holds j (element j) and 15 - j (element j + 16); x = d (q - 8).
  Bytes q40 = Halves({0x4000});
  for (int j = 0; j < 16; ++j) q40.push_back(static_cast<uint8_t>(j | ((15 - j) << 4)));
  g.AddTensor({"q4_0", {32}, kTypeQ4_0, q40});
  // Q4_1: d = 0.5, m = -1, the same nibbles; x = d q + m.
  Bytes q41 = Halves({0x3800, 0xBC00});
  for (int j = 0; j < 16; ++j) q41.push_back(static_cast<uint8_t>(j | ((15 - j) << 4)));
  // A second block, d = 4, m = 0.5, every nibble 15 (low) and 0 (high).
  const Bytes dm = Halves({0x4400, 0x3800});
  q41.insert(q41.end(), dm.begin(), dm.end());
  for (int j = 0; j < 16; ++j) q41.push_back(0x0F);
  g.AddTensor({"q4_1", {64}, kTypeQ4_1, q41});
  // A 4-D block tensor: dims reversed, blocks along the innermost dimension.
  Bytes q8_4d;
  for (int b = 0; b < 6; ++b) {
    const Bytes one = Halves({0x3C00});  // d = 1
    q8_4d.insert(q8_4d.end(), one.begin(), one.end());
    for (int i = 0; i < 32; ++i) q8_4d.push_back(static_cast<uint8_t>(b));
  }
  g.AddTensor({"q8_0.4d", {32, 1, 2, 3}, kTypeQ8_0, q8_4d});
  auto f = OpenBytes(dir, "quant.gguf", g.Build().bytes);
  REQUIRE_MESSAGE(f.ok(), f.status().message());
  CHECK(f->tensors()[0].bytes == 68);
  CHECK(f->tensors()[1].bytes == 18);
  CHECK(f->tensors()[2].bytes == 40);
  CHECK(f->tensors()[2].type == GgufTensorType::kQ4_1);

  const Tensor q8t = f->ReadTensor("q8_0").value();
  REQUIRE(q8t.shape() == Shape{2, 32});
  for (int i = 0; i < 32; ++i) {
    CHECK(q8t.vec()[i] == 0.25f * static_cast<float>(8 * i - 128));
    CHECK(q8t.vec()[32 + i] == -1.5f * static_cast<float>(i - 16));
  }
  CHECK(q8t.vec()[0] == -32.0f);
  const Tensor q40t = f->ReadTensor("q4_0").value();
  REQUIRE(q40t.shape() == Shape{32});
  for (int j = 0; j < 16; ++j) {
    CHECK(q40t.vec()[j] == 2.0f * static_cast<float>(j - 8));
    CHECK(q40t.vec()[16 + j] == 2.0f * static_cast<float>(7 - j));
  }
  CHECK(q40t.vec()[0] == -16.0f);
  CHECK(q40t.vec()[31] == -16.0f);
  const Tensor q41t = f->ReadTensor("q4_1").value();
  REQUIRE(q41t.shape() == Shape{64});
  for (int j = 0; j < 16; ++j) {
    CHECK(q41t.vec()[j] == 0.5f * static_cast<float>(j) - 1.0f);
    CHECK(q41t.vec()[16 + j] == 0.5f * static_cast<float>(15 - j) - 1.0f);
    CHECK(q41t.vec()[32 + j] == 60.5f);
    CHECK(q41t.vec()[48 + j] == 0.5f);
  }
  CHECK(q41t.vec()[0] == -1.0f);
  CHECK(q41t.vec()[15] == 6.5f);
  CHECK(q41t.vec()[16] == 6.5f);
  const Tensor q4d = f->ReadTensor("q8_0.4d").value();
  REQUIRE(q4d.shape() == Shape{3, 2, 1, 32});
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 2; ++b) CHECK(q4d.at(a, b, 0, 31) == static_cast<float>(2 * a + b));
}

TEST_CASE("gguf: general.alignment sets the data section's start and the offsets' grain") {
  TempDir dir;
  GgufBuilder g;
  g.alignment = 64;
  g.Kv("general.alignment", kU32, Enc<uint32_t>(64));
  Bytes one, two;
  Put<float>(one, 7.0f);
  Put<float>(two, -7.0f);
  g.AddTensor({"one", {1}, kTypeF32, one}).AddTensor({"two", {1}, kTypeF32, two});
  const Built built = g.Build();
  CHECK(built.data_start % 64 == 0);
  auto f = OpenBytes(dir, "align.gguf", built.bytes);
  REQUIRE_MESSAGE(f.ok(), f.status().message());
  CHECK(f->tensors()[1].offset == 64);
  CHECK(f->ReadTensor("one").value().vec() == std::vector<float>{7.0f});
  CHECK(f->ReadTensor("two").value().vec() == std::vector<float>{-7.0f});

  // An offset that is a multiple of 32 but not of 64.
  GgufBuilder h = g;
  h.tensors[1].offset = 32;
  CHECK_GGUF_ERROR(OpenBytes(dir, "align32.gguf", h.Build().bytes), "align32.gguf: ",
                   "tensor 'two': offset 32 is not a multiple of the alignment 64");
  for (const uint32_t bad : {0u, 48u}) {
    GgufBuilder b;
    b.Kv("general.alignment", kU32, Enc<uint32_t>(bad));
    CHECK_GGUF_ERROR(OpenBytes(dir, "badalign.gguf", b.Build().bytes),
                     "badalign.gguf: ", "general.alignment", "not a nonzero power of two");
  }
  GgufBuilder s;
  s.Kv("general.alignment", kString, EncString("32"));
  CHECK_GGUF_ERROR(OpenBytes(dir, "stralign.gguf", s.Build().bytes),
                   "stralign.gguf: ", "'general.alignment' is not an integer");
}

TEST_CASE("gguf: header errors: bad magic, versions 1 and 99, empty, missing and folder paths") {
  TempDir dir;
  Bytes good = RichFile().Build().bytes;
  REQUIRE(OpenBytes(dir, "good.gguf", good).ok());

  Bytes magic = good;
  magic[3] = 'X';
  CHECK_GGUF_ERROR(OpenBytes(dir, "magic.gguf", magic), "magic.gguf: ", "not a GGUF file",
                   "bad magic");
  for (const uint32_t version : {1u, 99u, 0x03000000u}) {
    GgufBuilder g = RichFile();
    g.version = version;
    const std::string name = std::string("v").append(std::to_string(version)).append(".gguf");
    if (version == 1) {
      CHECK_GGUF_ERROR(OpenBytes(dir, name, g.Build().bytes),
                       "v1.gguf: ", "GGUF version 1 is not supported", "versions 2 and 3");
    } else if (version == 99) {
      CHECK_GGUF_ERROR(OpenBytes(dir, name, g.Build().bytes),
                       "v99.gguf: ", "unsupported GGUF version 99", "versions 2 and 3");
    } else {
      CHECK_GGUF_ERROR(OpenBytes(dir, name, g.Build().bytes), "unsupported GGUF version",
                       "big-endian");
    }
  }
  CHECK_GGUF_ERROR(OpenBytes(dir, "empty.gguf", {}),
                   "empty.gguf: ", "truncated file: magic at byte 0 needs 4 bytes, 0 left");
  CHECK_GGUF_ERROR(GgufFile::Open(dir / "absent.gguf"), "absent.gguf: ", "cannot open the file",
                   "No such file");
  std::filesystem::create_directories(dir / "folder.gguf");
  CHECK_GGUF_ERROR(GgufFile::Open(dir / "folder.gguf"), "folder.gguf: ", "not a regular file");
}

TEST_CASE("gguf: a file truncated anywhere is an error naming what was cut, never a crash") {
  TempDir dir;
  const Built built = RichFile().Build();
  const Bytes& full = built.bytes;
  REQUIRE(OpenBytes(dir, "full.gguf", full).ok());
  for (size_t n = 0; n < full.size(); ++n) {
    CAPTURE(n);
    auto f = OpenBytes(dir, "cut.gguf", Bytes(full.begin(), full.begin() + static_cast<long>(n)));
    REQUIRE_FALSE(f.ok());
    CHECK(f.status().message().rfind(dir / "cut.gguf: ", 0) == 0);
  }
  auto cut = [&](size_t n) { return Bytes(full.begin(), full.begin() + static_cast<long>(n)); };
  // The header.
  CHECK_GGUF_ERROR(OpenBytes(dir, "h.gguf", cut(6)),
                   "h.gguf: truncated file: version at byte 4 needs 4 bytes, 2 left");
  CHECK_GGUF_ERROR(OpenBytes(dir, "h.gguf", cut(20)),
                   "h.gguf: truncated file: metadata count at byte 16 needs 8 bytes, 4 left");
  // The metadata: the last value (general.flag, one byte) and a key in the middle.
  CHECK_GGUF_ERROR(OpenBytes(dir, "m.gguf", cut(built.dir_start - 1)),
                   "m.gguf: metadata key 'general.flag': truncated file: bool at byte");
  const std::string scores = "tokenizer.ggml.scores";
  const size_t scores_at = static_cast<size_t>(
      std::search(full.begin(), full.end(), scores.begin(), scores.end()) - full.begin());
  // name, value type, element type, count, then 2 of the 12 bytes of floats
  CHECK_GGUF_ERROR(OpenBytes(dir, "m.gguf", cut(scores_at + scores.size() + 4 + 4 + 8 + 2)),
                   "m.gguf: metadata key 'tokenizer.ggml.scores': truncated file: 3 float32 "
                   "array elements at byte",
                   "cannot fit in the 2 bytes left");
  // The tensor directory: inside the last entry's offset, and inside the first name.
  CHECK_GGUF_ERROR(OpenBytes(dir, "d.gguf", cut(built.dir_end - 3)),
                   "d.gguf: tensor 'b.weight': truncated file: offset at byte",
                   "needs 8 bytes, 5 left");
  CHECK_GGUF_ERROR(OpenBytes(dir, "d.gguf", cut(built.dir_start + 10)),
                   "d.gguf: tensor entry 0: truncated file: name at byte", "needs 8 bytes, 2 left");
  // The data: the last tensor loses its last byte.
  const std::string expected = "t.gguf: tensor 'b.weight': data ends at byte " +
                               std::to_string(full.size()) + ", past the end of the file (" +
                               std::to_string(full.size() - 1) + " bytes)";
  CHECK_GGUF_ERROR(OpenBytes(dir, "t.gguf", cut(full.size() - 1)), expected.c_str());
}

TEST_CASE("gguf: malformed metadata is an error naming the key") {
  TempDir dir;
  {
    GgufBuilder g;
    g.Kv("good", kU8, Enc<uint8_t>(1)).Kv("odd.type", 13, Enc<uint32_t>(0));
    CHECK_GGUF_ERROR(OpenBytes(dir, "type.gguf", g.Build().bytes),
                     "type.gguf: metadata key 'odd.type': unknown metadata value type 13");
  }
  {
    GgufBuilder g;
    Bytes huge;
    Put<uint64_t>(huge, 1ull << 62);
    huge.insert(huge.end(), {'a', 'b', 'c'});
    g.Kv("general.name", kString, huge);
    CHECK_GGUF_ERROR(OpenBytes(dir, "str.gguf", g.Build().bytes),
                     "str.gguf: metadata key 'general.name': truncated file: string at byte 56 "
                     "needs 4611686018427387904 bytes, 3 left");
  }
  {  // a key whose own length is huge
    Bytes b = {'G', 'G', 'U', 'F'};
    Put<uint32_t>(b, 3);
    Put<uint64_t>(b, 0);
    Put<uint64_t>(b, 1);
    Put<uint64_t>(b, ~0ull);
    Put<uint32_t>(b, kU8);
    b.push_back(0);
    CHECK_GGUF_ERROR(OpenBytes(dir, "key.gguf", b),
                     "key.gguf: metadata entry 0: truncated file: key at byte 32 needs "
                     "18446744073709551615 bytes, 5 left");
  }
  {
    GgufBuilder g;
    Bytes huge_array;
    Put<uint32_t>(huge_array, kU32);
    Put<uint64_t>(huge_array, 1ull << 60);
    Put<uint32_t>(huge_array, 1);
    g.Kv("tokenizer.ggml.token_type", kArray, huge_array);
    CHECK_GGUF_ERROR(OpenBytes(dir, "arr.gguf", g.Build().bytes),
                     "arr.gguf: metadata key 'tokenizer.ggml.token_type': truncated file: "
                     "1152921504606846976 uint32 array elements at byte",
                     "cannot fit in the 4 bytes left");
    GgufBuilder s;
    Bytes huge_strings;
    Put<uint32_t>(huge_strings, kString);
    Put<uint64_t>(huge_strings, 1ull << 40);
    s.Kv("tokenizer.ggml.tokens", kArray, huge_strings);
    CHECK_GGUF_ERROR(OpenBytes(dir, "strs.gguf", s.Build().bytes),
                     "'tokenizer.ggml.tokens': truncated file: 1099511627776 string array");
    GgufBuilder e;
    e.Kv("a.odd", kArray, EncArray<uint32_t>(13, {1}));
    CHECK_GGUF_ERROR(OpenBytes(dir, "elem.gguf", e.Build().bytes),
                     "elem.gguf: metadata key 'a.odd': unknown array element type 13");
    GgufBuilder t;
    t.Kv("a.str", kArray, EncStringArray({"ok"}));
    Bytes bytes = t.Build().bytes;
    bytes.resize(bytes.size() - 1);
    CHECK_GGUF_ERROR(OpenBytes(dir, "elemcut.gguf", bytes),
                     "metadata key 'a.str': element 0: truncated file: string at byte 61 needs 2 "
                     "bytes, 1 left");
  }
  {
    GgufBuilder g;
    g.kv_count = 1ull << 60;
    CHECK_GGUF_ERROR(OpenBytes(dir, "kvs.gguf", g.Build().bytes),
                     "kvs.gguf: truncated file: 1152921504606846976 metadata entries");
    GgufBuilder t;
    t.tensor_count = 1ull << 59;
    CHECK_GGUF_ERROR(OpenBytes(dir, "tensors.gguf", t.Build().bytes),
                     "tensors.gguf: truncated file: 576460752303423488 tensor entries");
  }
  {
    GgufBuilder g;
    g.Kv("big", kU64, Enc<uint64_t>(1ull << 63));
    CHECK_GGUF_ERROR(OpenBytes(dir, "u64.gguf", g.Build().bytes),
                     "u64.gguf: metadata key 'big': uint64 value 9223372036854775808 exceeds "
                     "the int64 range");
    GgufBuilder a;
    a.Kv("big.array", kArray, EncArray<uint64_t>(kU64, {1, ~0ull}));
    CHECK_GGUF_ERROR(OpenBytes(dir, "u64a.gguf", a.Build().bytes),
                     "u64a.gguf: metadata key 'big.array': element 1: uint64 value "
                     "18446744073709551615 exceeds the int64 range");
  }
  {
    GgufBuilder g;
    g.Kv("k", kU8, Enc<uint8_t>(1)).Kv("k", kString, EncString("again"));
    CHECK_GGUF_ERROR(OpenBytes(dir, "dup.gguf", g.Build().bytes),
                     "dup.gguf: duplicate metadata key 'k'");
  }
  {  // 8 levels of arrays are read; 9 are refused (the bound keeps recursion shallow)
    auto nest = [](int levels) {
      Bytes inner = EncArray<uint8_t>(kU8, {1});
      for (int i = 1; i < levels; ++i) inner = EncNestedArray({inner});
      return inner;
    };
    GgufBuilder ok;
    ok.Kv("deep", kArray, nest(8));
    auto f = OpenBytes(dir, "deep8.gguf", ok.Build().bytes);
    REQUIRE_MESSAGE(f.ok(), f.status().message());
    CHECK(f->GetArray("deep").value()->nested);
    GgufBuilder bad;
    bad.Kv("deeper", kArray, nest(9));
    CHECK_GGUF_ERROR(OpenBytes(dir, "deep.gguf", bad.Build().bytes),
                     "deep.gguf: metadata key 'deeper': arrays nested more than 8 deep");
  }
}

TEST_CASE("gguf: a malformed tensor directory is an error naming the tensor") {
  TempDir dir;
  const Bytes block = [] {
    Bytes b = Halves({0x3C00, 0x0000});
    b.resize(20, 0x11);
    return b;
  }();
  auto with = [&](TensorSpec t) {
    GgufBuilder g;
    g.Kv("general.architecture", kString, EncString("llama"));
    g.AddTensor({"fine", {32}, kTypeQ4_1, block});
    g.AddTensor(std::move(t));
    return g.Build().bytes;
  };
  CHECK_GGUF_ERROR(OpenBytes(dir, "dims.gguf", with({"blk.0.x", {1, 1, 1, 1, 1}, kTypeF32, {}})),
                   "dims.gguf: tensor 'blk.0.x': 5 dimensions, at most 4 allowed");
  CHECK_GGUF_ERROR(OpenBytes(dir, "q4k.gguf", with({"blk.0.ffn_up.weight", {256}, 12, {}})),
                   "q4k.gguf: tensor 'blk.0.ffn_up.weight': unsupported tensor type Q4_K (12)");
  CHECK_GGUF_ERROR(OpenBytes(dir, "t99.gguf", with({"w", {4}, 99, {}})),
                   "t99.gguf: tensor 'w': unsupported tensor type (99)",
                   "F32, F16, BF16, Q8_0, Q4_0 and Q4_1");
  CHECK_GGUF_ERROR(OpenBytes(dir, "row.gguf", with({"w", {48, 2}, kTypeQ4_1, {}})),
                   "row.gguf: tensor 'w': type Q4_1 stores blocks of 32 elements but the "
                   "innermost dimension is 48");
  TensorSpec misaligned{"w", {1}, kTypeF32, Bytes(4, 0)};
  misaligned.offset = 40;
  CHECK_GGUF_ERROR(OpenBytes(dir, "mis.gguf", with(misaligned)),
                   "mis.gguf: tensor 'w': offset 40 is not a multiple of the alignment 32");
  CHECK_GGUF_ERROR(OpenBytes(dir, "dupt.gguf", with({"fine", {32}, kTypeQ4_1, block})),
                   "dupt.gguf: duplicate tensor 'fine'");
  CHECK_GGUF_ERROR(OpenBytes(dir, "ovf.gguf", with({"w", {1ull << 40, 1ull << 40}, kTypeF32, {}})),
                   "ovf.gguf: tensor 'w': dimension 1 (1099511627776) makes the element count "
                   "overflow int64");
  CHECK_GGUF_ERROR(OpenBytes(dir, "neg.gguf", with({"w", {1ull << 63}, kTypeF32, {}})),
                   "neg.gguf: tensor 'w': dimension 0");
  {  // data past the end: the message names the byte it ends at and the file's size
    TensorSpec far{"blk.0.attn_q.weight", {32, 2}, kTypeQ8_0, {}};
    far.offset = 1ull << 30;
    const Built built = [&] {
      GgufBuilder g;
      g.AddTensor({"fine", {32}, kTypeQ4_1, block});
      g.AddTensor(far);
      return g.Build();
    }();
    const std::string expected = "far.gguf: tensor 'blk.0.attn_q.weight': data ends at byte " +
                                 std::to_string(built.data_start + (1ull << 30) + 68) +
                                 ", past the end of the file (" +
                                 std::to_string(built.bytes.size()) + " bytes)";
    CHECK_GGUF_ERROR(OpenBytes(dir, "far.gguf", built.bytes), expected.c_str());
  }
  TensorSpec wrap{"w", {8}, kTypeF32, {}};
  wrap.offset = ~0ull - 31;  // a multiple of 32 whose end overflows uint64
  CHECK_GGUF_ERROR(OpenBytes(dir, "wrap.gguf", with(wrap)),
                   "wrap.gguf: tensor 'w': offset 18446744073709551584 and size 32 lie past "
                   "the end of the file");
  // A 0-dimensional tensor holds one element; an empty dimension holds none.
  Bytes scalar;
  Put<float>(scalar, 4.5f);
  auto f = OpenBytes(dir, "scalar.gguf", with({"s", {}, kTypeF32, scalar}));
  REQUIRE_MESSAGE(f.ok(), f.status().message());
  CHECK(f->ReadTensor("s").value().vec() == std::vector<float>{4.5f});
  auto e = OpenBytes(dir, "zero.gguf", with({"z", {0, 3}, kTypeQ8_0, {}, 0}));
  REQUIRE_MESSAGE(e.ok(), e.status().message());
  CHECK(e->ReadTensor("z").value().shape() == Shape{3, 0});
}

TEST_CASE("gguf: random corruption is an error or a readable file, never a crash") {
  TempDir dir;
  const Bytes good = RichFile().Build().bytes;
  std::mt19937_64 gen(20240611);
  int opened = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    Bytes b = good;
    const int edits = 1 + static_cast<int>(gen() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = gen() % b.size();
      if (gen() % 4 == 0 && at + 8 <= b.size()) {  // a wild 64-bit field
        const uint64_t v = gen() >> (gen() % 64);
        std::memcpy(b.data() + at, &v, 8);
      } else {
        b[at] = static_cast<uint8_t>(gen());
      }
    }
    if (gen() % 8 == 0) b.resize(gen() % b.size());
    auto f = OpenBytes(dir, "fuzz.gguf", b);
    if (!f.ok()) {
      CHECK(f.status().message().rfind(dir / "fuzz.gguf: ", 0) == 0);
      continue;
    }
    ++opened;
    for (const auto& t : f->tensors()) CHECK(f->ReadTensor(t.name).ok());
  }
  MESSAGE(opened << " of 2000 corrupted files still opened");
}

TEST_CASE("gguf: the SmolLM2-135M-Instruct Q4_1 model file") {
  const std::string path = MASKTUNE_SOURCE_DIR "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path)) {
    MESSAGE("skipped: " << path << " is absent (scripts/fetch_model.sh fetches it)");
    return;
  }
  auto f = GgufFile::Open(path);
  REQUIRE_MESSAGE(f.ok(), f.status().message());
  CHECK(f->version() == 3);
  CHECK(f->GetString("general.architecture").value() == "llama");
  CHECK(f->GetInt("llama.block_count").value() == 30);
  CHECK(f->GetInt("llama.embedding_length").value() == 576);
  CHECK(f->GetArray("tokenizer.ggml.tokens").value()->strings.size() == 49152);

  const Tensor embd = f->ReadTensor("token_embd.weight").value();
  CHECK(embd.shape() == Shape{49152, 576});
  auto q = f->ReadTensor("blk.0.attn_q.weight");
  REQUIRE_MESSAGE(q.ok(), q.status().message());
  CHECK(q->shape() == Shape{576, 576});
  CHECK(CheckFinite(*q, "blk.0.attn_q.weight").ok());
  double sum_sq = 0;
  for (float x : q->vec()) sum_sq += static_cast<double>(x) * x;
  CHECK(sum_sq > 0.0);  // real weights, not a block of zeros

  // Every tensor reads, finite, and the parameters add up to ~135M.
  int64_t parameters = 0;
  for (const auto& info : f->tensors()) {
    auto t = f->ReadTensor(info.name);
    REQUIRE_MESSAGE(t.ok(), t.status().message());
    CHECK_MESSAGE(CheckFinite(*t, info.name).ok(), info.name);
    parameters += t->size();
  }
  CHECK(parameters > 130'000'000);
  CHECK(parameters < 140'000'000);
}

}  // namespace
}  // namespace masktune::model
