// Tests: hostile input to `masktune attend` (issue 12, "attend and tensor
// input"): deep JSON, numbers beyond double range, folders and devices as
// input, overflowing scores, wrong JSON types, inconsistent safetensors
// headers, and a seeded fuzz run of scripts/fuzz_attend.py. Each CLI case runs
// the real binary on real files and wants exit 2 with one line naming the
// place (or exit 0 with finite numbers), within a timeout.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/attention.h"
#include "engine/registry.h"
#include "engine/safetensors.h"
#include "tests/helpers.h"
#include "tests/process_helpers.h"

namespace masktune {
namespace {

using testing::CheckBadInput;
using testing::Run;

// The masktune binary under `timeout`, so an endless read fails the test instead of hanging it.
Run Attend(const std::string& args, int timeout_s = 20) {
  return testing::Masktune("attend " + args, "", timeout_s);
}

// Exit 0 and one JSON line with a finite error; returns it.
nlohmann::json CheckOk(const Run& r) {
  CAPTURE(r.output);
  REQUIRE(r.code == 0);
  const auto line = nlohmann::json::parse(r.output);
  REQUIRE(line["error"].is_number());
  CHECK(std::isfinite(line["error"].get<double>()));
  return line;
}

// A safetensors file by hand: the header text as given, then the data.
void WriteRaw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xFF));
  out << header << data;
}

std::string Floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

// A header for q (1, 2, 1, 4), k and v (1, 1, 8, 4), F32, with the given
// pieces substituted; `extra` goes before the closing brace.
struct Header {
  std::string q_shape = "[1,2,1,4]", q_offsets = "[0,32]";
  std::string k_shape = "[1,1,8,4]", k_offsets = "[32,160]";
  std::string v_shape = "[1,1,8,4]", v_offsets = "[160,288]";
  std::string extra;
  std::string Text() const {
    return R"({"q":{"dtype":"F32","shape":)" + q_shape + R"(,"data_offsets":)" + q_offsets +
           R"(},"k":{"dtype":"F32","shape":)" + k_shape + R"(,"data_offsets":)" + k_offsets +
           R"(},"v":{"dtype":"F32","shape":)" + v_shape + R"(,"data_offsets":)" + v_offsets + "}" +
           extra + "}";
  }
};
const std::string kData = Floats(std::vector<float>(72, 0.5f));  // 288 bytes: q, k, v
const std::string kSink = R"( --maskers '[{"type":"sink","sink_size":2}]')";

std::string Deep(int depth, const std::string& inner = "") {
  return std::string(static_cast<size_t>(depth), '[') + inner +
         std::string(static_cast<size_t>(depth), ']');
}

TEST_CASE("attend input: JSON nested 100,000 deep is refused before parsing, not a crash") {
  testing::TempDir dir;
  WriteRaw(dir / "ok.safetensors", Header().Text(), kData);
  const std::string input = "--input " + dir / "ok.safetensors";
  // The old code segfaulted in nlohmann's serializer writing the error message.
  std::ofstream(dir / "deep.json") << Deep(100000);
  CheckBadInput(Attend(input + " --maskers @" + dir / "deep.json"),
                "--maskers: masker list: maskers[0][0][0][0][0][0][0][0]...: nested deeper than 64 "
                "levels (line 1, column 65)");
  std::ofstream(dir / "open.json") << std::string(100000, '[');  // never closed
  CheckBadInput(Attend(input + " --maskers @" + dir / "open.json"), "nested deeper than 64 levels");
  // Inline, a masker list inside 63 arrays (64 levels with its objects) parses; one more does not.
  const std::string item = R"({"type":"sink","sink_size":2})";
  CheckBadInput(Attend(input + " --maskers '" + Deep(63, item) + "'"),
                "maskers[0]: expected an object, found [[[[");
  CheckBadInput(Attend(input + " --maskers '" + Deep(64, item) + "'"),
                "nested deeper than 64 levels (line 1, column 65)");

  // In the header: a deep value beside the tensors, and in the case metadata's masker list.
  Header h;
  h.extra = R"(,"zz":)" + Deep(100000, "1");
  WriteRaw(dir / "h.safetensors", h.Text(), kData);
  CheckBadInput(Attend("--input " + dir / "h.safetensors" + kSink),
                "h.safetensors: header: zz[0][0][0][0][0][0][0]...: nested deeper than 64 levels");
  h.extra = R"(,"__metadata__":{"case":"{\"maskers\":)" + Deep(100000) + R"(}"})";
  WriteRaw(dir / "case.safetensors", h.Text(), kData);
  CheckBadInput(Attend("--input " + dir / "case.safetensors"),
                "case.safetensors: case metadata: maskers[0][0][0][0][0][0][0]...: nested deeper "
                "than 64 levels");
}

TEST_CASE("attend input: numbers beyond double range are errors naming the field") {
  testing::TempDir dir;
  WriteRaw(dir / "ok.safetensors", Header().Text(), kData);
  const std::string input = "--input " + dir / "ok.safetensors";
  // The old code: "internal error: number overflow parsing '1e999'", exit 1.
  CheckBadInput(
      Attend(
          input +
          R"( --maskers '[{"type":"sink","sink_size":2},{"type":"oracle_top_k","heavy_size":-1e999}]')"),
      "--maskers: masker list: maskers[1].heavy_size: number -1e999 is beyond the range "
      "of a double (line 1, column 68)");
  // An integer beyond int64 was wrapped to a negative.
  CheckBadInput(
      Attend(input + R"( --maskers '[{"type":"sink","sink_size":18446744073709551615}]')"),
      "maskers[0] (sink): field 'sink_size': integer 18446744073709551615 is beyond the "
      "64-bit range");

  Header shape;
  shape.q_shape = "[1,2,1,1e999]";
  WriteRaw(dir / "s.safetensors", shape.Text(), kData);
  CheckBadInput(Attend("--input " + dir / "s.safetensors" + kSink),
                "s.safetensors: header: q.shape[3]: number 1e999 is beyond the range of a double");
  Header offsets;
  offsets.v_offsets = "[160,2e400]";
  WriteRaw(dir / "o.safetensors", offsets.Text(), kData);
  CheckBadInput(Attend("--input " + dir / "o.safetensors" + kSink),
                "o.safetensors: header: v.data_offsets[1]: number 2e400 is beyond the range of a "
                "double");
  Header scaling;
  scaling.extra = R"(,"__metadata__":{"case":"{\"maskers\":[],\"scaling\":1e999}"})";
  WriteRaw(dir / "c.safetensors", scaling.Text(), kData);
  CheckBadInput(
      Attend("--input " + dir / "c.safetensors"),
      "c.safetensors: case metadata: scaling: number 1e999 is beyond the range of a double");
}

TEST_CASE("attend input: a folder, /dev/zero and /dev/urandom are refused at once") {
  testing::TempDir dir;
  WriteRaw(dir / "ok.safetensors", Header().Text(), kData);
  // The old code: exit 1 "basic_filebuf::underflow" for a folder; read /dev/zero and /dev/urandom
  // until memory ran out (killed here by the timeout, exit 137).
  CheckBadInput(Attend("--input " + dir.path.string() + kSink),
                ": is a folder, not a safetensors file");
  CheckBadInput(Attend("--input /dev/zero" + kSink, 10),
                "/dev/zero: is not a regular file (a device, pipe or socket)");
  CheckBadInput(Attend("--input /dev/urandom" + kSink, 10),
                "/dev/urandom: is not a regular file (a device, pipe or socket)");
  const std::string input = "--input " + dir / "ok.safetensors";
  CheckBadInput(Attend(input + " --maskers @/dev/zero", 10),
                "--maskers: '/dev/zero' is not a regular file");
  CheckBadInput(Attend(input + " --maskers @/dev/urandom", 10),
                "--maskers: '/dev/urandom' is not a regular file");
  CheckBadInput(Attend(input + " --maskers @" + dir.path.string()), "is a folder, not a JSON file");
  // A header length beyond the file is refused before anything is allocated.
  std::ofstream(dir / "len.safetensors", std::ios::binary)
      << std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) << "{}";
  CheckBadInput(Attend("--input " + dir / "len.safetensors" + kSink),
                "truncated or not safetensors: header length 9223372036854775807 exceeds the 2 "
                "bytes after it (or the 100 MiB limit)");
}

TEST_CASE("attend input: scores and outputs that overflow float, and --scaling, are errors") {
  testing::TempDir dir;
  const float big = 3.4e38f;
  // Every element 3.4e38: finite, but <q, k> is not. The old code printed "error":null, exit 0.
  WriteRaw(dir / "big.safetensors", Header().Text(), Floats(std::vector<float>(72, big)));
  CheckBadInput(Attend("--input " + dir / "big.safetensors" + kSink),
                "big.safetensors: scores overflow: <q, k> reaches 4.62e+77 at q[0, 0, 0] and "
                "k[0, 0, 0], beyond the float range (3.4e+38); tensor 'q' holds values up to "
                "3.4e+38, tensor 'k' up to 3.4e+38");
  // Small q and k, huge v: the weighted sum of v overflows.
  std::vector<float> values(72, 0.1f);
  std::fill(values.begin() + 40, values.end(), big);
  WriteRaw(dir / "v.safetensors", Header().Text(), Floats(values));
  CheckBadInput(Attend("--input " + dir / "v.safetensors" + kSink),
                "v.safetensors: dense attention output overflows: tensor 'out' holds a non-finite "
                "value (inf) at flat index 0; tensor 'v' holds values up to 3.4e+38");
  // Equal scores and v = +1, -1, ...: dense attention gives 0, the sink's two keys do not.
  values.assign(72, 0.0f);
  for (int j = 0; j < 8; ++j)
    for (int d = 0; d < 4; ++d) values[40 + j * 4 + d] = j % 2 ? -1.0f : 1.0f;
  WriteRaw(dir / "zero.safetensors", Header().Text(), Floats(values));
  CheckBadInput(Attend("--input " + dir / "zero.safetensors" +
                       R"( --maskers '[{"type":"sink","sink_size":1}]')"),
                "the error is undefined: dense attention's output is all zeros");

  // Scores near the top of the range through the attention mask.
  Header masked;
  masked.extra = R"(,"attention_mask":{"dtype":"F32","shape":[1,1,1,8],"data_offsets":[288,320]})";
  WriteRaw(dir / "m.safetensors", masked.Text(), kData + Floats(std::vector<float>(8, big)));
  CheckBadInput(Attend("--input " + dir / "m.safetensors" + kSink),
                "scores overflow: scaling * <q, k> + attention_mask reaches 3.4e+38 "
                "(attention_mask 3.4e+38) at q[0, 0, 0] and k[0, 0, 0]");

  // --scaling: nan was taken as "not given"; inf and values beyond float range are errors too.
  WriteRaw(dir / "ok.safetensors", Header().Text(), Floats(testing::RandomTensor({72}, 3).vec()));
  const std::string input = "--input " + dir / "ok.safetensors" + kSink;
  CheckBadInput(Attend(input + " --scaling nan"),
                "--scaling: expected a finite number within float range, found nan");
  CheckBadInput(Attend(input + " --scaling inf"), "found inf");
  CheckBadInput(Attend(input + " --scaling -1e39"), "found -1e+39");
  // 0 and negative scalings are defined by s_j = scaling * <q, k_j>: uniform and inverted weights.
  const auto zero = CheckOk(Attend(input + " --scaling 0"));
  const auto neg = CheckOk(Attend(input + " --scaling -0.5"));
  const auto pos = CheckOk(Attend(input + " --scaling 0.5"));
  CHECK(zero["error"] != pos["error"]);
  CHECK(neg["error"] != pos["error"]);
  // A case metadata scaling that is not a number was silently ignored.
  Header meta;
  meta.extra = R"(,"__metadata__":{"case":"{\"maskers\":[],\"scaling\":\"x\"}"})";
  WriteRaw(dir / "meta.safetensors", meta.Text(), kData);
  CheckBadInput(Attend("--input " + dir / "meta.safetensors"),
                "meta.safetensors: case metadata: field 'scaling': expected a number, found \"x\"");
}

TEST_CASE("attend input: wrong JSON types and repeated keys in the masker list") {
  testing::TempDir dir;
  WriteRaw(dir / "ok.safetensors", Header().Text(), kData);
  const std::string input = "--input " + dir / "ok.safetensors" + " --maskers ";
  CheckBadInput(Attend(input + R"('[{"type":5}]')"),
                "--maskers: maskers[0]: field 'type': expected a string, found 5");
  CheckBadInput(Attend(input + R"('[{"type":"oracle_top_k","heavy_size":"x"}]')"),
                "maskers[0] (oracle_top_k): field 'heavy_size': expected a size (integer count or "
                "float fraction of the keys), found \"x\"");
  CheckBadInput(Attend(input + R"('[{"type":"oracle_top_k","heavy_size":null}]')"),
                "maskers[0] (oracle_top_k): field 'heavy_size': expected a number, bool or string, "
                "found null");
  CheckBadInput(Attend(input + "'[null]'"), "maskers[0]: expected an object, found null");
  CheckBadInput(Attend(input + "'null'"), "masker list must be a JSON array of objects");
  CheckBadInput(Attend(input + R"('[{"type":"sink","sink_size":2,"sink_size":3}]')"),
                "masker list: maskers[0]: duplicate key 'sink_size' (line 1, column 31)");
  // The same key spelled with an escape is the same key.
  CheckBadInput(Attend(input + R"('[{"type":"sink","sink_size":2,"sink\u005fsize":3}]')"),
                "duplicate key 'sink_size'");
  // A control character in a name stays on one line.
  CheckBadInput(Attend(input + R"('[{"type":"sink\nx","sink_size":2}]')"),
                "maskers[0] (sink\\x0Ax): unknown masker type 'sink\\x0Ax'");
}

TEST_CASE("attend input: huge sizes do not crash the maskers") {
  testing::TempDir dir;
  WriteRaw(dir / "ok.safetensors", Header().Text(), Floats(testing::RandomTensor({72}, 5).vec()));
  const std::string input = "--input " + dir / "ok.safetensors" + " --maskers ";
  // 1e20 * keys was cast to int64 (undefined; a segfault), w + queries overflowed.
  for (const char* list :
       {R"('[{"type":"oracle_top_k","heavy_size":1e20}]')",
        R"('[{"type":"sink","sink_size":1e300}]')", R"('[{"type":"local","window_size":1e20}]')",
        R"('[{"type":"local","window_size":9223372036854775807}]')"}) {
    CAPTURE(list);
    const auto line = CheckOk(Attend(input + list));
    CHECK(line["density"].get<double>() == 1.0);
    CHECK(line["error"].get<double>() == 0.0);
  }
}

TEST_CASE("attend input: safetensors headers that do not describe the data") {
  testing::TempDir dir;
  auto bad = [&](const Header& h, const std::string& data, const std::string& part) {
    WriteRaw(dir / "x.safetensors", h.Text(), data);
    CheckBadInput(Attend("--input " + dir / "x.safetensors" + kSink), "x.safetensors: " + part);
  };
  Header h;
  h.q_shape = "[0,4611686018427387904,4611686018427387904,4]";  // no elements, absurd dims
  h.q_offsets = "[0,0]";
  bad(h, kData.substr(32),
      "tensor 'q': shape [0,4611686018427387904,4611686018427387904,4] is "
      "larger than the file (256 bytes of data)");
  h = Header();
  h.k_shape = "[4294967296,4294967296,1,1]";  // product overflows int64
  bad(h, kData, "tensor 'k': shape [4294967296,4294967296,1,1] is larger than the file");
  h = Header();
  h.extra = R"(,"q":{"dtype":"F32","shape":[1,2,1,4],"data_offsets":[0,32]})";
  bad(h, kData, "header: top level: duplicate key 'q'");
  h = Header();
  h.q_offsets = "[-32,0]";
  bad(h, kData, "tensor 'q': data_offsets is not a pair of non-negative integers");
  h = Header();
  h.k_offsets = "[0,128]";  // over q's bytes
  bad(h, kData, "tensor 'k': data_offsets [0, 128] overlap those of tensor 'q' [0, 32]");
  h = Header();
  h.v_offsets = "[168,296]";  // a gap of 8 bytes before v
  bad(h, kData + std::string(8, '\0'),
      "tensor 'v': data_offsets start at byte 168: bytes 160 to 168 of the data section belong to "
      "no tensor");
  bad(Header(), kData + std::string(4, '\0'),
      "the data section has 292 bytes but its tensors cover 288");
  h = Header();
  h.q_offsets = "[32,0]";
  bad(h, kData, "tensor 'q': header does not match the data");
  // Shapes that attention rejects.
  h = Header();
  h.v_shape = "[1,1,4,8]";
  bad(h, kData, "k and v must have the same shape");
  h = Header();
  h.q_shape = "[2,1,1,4]";
  bad(h, kData, "q and k disagree on batch");
}

TEST_CASE("attend input: CheckJsonText and CheckScoreRange on their own") {
  CHECK(CheckJsonText(Deep(64, "1"), "x").ok());
  const Status deep = CheckJsonText(Deep(65, "1"), "x");
  CHECK(deep.message() ==
        "x[0][0][0][0][0][0][0][0]...: nested deeper than 64 levels (line 1, "
        "column 65)");
  // Brackets and numbers inside strings are text.
  CHECK(CheckJsonText(R"({"a":"[[[[1e999\"]]]"})", "").ok());
  CHECK(CheckJsonText(R"({"a":{"b":[1,2,{"c":1e999}]}})", "").message() ==
        "a.b[2].c: number 1e999 is beyond the range of a double (line 1, column 21)");
  CHECK(CheckJsonText("{\"a\":1,\n\"b\":2,\n\"a\":3}", "").message() ==
        "top level: duplicate key 'a' (line 3, column 1)");
  CHECK(CheckJsonText(R"([{"a":1},{"a":1}])", "").ok());  // per object
  CHECK(CheckJsonText("1e308", "").ok());

  testing::Case c(1, 2, 1, 2, 16, 8, 7);
  CHECK(CheckScoreRange(c.in).ok());
  c.k.data()[5 * 8] = 1e38f;
  c.q.data()[0] = 1e38f;  // q[0, 0, 0] . k[0, 0, 5] = 1e76
  const Status s = CheckScoreRange(c.in);
  CHECK(s.message().rfind("scores overflow: <q, k> reaches 1e+76 at q[0, 0, 0] and k[0, 0, 5]",
                          0) == 0);
}

TEST_CASE("attend --help describes the input limits") {
  const Run r = Attend("--help");
  CAPTURE(r.output);
  CHECK(r.code == 0);
  for (const char* want : {"regular safetensors file", "nests at most 64 levels", "1e999", "16 MiB",
                           "scores overflow", "0 and negatives allowed"})
    CHECK_MESSAGE(r.output.find(want) != std::string::npos, want);
}

bool HavePython() { return std::system("python3 --version >/dev/null 2>&1") == 0; }

TEST_CASE("attend input: scripts/fuzz_attend.py, 60 seeded cases, none crashes or hangs" *
          doctest::skip(!HavePython()) * doctest::description("python3 not found")) {
  testing::TempDir dir;
  const Run fuzz = testing::Shell("python3 " + std::string(MASKTUNE_SOURCE_DIR) +
                                  "/scripts/fuzz_attend.py --count 60 --seed 12 --binary " +
                                  MASKTUNE_BINARY + " --workdir " + dir / "fuzz");
  const std::string& output = fuzz.output;
  CAPTURE(output);
  CHECK(fuzz.code == 0);
  CHECK(output.find("fuzz_attend: 60 cases (seed 12)") != std::string::npos);
  CHECK(output.find(", 0 failed") != std::string::npos);
}

// A double_sparsity_top_k stack (2 heads of 4 dims: 2 channels each) reading `file`.
std::string ChannelStack(const std::string& file) {
  return R"( --maskers '[{"type":"double_sparsity_top_k","heavy_size":2,"group_factor":2,)"
         R"("sorted_channel_file":")" +
         file + R"("}]')";
}

TEST_CASE("attend input: a hostile sorted_channel_file is exit 2 with one line, at once") {
  testing::TempDir dir;
  WriteRaw(dir / "ok.safetensors", Header().Text(), Floats(testing::RandomTensor({72}, 7).vec()));
  const std::string input = "--input " + dir / "ok.safetensors";
  const std::string key = R"("model.layers.0.self_attn.qk_proj")";
  std::ofstream(dir / "good.json") << "{" << key << ":[[0,1],[2,3]]}";
  const auto good = CheckOk(Attend(input + ChannelStack(dir / "good.json")));
  CHECK(good["density"].get<double>() == 0.25);  // 2 of 8 keys per row

  // The old code read /dev/zero until memory ran out (killed here by the timeout).
  CheckBadInput(Attend(input + ChannelStack("/dev/zero"), 10),
                "--maskers: maskers[0] (double_sparsity_top_k): sorted_channel_file '/dev/zero': "
                "not a regular file (a device, pipe or socket)");
  CheckBadInput(Attend(input + ChannelStack(dir.path.string()), 10),
                "sorted_channel_file '" + dir.path.string() + "': is a folder, not a JSON file");
  CheckBadInput(Attend(input + ChannelStack(dir / "none.json"), 10),
                "sorted_channel_file '" + dir / "none.json" + "': cannot open file");
  // Larger than the limit: refused by its size, before a byte is read (a sparse file).
  std::ofstream(dir / "huge.json") << "{}";
  std::filesystem::resize_file(dir / "huge.json", (uintmax_t{64} << 20) + 1);
  CheckBadInput(Attend(input + ChannelStack(dir / "huge.json"), 10),
                "huge.json': larger than the 64 MiB a channel file may be");
  // The old code exited 1 (json out_of_range was not caught).
  std::ofstream(dir / "big.json") << "{" << key << ":[[0,1e999],[2,3]]}";
  CheckBadInput(Attend(input + ChannelStack(dir / "big.json"), 10),
                "sorted_channel_file '" + dir / "big.json" +
                    "': model.layers.0.self_attn.qk_proj[0][1]: number 1e999 is beyond the range "
                    "of a double (line 1, column 41)");
  // The old code segfaulted in v.dump() writing the error message.
  std::ofstream(dir / "deep.json") << "{" << key << ":[[" << Deep(100000, "0") << ",1],[2,3]]}";
  CheckBadInput(Attend(input + ChannelStack(dir / "deep.json"), 10),
                "sorted_channel_file '" + dir / "deep.json" +
                    "': model.layers.0.self_attn.qk_proj[0][0][0][0][0][0][0]...: nested deeper "
                    "than 64 levels");
  std::ofstream(dir / "dup.json") << "{" << key << ":[[0,1],[2,3]]," << key << ":[]}";
  CheckBadInput(Attend(input + ChannelStack(dir / "dup.json"), 10),
                "dup.json': top level: duplicate key 'model.layers.0.self_attn.qk_proj'");
  std::ofstream(dir / "bad.json") << "{" << key << ":[[0,1],[2,3]";
  CheckBadInput(Attend(input + ChannelStack(dir / "bad.json"), 10),
                "sorted_channel_file '" + dir / "bad.json" + "': not valid JSON: ");
  // A long value as a channel is shown shortened, not dumped whole.
  std::ofstream(dir / "long.json")
      << "{" << key << ":[[0,\"" << std::string(1000000, 'x') << "\"],[2,3]]}";
  const Run lng = Attend(input + ChannelStack(dir / "long.json"), 10);
  CheckBadInput(lng, "head 0: channel \"xxxxxxxx");
  CHECK(lng.output.find("xxx... is not an index in [0, 4)") != std::string::npos);
  CHECK(lng.output.size() < 400);
}

TEST_CASE("attend input: an empty masker list is dense attention, density 1 and error 0") {
  testing::TempDir dir;
  WriteRaw(dir / "ok.safetensors", Header().Text(), Floats(testing::RandomTensor({72}, 7).vec()));
  // The old code printed density 0 for the empty mask of an empty stack.
  const auto dense = CheckOk(Attend("--input " + dir / "ok.safetensors" + " --maskers '[]'"));
  CHECK(dense["density"].get<double>() == 1.0);
  CHECK(dense["error"].get<double>() == 0.0);
  // A sparse stack's density is unchanged: 2 sink keys of 8.
  const auto sink = CheckOk(Attend("--input " + dir / "ok.safetensors" + kSink));
  CHECK(sink["density"].get<double>() == 0.25);
}

}  // namespace
}  // namespace masktune
