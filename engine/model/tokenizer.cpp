// File: engine/model/tokenizer.cpp
//
// Byte-level BPE as GPT-2 / Hugging Face tokenizers / llama.cpp do it, for the
// GGUF "gpt2" tokenizer model.
//
// Pre-tokenizers (tokenizer.ggml.pre), after llama.cpp's src/llama-vocab.cpp:
//   "gpt2":   'GPT-2': 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   "smollm": first \p{N} (every number character a piece of its own), then the
//             GPT-2 expression inside each piece. This is SmolLM2's tokenizer.json:
//             Digits(individual_digits=True), then ByteLevel(use_regex=True).
// Both are written by hand (Gpt2Split below follows the alternatives in order,
// first match wins, as a backtracking regex engine does; \s+(?!\S) gives back
// the last whitespace character when a non-space follows). A lookahead never
// sees past the piece it works in (end of piece = end of string), as in both
// reference implementations.
//
// Unicode classes: \s is the White_Space property; \p{L} and \p{N} are the
// general categories L* and N* of Unicode 14.0, as range tables generated with
// Python 3.11's unicodedata:
//   [c for c in range(0x110000) if unicodedata.category(chr(c))[0] == 'L'] (and 'N'),
//   merged into inclusive ranges.
// Characters assigned after Unicode 14 count as "other" (neither letter,
// number nor space), so text using them may split differently from a newer
// reference. Invalid UTF-8 bytes are one "other" character each: they go
// through BPE as their byte characters and decode to the same bytes.
//
// A vocabulary may lack the character of some bytes (SmolLM2 has none for 21
// bytes: 0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2, 0xF5-0xFF).
// Such bytes are dropped from the piece they are in, as Hugging Face
// tokenizers (BPE without unk or byte fallback) and llama.cpp do, so those
// texts do not round-trip.
//
// BPE: symbols are token ids from the start (every byte's character must be a
// token); a heap holds the adjacent pairs that have a merge, ordered by merge
// rank, then position; a popped pair that is stale (either side merged since)
// is dropped. This is the order Hugging Face tokenizers and llama.cpp merge in.

#include "engine/model/tokenizer.h"

#include <algorithm>
#include <queue>
#include <utility>
#include <variant>

namespace masktune::model {
namespace {

// ---------------------------------------------------------------- Unicode ----

enum CharClass : uint8_t { kOther = 0, kLetter, kNumber, kSpace };

// Unicode 14.0 general categories L* and N* (see the file comment).
// clang-format off
constexpr uint32_t kLetterRanges[][2] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xAA, 0xAA}, {0xB5, 0xB5}, {0xBA, 0xBA}, {0xC0, 0xD6},
    {0xD8, 0xF6}, {0xF8, 0x2C1}, {0x2C6, 0x2D1}, {0x2E0, 0x2E4}, {0x2EC, 0x2EC}, {0x2EE, 0x2EE},
    {0x370, 0x374}, {0x376, 0x377}, {0x37A, 0x37D}, {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A},
    {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556},
    {0x559, 0x559}, {0x560, 0x588}, {0x5D0, 0x5EA}, {0x5EF, 0x5F2}, {0x620, 0x64A}, {0x66E, 0x66F},
    {0x671, 0x6D3}, {0x6D5, 0x6D5}, {0x6E5, 0x6E6}, {0x6EE, 0x6EF}, {0x6FA, 0x6FC}, {0x6FF, 0x6FF},
    {0x710, 0x710}, {0x712, 0x72F}, {0x74D, 0x7A5}, {0x7B1, 0x7B1}, {0x7CA, 0x7EA}, {0x7F4, 0x7F5},
    {0x7FA, 0x7FA}, {0x800, 0x815}, {0x81A, 0x81A}, {0x824, 0x824}, {0x828, 0x828}, {0x840, 0x858},
    {0x860, 0x86A}, {0x870, 0x887}, {0x889, 0x88E}, {0x8A0, 0x8C9}, {0x904, 0x939}, {0x93D, 0x93D},
    {0x950, 0x950}, {0x958, 0x961}, {0x971, 0x980}, {0x985, 0x98C}, {0x98F, 0x990}, {0x993, 0x9A8},
    {0x9AA, 0x9B0}, {0x9B2, 0x9B2}, {0x9B6, 0x9B9}, {0x9BD, 0x9BD}, {0x9CE, 0x9CE}, {0x9DC, 0x9DD},
    {0x9DF, 0x9E1}, {0x9F0, 0x9F1}, {0x9FC, 0x9FC}, {0xA05, 0xA0A}, {0xA0F, 0xA10}, {0xA13, 0xA28},
    {0xA2A, 0xA30}, {0xA32, 0xA33}, {0xA35, 0xA36}, {0xA38, 0xA39}, {0xA59, 0xA5C}, {0xA5E, 0xA5E},
    {0xA72, 0xA74}, {0xA85, 0xA8D}, {0xA8F, 0xA91}, {0xA93, 0xAA8}, {0xAAA, 0xAB0}, {0xAB2, 0xAB3},
    {0xAB5, 0xAB9}, {0xABD, 0xABD}, {0xAD0, 0xAD0}, {0xAE0, 0xAE1}, {0xAF9, 0xAF9}, {0xB05, 0xB0C},
    {0xB0F, 0xB10}, {0xB13, 0xB28}, {0xB2A, 0xB30}, {0xB32, 0xB33}, {0xB35, 0xB39}, {0xB3D, 0xB3D},
    {0xB5C, 0xB5D}, {0xB5F, 0xB61}, {0xB71, 0xB71}, {0xB83, 0xB83}, {0xB85, 0xB8A}, {0xB8E, 0xB90},
    {0xB92, 0xB95}, {0xB99, 0xB9A}, {0xB9C, 0xB9C}, {0xB9E, 0xB9F}, {0xBA3, 0xBA4}, {0xBA8, 0xBAA},
    {0xBAE, 0xBB9}, {0xBD0, 0xBD0}, {0xC05, 0xC0C}, {0xC0E, 0xC10}, {0xC12, 0xC28}, {0xC2A, 0xC39},
    {0xC3D, 0xC3D}, {0xC58, 0xC5A}, {0xC5D, 0xC5D}, {0xC60, 0xC61}, {0xC80, 0xC80}, {0xC85, 0xC8C},
    {0xC8E, 0xC90}, {0xC92, 0xCA8}, {0xCAA, 0xCB3}, {0xCB5, 0xCB9}, {0xCBD, 0xCBD}, {0xCDD, 0xCDE},
    {0xCE0, 0xCE1}, {0xCF1, 0xCF2}, {0xD04, 0xD0C}, {0xD0E, 0xD10}, {0xD12, 0xD3A}, {0xD3D, 0xD3D},
    {0xD4E, 0xD4E}, {0xD54, 0xD56}, {0xD5F, 0xD61}, {0xD7A, 0xD7F}, {0xD85, 0xD96}, {0xD9A, 0xDB1},
    {0xDB3, 0xDBB}, {0xDBD, 0xDBD}, {0xDC0, 0xDC6}, {0xE01, 0xE30}, {0xE32, 0xE33}, {0xE40, 0xE46},
    {0xE81, 0xE82}, {0xE84, 0xE84}, {0xE86, 0xE8A}, {0xE8C, 0xEA3}, {0xEA5, 0xEA5}, {0xEA7, 0xEB0},
    {0xEB2, 0xEB3}, {0xEBD, 0xEBD}, {0xEC0, 0xEC4}, {0xEC6, 0xEC6}, {0xEDC, 0xEDF}, {0xF00, 0xF00},
    {0xF40, 0xF47}, {0xF49, 0xF6C}, {0xF88, 0xF8C}, {0x1000, 0x102A}, {0x103F, 0x103F},
    {0x1050, 0x1055}, {0x105A, 0x105D}, {0x1061, 0x1061}, {0x1065, 0x1066}, {0x106E, 0x1070},
    {0x1075, 0x1081}, {0x108E, 0x108E}, {0x10A0, 0x10C5}, {0x10C7, 0x10C7}, {0x10CD, 0x10CD},
    {0x10D0, 0x10FA}, {0x10FC, 0x1248}, {0x124A, 0x124D}, {0x1250, 0x1256}, {0x1258, 0x1258},
    {0x125A, 0x125D}, {0x1260, 0x1288}, {0x128A, 0x128D}, {0x1290, 0x12B0}, {0x12B2, 0x12B5},
    {0x12B8, 0x12BE}, {0x12C0, 0x12C0}, {0x12C2, 0x12C5}, {0x12C8, 0x12D6}, {0x12D8, 0x1310},
    {0x1312, 0x1315}, {0x1318, 0x135A}, {0x1380, 0x138F}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD},
    {0x1401, 0x166C}, {0x166F, 0x167F}, {0x1681, 0x169A}, {0x16A0, 0x16EA}, {0x16F1, 0x16F8},
    {0x1700, 0x1711}, {0x171F, 0x1731}, {0x1740, 0x1751}, {0x1760, 0x176C}, {0x176E, 0x1770},
    {0x1780, 0x17B3}, {0x17D7, 0x17D7}, {0x17DC, 0x17DC}, {0x1820, 0x1878}, {0x1880, 0x1884},
    {0x1887, 0x18A8}, {0x18AA, 0x18AA}, {0x18B0, 0x18F5}, {0x1900, 0x191E}, {0x1950, 0x196D},
    {0x1970, 0x1974}, {0x1980, 0x19AB}, {0x19B0, 0x19C9}, {0x1A00, 0x1A16}, {0x1A20, 0x1A54},
    {0x1AA7, 0x1AA7}, {0x1B05, 0x1B33}, {0x1B45, 0x1B4C}, {0x1B83, 0x1BA0}, {0x1BAE, 0x1BAF},
    {0x1BBA, 0x1BE5}, {0x1C00, 0x1C23}, {0x1C4D, 0x1C4F}, {0x1C5A, 0x1C7D}, {0x1C80, 0x1C88},
    {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1CE9, 0x1CEC}, {0x1CEE, 0x1CF3}, {0x1CF5, 0x1CF6},
    {0x1CFA, 0x1CFA}, {0x1D00, 0x1DBF}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45},
    {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D},
    {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4},
    {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4},
    {0x1FF6, 0x1FFC}, {0x2071, 0x2071}, {0x207F, 0x207F}, {0x2090, 0x209C}, {0x2102, 0x2102},
    {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124},
    {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2139}, {0x213C, 0x213F},
    {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2CE4}, {0x2CEB, 0x2CEE},
    {0x2CF2, 0x2CF3}, {0x2D00, 0x2D25}, {0x2D27, 0x2D27}, {0x2D2D, 0x2D2D}, {0x2D30, 0x2D67},
    {0x2D6F, 0x2D6F}, {0x2D80, 0x2D96}, {0x2DA0, 0x2DA6}, {0x2DA8, 0x2DAE}, {0x2DB0, 0x2DB6},
    {0x2DB8, 0x2DBE}, {0x2DC0, 0x2DC6}, {0x2DC8, 0x2DCE}, {0x2DD0, 0x2DD6}, {0x2DD8, 0x2DDE},
    {0x2E2F, 0x2E2F}, {0x3005, 0x3006}, {0x3031, 0x3035}, {0x303B, 0x303C}, {0x3041, 0x3096},
    {0x309D, 0x309F}, {0x30A1, 0x30FA}, {0x30FC, 0x30FF}, {0x3105, 0x312F}, {0x3131, 0x318E},
    {0x31A0, 0x31BF}, {0x31F0, 0x31FF}, {0x3400, 0x4DBF}, {0x4E00, 0xA48C}, {0xA4D0, 0xA4FD},
    {0xA500, 0xA60C}, {0xA610, 0xA61F}, {0xA62A, 0xA62B}, {0xA640, 0xA66E}, {0xA67F, 0xA69D},
    {0xA6A0, 0xA6E5}, {0xA717, 0xA71F}, {0xA722, 0xA788}, {0xA78B, 0xA7CA}, {0xA7D0, 0xA7D1},
    {0xA7D3, 0xA7D3}, {0xA7D5, 0xA7D9}, {0xA7F2, 0xA801}, {0xA803, 0xA805}, {0xA807, 0xA80A},
    {0xA80C, 0xA822}, {0xA840, 0xA873}, {0xA882, 0xA8B3}, {0xA8F2, 0xA8F7}, {0xA8FB, 0xA8FB},
    {0xA8FD, 0xA8FE}, {0xA90A, 0xA925}, {0xA930, 0xA946}, {0xA960, 0xA97C}, {0xA984, 0xA9B2},
    {0xA9CF, 0xA9CF}, {0xA9E0, 0xA9E4}, {0xA9E6, 0xA9EF}, {0xA9FA, 0xA9FE}, {0xAA00, 0xAA28},
    {0xAA40, 0xAA42}, {0xAA44, 0xAA4B}, {0xAA60, 0xAA76}, {0xAA7A, 0xAA7A}, {0xAA7E, 0xAAAF},
    {0xAAB1, 0xAAB1}, {0xAAB5, 0xAAB6}, {0xAAB9, 0xAABD}, {0xAAC0, 0xAAC0}, {0xAAC2, 0xAAC2},
    {0xAADB, 0xAADD}, {0xAAE0, 0xAAEA}, {0xAAF2, 0xAAF4}, {0xAB01, 0xAB06}, {0xAB09, 0xAB0E},
    {0xAB11, 0xAB16}, {0xAB20, 0xAB26}, {0xAB28, 0xAB2E}, {0xAB30, 0xAB5A}, {0xAB5C, 0xAB69},
    {0xAB70, 0xABE2}, {0xAC00, 0xD7A3}, {0xD7B0, 0xD7C6}, {0xD7CB, 0xD7FB}, {0xF900, 0xFA6D},
    {0xFA70, 0xFAD9}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFB1D, 0xFB1D}, {0xFB1F, 0xFB28},
    {0xFB2A, 0xFB36}, {0xFB38, 0xFB3C}, {0xFB3E, 0xFB3E}, {0xFB40, 0xFB41}, {0xFB43, 0xFB44},
    {0xFB46, 0xFBB1}, {0xFBD3, 0xFD3D}, {0xFD50, 0xFD8F}, {0xFD92, 0xFDC7}, {0xFDF0, 0xFDFB},
    {0xFE70, 0xFE74}, {0xFE76, 0xFEFC}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0xFF66, 0xFFBE},
    {0xFFC2, 0xFFC7}, {0xFFCA, 0xFFCF}, {0xFFD2, 0xFFD7}, {0xFFDA, 0xFFDC}, {0x10000, 0x1000B},
    {0x1000D, 0x10026}, {0x10028, 0x1003A}, {0x1003C, 0x1003D}, {0x1003F, 0x1004D},
    {0x10050, 0x1005D}, {0x10080, 0x100FA}, {0x10280, 0x1029C}, {0x102A0, 0x102D0},
    {0x10300, 0x1031F}, {0x1032D, 0x10340}, {0x10342, 0x10349}, {0x10350, 0x10375},
    {0x10380, 0x1039D}, {0x103A0, 0x103C3}, {0x103C8, 0x103CF}, {0x10400, 0x1049D},
    {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10500, 0x10527}, {0x10530, 0x10563},
    {0x10570, 0x1057A}, {0x1057C, 0x1058A}, {0x1058C, 0x10592}, {0x10594, 0x10595},
    {0x10597, 0x105A1}, {0x105A3, 0x105B1}, {0x105B3, 0x105B9}, {0x105BB, 0x105BC},
    {0x10600, 0x10736}, {0x10740, 0x10755}, {0x10760, 0x10767}, {0x10780, 0x10785},
    {0x10787, 0x107B0}, {0x107B2, 0x107BA}, {0x10800, 0x10805}, {0x10808, 0x10808},
    {0x1080A, 0x10835}, {0x10837, 0x10838}, {0x1083C, 0x1083C}, {0x1083F, 0x10855},
    {0x10860, 0x10876}, {0x10880, 0x1089E}, {0x108E0, 0x108F2}, {0x108F4, 0x108F5},
    {0x10900, 0x10915}, {0x10920, 0x10939}, {0x10980, 0x109B7}, {0x109BE, 0x109BF},
    {0x10A00, 0x10A00}, {0x10A10, 0x10A13}, {0x10A15, 0x10A17}, {0x10A19, 0x10A35},
    {0x10A60, 0x10A7C}, {0x10A80, 0x10A9C}, {0x10AC0, 0x10AC7}, {0x10AC9, 0x10AE4},
    {0x10B00, 0x10B35}, {0x10B40, 0x10B55}, {0x10B60, 0x10B72}, {0x10B80, 0x10B91},
    {0x10C00, 0x10C48}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x10D00, 0x10D23},
    {0x10E80, 0x10EA9}, {0x10EB0, 0x10EB1}, {0x10F00, 0x10F1C}, {0x10F27, 0x10F27},
    {0x10F30, 0x10F45}, {0x10F70, 0x10F81}, {0x10FB0, 0x10FC4}, {0x10FE0, 0x10FF6},
    {0x11003, 0x11037}, {0x11071, 0x11072}, {0x11075, 0x11075}, {0x11083, 0x110AF},
    {0x110D0, 0x110E8}, {0x11103, 0x11126}, {0x11144, 0x11144}, {0x11147, 0x11147},
    {0x11150, 0x11172}, {0x11176, 0x11176}, {0x11183, 0x111B2}, {0x111C1, 0x111C4},
    {0x111DA, 0x111DA}, {0x111DC, 0x111DC}, {0x11200, 0x11211}, {0x11213, 0x1122B},
    {0x11280, 0x11286}, {0x11288, 0x11288}, {0x1128A, 0x1128D}, {0x1128F, 0x1129D},
    {0x1129F, 0x112A8}, {0x112B0, 0x112DE}, {0x11305, 0x1130C}, {0x1130F, 0x11310},
    {0x11313, 0x11328}, {0x1132A, 0x11330}, {0x11332, 0x11333}, {0x11335, 0x11339},
    {0x1133D, 0x1133D}, {0x11350, 0x11350}, {0x1135D, 0x11361}, {0x11400, 0x11434},
    {0x11447, 0x1144A}, {0x1145F, 0x11461}, {0x11480, 0x114AF}, {0x114C4, 0x114C5},
    {0x114C7, 0x114C7}, {0x11580, 0x115AE}, {0x115D8, 0x115DB}, {0x11600, 0x1162F},
    {0x11644, 0x11644}, {0x11680, 0x116AA}, {0x116B8, 0x116B8}, {0x11700, 0x1171A},
    {0x11740, 0x11746}, {0x11800, 0x1182B}, {0x118A0, 0x118DF}, {0x118FF, 0x11906},
    {0x11909, 0x11909}, {0x1190C, 0x11913}, {0x11915, 0x11916}, {0x11918, 0x1192F},
    {0x1193F, 0x1193F}, {0x11941, 0x11941}, {0x119A0, 0x119A7}, {0x119AA, 0x119D0},
    {0x119E1, 0x119E1}, {0x119E3, 0x119E3}, {0x11A00, 0x11A00}, {0x11A0B, 0x11A32},
    {0x11A3A, 0x11A3A}, {0x11A50, 0x11A50}, {0x11A5C, 0x11A89}, {0x11A9D, 0x11A9D},
    {0x11AB0, 0x11AF8}, {0x11C00, 0x11C08}, {0x11C0A, 0x11C2E}, {0x11C40, 0x11C40},
    {0x11C72, 0x11C8F}, {0x11D00, 0x11D06}, {0x11D08, 0x11D09}, {0x11D0B, 0x11D30},
    {0x11D46, 0x11D46}, {0x11D60, 0x11D65}, {0x11D67, 0x11D68}, {0x11D6A, 0x11D89},
    {0x11D98, 0x11D98}, {0x11EE0, 0x11EF2}, {0x11FB0, 0x11FB0}, {0x12000, 0x12399},
    {0x12480, 0x12543}, {0x12F90, 0x12FF0}, {0x13000, 0x1342E}, {0x14400, 0x14646},
    {0x16800, 0x16A38}, {0x16A40, 0x16A5E}, {0x16A70, 0x16ABE}, {0x16AD0, 0x16AED},
    {0x16B00, 0x16B2F}, {0x16B40, 0x16B43}, {0x16B63, 0x16B77}, {0x16B7D, 0x16B8F},
    {0x16E40, 0x16E7F}, {0x16F00, 0x16F4A}, {0x16F50, 0x16F50}, {0x16F93, 0x16F9F},
    {0x16FE0, 0x16FE1}, {0x16FE3, 0x16FE3}, {0x17000, 0x187F7}, {0x18800, 0x18CD5},
    {0x18D00, 0x18D08}, {0x1AFF0, 0x1AFF3}, {0x1AFF5, 0x1AFFB}, {0x1AFFD, 0x1AFFE},
    {0x1B000, 0x1B122}, {0x1B150, 0x1B152}, {0x1B164, 0x1B167}, {0x1B170, 0x1B2FB},
    {0x1BC00, 0x1BC6A}, {0x1BC70, 0x1BC7C}, {0x1BC80, 0x1BC88}, {0x1BC90, 0x1BC99},
    {0x1D400, 0x1D454}, {0x1D456, 0x1D49C}, {0x1D49E, 0x1D49F}, {0x1D4A2, 0x1D4A2},
    {0x1D4A5, 0x1D4A6}, {0x1D4A9, 0x1D4AC}, {0x1D4AE, 0x1D4B9}, {0x1D4BB, 0x1D4BB},
    {0x1D4BD, 0x1D4C3}, {0x1D4C5, 0x1D505}, {0x1D507, 0x1D50A}, {0x1D50D, 0x1D514},
    {0x1D516, 0x1D51C}, {0x1D51E, 0x1D539}, {0x1D53B, 0x1D53E}, {0x1D540, 0x1D544},
    {0x1D546, 0x1D546}, {0x1D54A, 0x1D550}, {0x1D552, 0x1D6A5}, {0x1D6A8, 0x1D6C0},
    {0x1D6C2, 0x1D6DA}, {0x1D6DC, 0x1D6FA}, {0x1D6FC, 0x1D714}, {0x1D716, 0x1D734},
    {0x1D736, 0x1D74E}, {0x1D750, 0x1D76E}, {0x1D770, 0x1D788}, {0x1D78A, 0x1D7A8},
    {0x1D7AA, 0x1D7C2}, {0x1D7C4, 0x1D7CB}, {0x1DF00, 0x1DF1E}, {0x1E100, 0x1E12C},
    {0x1E137, 0x1E13D}, {0x1E14E, 0x1E14E}, {0x1E290, 0x1E2AD}, {0x1E2C0, 0x1E2EB},
    {0x1E7E0, 0x1E7E6}, {0x1E7E8, 0x1E7EB}, {0x1E7ED, 0x1E7EE}, {0x1E7F0, 0x1E7FE},
    {0x1E800, 0x1E8C4}, {0x1E900, 0x1E943}, {0x1E94B, 0x1E94B}, {0x1EE00, 0x1EE03},
    {0x1EE05, 0x1EE1F}, {0x1EE21, 0x1EE22}, {0x1EE24, 0x1EE24}, {0x1EE27, 0x1EE27},
    {0x1EE29, 0x1EE32}, {0x1EE34, 0x1EE37}, {0x1EE39, 0x1EE39}, {0x1EE3B, 0x1EE3B},
    {0x1EE42, 0x1EE42}, {0x1EE47, 0x1EE47}, {0x1EE49, 0x1EE49}, {0x1EE4B, 0x1EE4B},
    {0x1EE4D, 0x1EE4F}, {0x1EE51, 0x1EE52}, {0x1EE54, 0x1EE54}, {0x1EE57, 0x1EE57},
    {0x1EE59, 0x1EE59}, {0x1EE5B, 0x1EE5B}, {0x1EE5D, 0x1EE5D}, {0x1EE5F, 0x1EE5F},
    {0x1EE61, 0x1EE62}, {0x1EE64, 0x1EE64}, {0x1EE67, 0x1EE6A}, {0x1EE6C, 0x1EE72},
    {0x1EE74, 0x1EE77}, {0x1EE79, 0x1EE7C}, {0x1EE7E, 0x1EE7E}, {0x1EE80, 0x1EE89},
    {0x1EE8B, 0x1EE9B}, {0x1EEA1, 0x1EEA3}, {0x1EEA5, 0x1EEA9}, {0x1EEAB, 0x1EEBB},
    {0x20000, 0x2A6DF}, {0x2A700, 0x2B738}, {0x2B740, 0x2B81D}, {0x2B820, 0x2CEA1},
    {0x2CEB0, 0x2EBE0}, {0x2F800, 0x2FA1D}, {0x30000, 0x3134A},
};
constexpr uint32_t kNumberRanges[][2] = {
    {0x30, 0x39}, {0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}, {0x660, 0x669}, {0x6F0, 0x6F9},
    {0x7C0, 0x7C9}, {0x966, 0x96F}, {0x9E6, 0x9EF}, {0x9F4, 0x9F9}, {0xA66, 0xA6F}, {0xAE6, 0xAEF},
    {0xB66, 0xB6F}, {0xB72, 0xB77}, {0xBE6, 0xBF2}, {0xC66, 0xC6F}, {0xC78, 0xC7E}, {0xCE6, 0xCEF},
    {0xD58, 0xD5E}, {0xD66, 0xD78}, {0xDE6, 0xDEF}, {0xE50, 0xE59}, {0xED0, 0xED9}, {0xF20, 0xF33},
    {0x1040, 0x1049}, {0x1090, 0x1099}, {0x1369, 0x137C}, {0x16EE, 0x16F0}, {0x17E0, 0x17E9},
    {0x17F0, 0x17F9}, {0x1810, 0x1819}, {0x1946, 0x194F}, {0x19D0, 0x19DA}, {0x1A80, 0x1A89},
    {0x1A90, 0x1A99}, {0x1B50, 0x1B59}, {0x1BB0, 0x1BB9}, {0x1C40, 0x1C49}, {0x1C50, 0x1C59},
    {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2150, 0x2182}, {0x2185, 0x2189},
    {0x2460, 0x249B}, {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x2CFD, 0x2CFD}, {0x3007, 0x3007},
    {0x3021, 0x3029}, {0x3038, 0x303A}, {0x3192, 0x3195}, {0x3220, 0x3229}, {0x3248, 0x324F},
    {0x3251, 0x325F}, {0x3280, 0x3289}, {0x32B1, 0x32BF}, {0xA620, 0xA629}, {0xA6E6, 0xA6EF},
    {0xA830, 0xA835}, {0xA8D0, 0xA8D9}, {0xA900, 0xA909}, {0xA9D0, 0xA9D9}, {0xA9F0, 0xA9F9},
    {0xAA50, 0xAA59}, {0xABF0, 0xABF9}, {0xFF10, 0xFF19}, {0x10107, 0x10133}, {0x10140, 0x10178},
    {0x1018A, 0x1018B}, {0x102E1, 0x102FB}, {0x10320, 0x10323}, {0x10341, 0x10341},
    {0x1034A, 0x1034A}, {0x103D1, 0x103D5}, {0x104A0, 0x104A9}, {0x10858, 0x1085F},
    {0x10879, 0x1087F}, {0x108A7, 0x108AF}, {0x108FB, 0x108FF}, {0x10916, 0x1091B},
    {0x109BC, 0x109BD}, {0x109C0, 0x109CF}, {0x109D2, 0x109FF}, {0x10A40, 0x10A48},
    {0x10A7D, 0x10A7E}, {0x10A9D, 0x10A9F}, {0x10AEB, 0x10AEF}, {0x10B58, 0x10B5F},
    {0x10B78, 0x10B7F}, {0x10BA9, 0x10BAF}, {0x10CFA, 0x10CFF}, {0x10D30, 0x10D39},
    {0x10E60, 0x10E7E}, {0x10F1D, 0x10F26}, {0x10F51, 0x10F54}, {0x10FC5, 0x10FCB},
    {0x11052, 0x1106F}, {0x110F0, 0x110F9}, {0x11136, 0x1113F}, {0x111D0, 0x111D9},
    {0x111E1, 0x111F4}, {0x112F0, 0x112F9}, {0x11450, 0x11459}, {0x114D0, 0x114D9},
    {0x11650, 0x11659}, {0x116C0, 0x116C9}, {0x11730, 0x1173B}, {0x118E0, 0x118F2},
    {0x11950, 0x11959}, {0x11C50, 0x11C6C}, {0x11D50, 0x11D59}, {0x11DA0, 0x11DA9},
    {0x11FC0, 0x11FD4}, {0x12400, 0x1246E}, {0x16A60, 0x16A69}, {0x16AC0, 0x16AC9},
    {0x16B50, 0x16B59}, {0x16B5B, 0x16B61}, {0x16E80, 0x16E96}, {0x1D2E0, 0x1D2F3},
    {0x1D360, 0x1D378}, {0x1D7CE, 0x1D7FF}, {0x1E140, 0x1E149}, {0x1E2F0, 0x1E2F9},
    {0x1E8C7, 0x1E8CF}, {0x1E950, 0x1E959}, {0x1EC71, 0x1ECAB}, {0x1ECAD, 0x1ECAF},
    {0x1ECB1, 0x1ECB4}, {0x1ED01, 0x1ED2D}, {0x1ED2F, 0x1ED3D}, {0x1F100, 0x1F10C},
    {0x1FBF0, 0x1FBF9},
};
// clang-format on

template <size_t N>
bool InRanges(const uint32_t (&ranges)[N][2], uint32_t cp) {
  size_t lo = 0, hi = N;  // first range with ranges[i][1] >= cp
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (ranges[mid][1] < cp) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo < N && ranges[lo][0] <= cp;
}

bool IsWhiteSpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

CharClass Classify(uint32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return kLetter;
    if (cp >= '0' && cp <= '9') return kNumber;
    return IsWhiteSpace(cp) ? kSpace : kOther;
  }
  if (IsWhiteSpace(cp)) return kSpace;
  if (InRanges(kLetterRanges, cp)) return kLetter;
  if (InRanges(kNumberRanges, cp)) return kNumber;
  return kOther;
}

constexpr uint32_t kInvalid = 0xFFFD;

// Decodes the code point at text[pos]; `len` gets its length in bytes. An
// invalid or truncated sequence is one byte long and decodes to U+FFFD.
uint32_t DecodeUtf8(const std::string& text, size_t pos, size_t end, size_t& len) {
  auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t b0 = byte(pos);
  len = 1;
  if (b0 < 0x80) return b0;
  size_t n;
  uint32_t cp;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // beyond U+10FFFF
  } else {
    return kInvalid;
  }
  if (pos + n > end) return kInvalid;
  for (size_t i = 1; i < n; ++i) {
    const uint8_t b = byte(pos + i);
    if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return kInvalid;
    cp = (cp << 6) | (b & 0x3F);
  }
  len = n;
  return cp;
}

void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the
// others (controls, space, 0x7F-0xA0, soft hyphen) for U+0100 onwards in order.
std::array<uint32_t, 256> ByteToCodePoint() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    map[b] = printable ? b : next++;
  }
  return map;
}

const std::array<uint32_t, 256>& ByteChars() {
  static const std::array<uint32_t, 256> map = ByteToCodePoint();
  return map;
}

// The byte a GPT-2 byte character stands for, or -1.
int CodePointToByte(uint32_t cp) {
  static const std::array<int, 324> bytes = [] {  // every byte character is below U+0144
    std::array<int, 324> inverse;
    inverse.fill(-1);
    for (int b = 0; b < 256; ++b) inverse[ByteChars()[b]] = b;
    return inverse;
  }();
  return cp < bytes.size() ? bytes[cp] : -1;
}

// --------------------------------------------------------- pre-tokenizer ----

struct CodePoint {
  size_t offset;  // in the text
  uint32_t value;
  CharClass cls;
};

// Calls emit(first, last) for each piece [first, last) of cps[begin, end) the
// GPT-2 expression matches, in order; the pieces cover the range.
template <typename Emit>
void Gpt2Split(const std::vector<CodePoint>& cps, size_t begin, size_t end, Emit&& emit) {
  size_t i = begin;
  auto run = [&](size_t from, CharClass cls) {
    while (from < end && cps[from].cls == cls) ++from;
    return from;
  };
  while (i < end) {
    const uint32_t c = cps[i].value;
    // 's|'t|'re|'ve|'m|'ll|'d
    if (c == '\'' && i + 1 < end) {
      const uint32_t c1 = cps[i + 1].value;
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        emit(i, i + 2);
        i += 2;
        continue;
      }
      if (i + 2 < end) {
        const uint32_t c2 = cps[i + 2].value;
        if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
          emit(i, i + 3);
          i += 3;
          continue;
        }
      }
    }
    // ' ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+': an optional space, then a run of one class.
    const size_t start = (c == ' ' && i + 1 < end && cps[i + 1].cls != kSpace) ? i + 1 : i;
    const CharClass cls = cps[start].cls;
    if (cls != kSpace) {
      const size_t stop = run(start, cls);
      emit(i, stop);
      i = stop;
      continue;
    }
    // '\s+(?!\S)|\s+': a whitespace run, less its last character when a non-space follows.
    const size_t stop = run(i, kSpace);
    const size_t taken = (stop < end && stop - i >= 2) ? stop - 1 : stop;
    emit(i, taken);
    i = taken;
  }
}

// -------------------------------------------------------------- template ----

// The system turn a ChatML template writes when the messages bring none: a
// literal "<|im_start|>system\n...<|im_end|>" inside it (SmolLM2, Qwen2).
// Returns false when the template has none.
bool FindDefaultSystem(const std::string& tmpl, std::string& out) {
  const std::string head = "<|im_start|>system";
  for (size_t pos = tmpl.find(head); pos != std::string::npos; pos = tmpl.find(head, pos + 1)) {
    size_t body = pos + head.size();
    if (tmpl.compare(body, 1, "\n") == 0) {
      body += 1;
    } else if (tmpl.compare(body, 2, "\\n") == 0) {
      body += 2;
    } else {
      continue;
    }
    const size_t stop = tmpl.find("<|im_end|>", body);
    if (stop == std::string::npos) return false;
    const std::string content = tmpl.substr(body, stop - body);
    // Built from expressions ("' + message['content'] + '"), not a literal.
    if (content.find_first_of("'\"{}+") != std::string::npos) continue;
    out.clear();
    for (size_t i = 0; i < content.size(); ++i) {
      if (content[i] == '\\' && i + 1 < content.size() && content[i + 1] == 'n') {
        out.push_back('\n');
        ++i;
      } else {
        out.push_back(content[i]);
      }
    }
    return true;
  }
  return false;
}

constexpr int32_t kControl = 3;
constexpr int32_t kUserDefined = 4;

}  // namespace

// ------------------------------------------------------------------ build ----

Result<Tokenizer> Tokenizer::Build(const TokenizerSpec& spec, const std::string& source) {
  const std::string where = source + ": ";
  const int64_t n = static_cast<int64_t>(spec.tokens.size());
  if (n == 0) return Status::Error(where + "tokenizer.ggml.tokens is empty");
  if (n > INT32_MAX) return Status::Error(where + "tokenizer.ggml.tokens has too many tokens");
  if (!spec.token_types.empty() && static_cast<int64_t>(spec.token_types.size()) != n) {
    return Status::Error(where + "tokenizer.ggml.token_type has " +
                         std::to_string(spec.token_types.size()) + " entries for " +
                         std::to_string(n) + " tokens");
  }
  const std::pair<const char*, int32_t> ids[] = {{"bos_token_id", spec.bos},
                                                 {"eos_token_id", spec.eos},
                                                 {"unknown_token_id", spec.unknown},
                                                 {"padding_token_id", spec.padding}};
  for (const auto& [key, id] : ids) {
    if (id < -1 || id >= n) {
      return Status::Error(where + "tokenizer.ggml." + key + " " + std::to_string(id) +
                           " is outside the vocabulary of " + std::to_string(n) + " tokens");
    }
  }

  Tokenizer t;
  if (spec.pre == "gpt2") {
    t.pre_ = Pre::kGpt2;
  } else if (spec.pre == "smollm") {
    t.pre_ = Pre::kDigitsThenGpt2;
  } else {
    return Status::Error(where + "tokenizer.ggml.pre '" + spec.pre +
                         "' is not supported (masktune reads 'gpt2' and 'smollm')");
  }
  t.bos_ = spec.bos;
  t.eos_ = spec.eos;
  t.add_bos_ = spec.add_bos;
  t.types_ = spec.token_types.empty() ? std::vector<int32_t>(n, 1) : spec.token_types;

  std::unordered_map<std::string, int32_t> by_text;
  by_text.reserve(static_cast<size_t>(n));
  t.decoded_.resize(static_cast<size_t>(n));
  for (int32_t id = 0; id < n; ++id) {
    const std::string& text = spec.tokens[id];
    by_text.emplace(text, id);  // a repeated text keeps its first id
    const int32_t type = t.types_[id];
    if (type == kControl || type == kUserDefined) {
      t.decoded_[id] = text;
      if (!text.empty()) {
        t.specials_[static_cast<uint8_t>(text[0])].push_back({text, id, type == kControl});
      }
      continue;
    }
    // Byte characters back to bytes; any other character stays as it is written.
    std::string& out = t.decoded_[id];
    for (size_t pos = 0, len = 0; pos < text.size(); pos += len) {
      const uint32_t cp = DecodeUtf8(text, pos, text.size(), len);
      const int byte = cp == kInvalid ? -1 : CodePointToByte(cp);
      if (byte >= 0) {
        out.push_back(static_cast<char>(byte));
      } else {
        out.append(text, pos, len);
      }
    }
  }
  for (auto& bucket : t.specials_) {
    std::stable_sort(bucket.begin(), bucket.end(), [](const Special& a, const Special& b) {
      return a.text.size() > b.text.size();
    });
  }

  for (int b = 0; b < 256; ++b) {
    std::string ch;
    AppendUtf8(ByteChars()[b], ch);
    auto it = by_text.find(ch);
    t.byte_token_[b] = it == by_text.end() ? -1 : it->second;
  }

  t.merges_.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const std::string& merge = spec.merges[rank];
    auto what = [&] {
      return where + "tokenizer.ggml.merges[" + std::to_string(rank) + "] '" + merge + "'";
    };
    const size_t space = merge.find(' ', 1);
    if (space == std::string::npos || space + 1 >= merge.size()) {
      return Status::Error(what() + ": expected two tokens separated by a space");
    }
    const std::string left = merge.substr(0, space), right = merge.substr(space + 1);
    const auto l = by_text.find(left), r = by_text.find(right), m = by_text.find(left + right);
    if (l == by_text.end() || r == by_text.end() || m == by_text.end()) {
      const std::string missing = l == by_text.end()   ? left
                                  : r == by_text.end() ? right
                                                       : left + right;
      return Status::Error(what() + ": '" + missing + "' is not a token");
    }
    const uint64_t key =
        (static_cast<uint64_t>(l->second) << 32) | static_cast<uint32_t>(r->second);
    t.merges_.emplace(key, Merge{static_cast<int32_t>(rank), m->second});  // first rank wins
  }

  if (t.eos_ >= 0) t.stop_tokens_.push_back(t.eos_);
  if (auto it = by_text.find("<|im_end|>"); it != by_text.end() && it->second != t.eos_) {
    t.stop_tokens_.push_back(it->second);
  }

  if (!spec.chat_template.empty()) {
    if (spec.chat_template.find("<|im_start|>") == std::string::npos) {
      return Status::Error(where +
                           "tokenizer.chat_template is not a ChatML template (no "
                           "'<|im_start|>'); masktune only writes ChatML prompts");
    }
    t.default_system_present_ = FindDefaultSystem(spec.chat_template, t.default_system_);
  }
  return t;
}

Result<Tokenizer> Tokenizer::FromGguf(const GgufFile& file) {
  const std::string& path = file.path();
  MT_ASSIGN_OR_RETURN(const std::string model, file.GetString("tokenizer.ggml.model"));
  if (model != "gpt2") {
    return Status::Error(path + ": tokenizer.ggml.model '" + model +
                         "' is not supported (masktune reads byte-level BPE, 'gpt2')");
  }
  TokenizerSpec spec;
  MT_ASSIGN_OR_RETURN(spec.pre, file.GetString("tokenizer.ggml.pre"));
  MT_ASSIGN_OR_RETURN(const GgufArray* tokens, file.GetArray("tokenizer.ggml.tokens"));
  MT_ASSIGN_OR_RETURN(const GgufArray* merges, file.GetArray("tokenizer.ggml.merges"));
  for (const auto& [key, array] :
       {std::pair{"tokenizer.ggml.tokens", tokens}, std::pair{"tokenizer.ggml.merges", merges}}) {
    if (array->nested || !array->ints.empty() || !array->floats.empty() || !array->bools.empty()) {
      return Status::Error(path + ": " + key + " is not an array of strings");
    }
  }
  spec.tokens = tokens->strings;
  spec.merges = merges->strings;
  if (file.HasKey("tokenizer.ggml.token_type")) {
    MT_ASSIGN_OR_RETURN(const GgufArray* types, file.GetArray("tokenizer.ggml.token_type"));
    spec.token_types.reserve(types->ints.size());
    for (int64_t type : types->ints) spec.token_types.push_back(static_cast<int32_t>(type));
  }
  const std::pair<const char*, int32_t*> ids[] = {
      {"tokenizer.ggml.bos_token_id", &spec.bos},
      {"tokenizer.ggml.eos_token_id", &spec.eos},
      {"tokenizer.ggml.unknown_token_id", &spec.unknown},
      {"tokenizer.ggml.padding_token_id", &spec.padding}};
  for (const auto& [key, id] : ids) {
    if (!file.HasKey(key)) continue;
    MT_ASSIGN_OR_RETURN(const int64_t value, file.GetInt(key));
    if (value < 0 || value >= static_cast<int64_t>(spec.tokens.size())) {
      return Status::Error(path + ": " + key + " " + std::to_string(value) +
                           " is outside the vocabulary of " + std::to_string(spec.tokens.size()) +
                           " tokens");
    }
    *id = static_cast<int32_t>(value);
  }
  if (file.HasKey("tokenizer.ggml.add_bos_token")) {
    const GgufValue& value = file.metadata().at("tokenizer.ggml.add_bos_token");
    if (const bool* b = std::get_if<bool>(&value)) {
      spec.add_bos = *b;
    } else {
      return Status::Error(path + ": tokenizer.ggml.add_bos_token is not a bool");
    }
  }
  if (!file.HasKey("tokenizer.chat_template")) {
    return Status::Error(path +
                         ": tokenizer.chat_template is missing; masktune needs a ChatML "
                         "template");
  }
  MT_ASSIGN_OR_RETURN(spec.chat_template, file.GetString("tokenizer.chat_template"));
  return Build(spec, path);
}

// ----------------------------------------------------------------- encode ----

void Tokenizer::EncodePiece(const std::string& text, size_t begin, size_t end,
                            std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;  // -1: merged into the symbol before it
    int32_t prev, next;
  };
  struct Pair {
    int32_t rank, left, right, left_id, right_id, result;
    // The heap's top is the lowest rank, then the leftmost position.
    bool operator<(const Pair& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::vector<Symbol> symbols;
  symbols.reserve(end - begin);
  for (size_t pos = begin; pos < end; ++pos) {
    const int32_t id = byte_token_[static_cast<uint8_t>(text[pos])];
    if (id < 0) continue;  // a byte without a token is dropped, as tokenizers and llama.cpp do
    const auto i = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, i - 1, i + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;
  const auto count = static_cast<int32_t>(symbols.size());
  std::priority_queue<Pair> heap;
  auto push = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    const uint64_t key =
        (static_cast<uint64_t>(symbols[left].id) << 32) | static_cast<uint32_t>(symbols[right].id);
    auto it = merges_.find(key);
    if (it != merges_.end()) {
      heap.push(
          {it->second.rank, left, right, symbols[left].id, symbols[right].id, it->second.result});
    }
  };
  for (int32_t i = 0; i + 1 < count; ++i) push(i);
  while (!heap.empty()) {
    const Pair p = heap.top();
    heap.pop();
    Symbol& l = symbols[p.left];
    Symbol& r = symbols[p.right];
    if (l.id != p.left_id || r.id != p.right_id || l.next != p.right) continue;  // stale
    l.id = p.result;
    l.next = r.next;
    if (r.next >= 0) symbols[r.next].prev = p.left;
    r.id = -1;
    push(l.prev);
    push(p.left);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

void Tokenizer::EncodeOrdinary(const std::string& text, size_t begin, size_t end,
                               std::vector<int32_t>& out) const {
  std::vector<CodePoint> cps;
  cps.reserve(end - begin);
  for (size_t pos = begin, len = 0; pos < end; pos += len) {
    const uint32_t cp = DecodeUtf8(text, pos, end, len);
    cps.push_back({pos, cp, Classify(cp)});
  }
  auto bytes_end = [&](size_t i) { return i < cps.size() ? cps[i].offset : end; };
  auto emit = [&](size_t first, size_t last) {
    EncodePiece(text, cps[first].offset, bytes_end(last), out);
  };
  if (pre_ == Pre::kGpt2) {
    Gpt2Split(cps, 0, cps.size(), emit);
    return;
  }
  // \p{N} first: each number character alone, the stretches between them split by GPT-2.
  size_t start = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (cps[i].cls != kNumber) continue;
    Gpt2Split(cps, start, i, emit);
    emit(i, i + 1);
    start = i + 1;
  }
  Gpt2Split(cps, start, cps.size(), emit);
}

std::vector<int32_t> Tokenizer::Encode(const std::string& text, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  size_t start = 0;  // of the stretch not yet encoded
  for (size_t pos = 0; pos < text.size();) {
    const Special* found = nullptr;
    for (const Special& s : specials_[static_cast<uint8_t>(text[pos])]) {
      if ((parse_special || !s.control) && text.compare(pos, s.text.size(), s.text) == 0) {
        found = &s;  // the bucket is longest first
        break;
      }
    }
    if (found == nullptr) {
      ++pos;
      continue;
    }
    if (start < pos) EncodeOrdinary(text, start, pos, out);
    out.push_back(found->id);
    pos += found->text.size();
    start = pos;
  }
  if (start < text.size()) EncodeOrdinary(text, start, text.size(), out);
  return out;
}

// ----------------------------------------------------------------- decode ----

std::string Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id >= 0 && id < vocab_size()) out += decoded_[id];
  }
  return out;
}

std::string Tokenizer::TokenText(int32_t id) const {
  return id >= 0 && id < vocab_size() ? decoded_[id] : std::string();
}

int32_t Tokenizer::bos() const { return bos_; }
int32_t Tokenizer::eos() const { return eos_; }
bool Tokenizer::add_bos() const { return add_bos_; }
const std::vector<int32_t>& Tokenizer::stop_tokens() const { return stop_tokens_; }
int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(decoded_.size()); }

// ------------------------------------------------------------------- chat ----

std::string Tokenizer::ApplyChatTemplate(const std::vector<ChatMessage>& messages,
                                         bool add_generation_prompt) const {
  std::string out;
  // As SmolLM2's template: the default system turn comes with the first message.
  if (default_system_present_ && !messages.empty() && messages[0].role != "system") {
    out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
  }
  for (const ChatMessage& m : messages) {
    out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace masktune::model
