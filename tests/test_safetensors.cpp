#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "tests/helpers.h"

namespace masktune {
namespace {

using testing::TempDir;

// Writes a safetensors file by hand: header JSON text + raw bytes.
void WriteRaw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xFF));
  out << header << data;
}

std::string Bytes16(std::initializer_list<uint16_t> values) {
  std::string s;
  for (uint16_t v : values) {
    s.push_back(static_cast<char>(v & 0xFF));
    s.push_back(static_cast<char>(v >> 8));
  }
  return s;
}

TEST_CASE("safetensors round-trips F32 tensors and metadata") {
  TempDir dir;
  Tensor a({2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6.5f});
  Tensor b({1, 1, 2, 1}, std::vector<float>{-1, 0.25f});
  REQUIRE(WriteSafetensors(dir / "x.safetensors", {{"zeta", &a}, {"alpha", &b}}, {{"case", "{}"}})
              .ok());
  auto f = SafetensorsFile::Read(dir / "x.safetensors");
  REQUIRE(f.ok());
  CHECK(f->metadata().at("case") == "{}");
  auto za = f->Get("zeta", 2);
  REQUIRE(za.ok());
  CHECK((*za)->shape() == Shape{2, 3});
  CHECK((*za)->vec() == a.vec());
  CHECK(f->Get("alpha", 4).value()->vec() == b.vec());
}

TEST_CASE("safetensors reads F16 and BF16 as float32") {
  TempDir dir;
  // half: 1.0, -2.0, 0.5, 65504 (max), smallest subnormal 2^-24
  // bf16: 1.0, 3.140625, -0.0
  const std::string header = R"({"h":{"dtype":"F16","shape":[5],"data_offsets":[0,10]},)"
                             R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[10,16]}})";
  WriteRaw(dir / "h.safetensors", header,
           Bytes16({0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001}) + Bytes16({0x3F80, 0x4049, 0x8000}));
  auto f = SafetensorsFile::Read(dir / "h.safetensors");
  REQUIRE(f.ok());
  const auto& h = f->Get("h").value()->vec();
  CHECK(h[0] == 1.0f);
  CHECK(h[1] == -2.0f);
  CHECK(h[2] == 0.5f);
  CHECK(h[3] == 65504.0f);
  CHECK(h[4] == std::ldexp(1.0f, -24));
  const auto& b = f->Get("b").value()->vec();
  CHECK(b[0] == 1.0f);
  CHECK(b[1] == 3.140625f);
  CHECK(std::signbit(b[2]));
}

TEST_CASE("safetensors errors name the file and the problem") {
  TempDir dir;
  SUBCASE("missing file") {
    auto f = SafetensorsFile::Read(dir / "nope.safetensors");
    REQUIRE_FALSE(f.ok());
    CHECK(f.status().message().find("nope.safetensors: cannot open file") != std::string::npos);
  }
  SUBCASE("shorter than the length prefix") {
    std::ofstream(dir / "s.safetensors") << "abc";
    auto f = SafetensorsFile::Read(dir / "s.safetensors");
    REQUIRE_FALSE(f.ok());
    CHECK(f.status().message().find("truncated: 3 bytes") != std::string::npos);
  }
  SUBCASE("header length beyond the file") {
    WriteRaw(dir / "t.safetensors", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
             "");
    // Cut the header itself short.
    std::filesystem::resize_file(dir / "t.safetensors", 20);
    auto f = SafetensorsFile::Read(dir / "t.safetensors");
    REQUIRE_FALSE(f.ok());
    CHECK(f.status().message().find("truncated or not safetensors") != std::string::npos);
  }
  SUBCASE("data cut short") {
    WriteRaw(dir / "d.safetensors", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
             std::string(8, '\0'));
    auto f = SafetensorsFile::Read(dir / "d.safetensors");
    REQUIRE_FALSE(f.ok());
    CHECK(f.status().message().find("tensor 'a': truncated") != std::string::npos);
  }
  SUBCASE("header does not match the data") {
    WriteRaw(dir / "m.safetensors", R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})",
             std::string(24, '\0'));
    auto f = SafetensorsFile::Read(dir / "m.safetensors");
    REQUIRE_FALSE(f.ok());
    CHECK(f.status().message().find("tensor 'a': header does not match the data") !=
          std::string::npos);
  }
  SUBCASE("a shape too large for the file, whose size would overflow") {
    WriteRaw(dir / "o.safetensors",
             R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})", "");
    auto f = SafetensorsFile::Read(dir / "o.safetensors");
    REQUIRE_FALSE(f.ok());
    CHECK(f.status().message().find("is larger than the file") != std::string::npos);
  }
  SUBCASE("unsupported dtype") {
    WriteRaw(dir / "i.safetensors", R"({"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
             std::string(4, '\0'));
    auto f = SafetensorsFile::Read(dir / "i.safetensors");
    REQUIRE_FALSE(f.ok());
    CHECK(f.status().message().find("unsupported dtype I32") != std::string::npos);
  }
  SUBCASE("header not JSON") {
    WriteRaw(dir / "j.safetensors", "{not json", "");
    auto f = SafetensorsFile::Read(dir / "j.safetensors");
    REQUIRE_FALSE(f.ok());
    CHECK(f.status().message().find("header is not valid JSON") != std::string::npos);
  }
  SUBCASE("missing tensor and wrong rank") {
    Tensor a({2, 2});
    REQUIRE(WriteSafetensors(dir / "ok.safetensors", {{"a", &a}}).ok());
    auto f = SafetensorsFile::Read(dir / "ok.safetensors");
    REQUIRE(f.ok());
    auto missing = f->Get("k");
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.status().message().find("missing tensor 'k'") != std::string::npos);
    auto rank = f->Get("a", 4);
    REQUIRE_FALSE(rank.ok());
    CHECK(rank.status().message().find("tensor 'a': expected rank 4, found rank 2") !=
          std::string::npos);
  }
}

}  // namespace
}  // namespace masktune
