// File: engine/benchmarks/ruler_tasks.cpp
//
// RULER's needle-in-a-haystack prompts (NVIDIA/RULER, scripts/data/synthetic/
// niah.py with the task settings of scripts/synthetic.yaml), generated here.
//
// A sample draws its keys and values, formats one needle per (key, value),
// shuffles the needles, picks the queried keys, and places the needles at
// random depths in a haystack whose size is searched for so that the prompt
// fills the token budget. Every draw comes from Philox (engine/random.h) keyed
// by (seed, sample index, task + purpose), so a sample is the same on every
// machine and does not depend on the haystack size.
//
// Differences from RULER, all deliberate:
// - Essay haystack: RULER uses Paul Graham's essays, which we cannot ship.
//   We generate essay-like prose instead: sentences from a bank of a few dozen
//   templates whose slots (nouns, adjectives, people, verbs, topics) Philox
//   fills. As in RULER the essay is one fixed text (the same for every seed and
//   sample), whitespace is single spaces, the haystack is its first N words
//   (the last sentence may be cut), and needles go between sentences.
// - Noise haystack: sized by sentences, not by whole repeats of the five-
//   sentence line (the last line may stop early), so short budgets are filled
//   closely. Needles go between lines, as in RULER.
// - Depth: each needle gets a uniform draw u in [0, 1) and goes to sentence (or
//   line) boundary floor(u * (B + 1)) of B units; RULER samples 40 fixed depths
//   (essay) or distinct line indices (noise, needles). Drawing u once per
//   sample keeps depths stable while the size search varies B.
// - Keys and values of a sample are distinct, and distractor needles never
//   reuse a sample's key or value, so an expected value occurs exactly once.
// - Needles are shuffled per sample (RULER shuffles with its fixed seed).
// - The answer prefix has no leading space (RULER's starts with one, to follow
//   the question on the same line); the caller places it after the chat turn.
// - Size: RULER searches the haystack size once per task and reserves the
//   generated tokens; here each sample's `context + "\n" + question` is fitted
//   to the budget, by interpolation on character counts with bisection as a
//   safeguard (a handful of counter calls).
#include "engine/benchmarks/ruler_tasks.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <iterator>
#include <set>
#include <string_view>

#include "engine/random.h"

namespace masktune::ruler {
namespace {

// RULER's scripts/synthetic.yaml, niah tasks.
const std::vector<TaskSpec>& Specs() {
  using H = Haystack;
  using T = NeedleType;
  static const std::vector<TaskSpec> specs = {
      {"niah_single_1", H::kNoise, T::kWords, T::kNumbers, 1, 1, 1},
      {"niah_single_2", H::kEssay, T::kWords, T::kNumbers, 1, 1, 1},
      {"niah_single_3", H::kEssay, T::kWords, T::kUuids, 1, 1, 1},
      {"niah_multikey_1", H::kEssay, T::kWords, T::kNumbers, 4, 1, 1},
      {"niah_multikey_2", H::kNeedles, T::kWords, T::kNumbers, 1, 1, 1},
      {"niah_multikey_3", H::kNeedles, T::kUuids, T::kUuids, 1, 1, 1},
      {"niah_multivalue", H::kEssay, T::kWords, T::kNumbers, 1, 4, 1},
      {"niah_multiquery", H::kEssay, T::kWords, T::kNumbers, 1, 1, 4},
  };
  return specs;
}

// ---------------------------------------------------------------------------
// Word lists. Keys of type "words" are adjective-noun pairs (RULER pairs
// wonderwords' adjective and noun lists the same way).

constexpr std::string_view kAdjectives[] = {
    "able",    "absent",   "adorable", "agile",   "alert",     "amber",    "ancient",  "angry",
    "annual",  "anxious",  "aquatic",  "arctic",  "ashamed",   "autumn",   "awake",    "bald",
    "bashful", "bent",     "bitter",   "bland",   "blank",     "blissful", "blue",     "bold",
    "bouncy",  "brave",    "breezy",   "brief",   "bright",    "brisk",    "broad",    "broken",
    "bronze",  "bumpy",    "busy",     "calm",    "candid",    "careful",  "cheap",    "cheerful",
    "chilly",  "civic",    "classic",  "clean",   "clever",    "cloudy",   "clumsy",   "coastal",
    "cold",    "colossal", "common",   "cosmic",  "cozy",      "crisp",    "crooked",  "cuddly",
    "curious", "curly",    "damp",     "dapper",  "daring",    "dark",     "dazzling", "deep",
    "dense",   "dim",      "distant",  "dizzy",   "dusty",     "eager",    "early",    "earnest",
    "elated",  "elegant",  "empty",    "endless", "energetic", "equal",    "exotic",   "faded",
    "faint",   "famous",   "fancy",    "fast",    "fearless",  "feisty",   "fierce",   "flat",
    "fluffy",  "foggy",    "fond",     "fragile", "frank",     "free",     "fresh",    "frosty",
    "frozen",  "fuzzy",    "gentle",   "giant",   "gifted",    "glad",     "gleaming", "glossy",
    "golden",  "graceful", "grand",    "gray",    "green",     "grumpy",   "hairy",    "handsome",
    "happy",   "hardy",    "harsh",    "hasty",   "heavy",     "hidden",   "hollow",   "honest",
    "humble",  "hungry",   "icy",      "idle",    "immense",   "jolly",    "joyful",   "juicy",
    "keen",    "kind",     "large",    "late",    "lazy",      "lean",     "little",   "lively",
    "lonely",  "loud",     "lucky",    "lush",    "magic",     "majestic", "mellow",   "merry",
    "mighty",  "misty",    "modern",   "modest",  "muddy",     "narrow",   "neat",     "nimble",
    "noisy",   "odd",      "old",      "orange",  "pale",      "patient",  "plain",    "pleasant",
    "polite",  "proud",    "purple",   "quick",   "quiet",     "rapid",    "rare",     "red",
    "remote",  "rich",     "rigid",    "robust",  "rough",     "round",    "royal",    "rustic",
    "sandy",   "scarlet",  "secret",   "serene",  "shaggy",    "sharp",    "shiny",    "short",
    "silent",  "silky",    "silver",   "simple",  "sleepy",    "slim",     "slow",     "small",
    "smooth",  "snowy",    "soft",     "solid",   "sour",      "spicy",    "steady",   "steep",
    "sticky",  "stormy",   "strong",   "sturdy",  "sunny",     "swift",    "tall",     "tame",
    "tender",  "thick",    "thin",     "tidy",    "tiny",      "tough",    "tranquil", "tropical",
    "upbeat",  "urban",    "vast",     "velvet",  "vivid",     "warm",     "wary",     "wavy",
    "wet",     "whole",    "wide",     "wild",    "windy",     "wise",     "witty",    "wooden",
    "young",   "zany",     "zealous",
};

constexpr std::string_view kNouns[] = {
    "acorn",      "anchor",  "apple",    "apricot", "arch",     "arrow",     "attic",    "badge",
    "bagel",      "balloon", "bamboo",   "banana",  "banner",   "barn",      "basket",   "beach",
    "beacon",     "bean",    "bear",     "beaver",  "bell",     "bench",     "berry",    "bicycle",
    "bird",       "biscuit", "blanket",  "blossom", "boat",     "bonnet",    "book",     "boot",
    "bottle",     "boulder", "bracelet", "branch",  "bread",    "bridge",    "brook",    "brush",
    "bucket",     "buffalo", "butter",   "button",  "cabin",    "cactus",    "cake",     "camel",
    "camera",     "canal",   "candle",   "canoe",   "canyon",   "carpet",    "carrot",   "castle",
    "cat",        "cave",    "cedar",    "cellar",  "chair",    "chalk",     "cherry",   "chimney",
    "circle",     "cliff",   "clock",    "cloud",   "clover",   "coast",     "coconut",  "coffee",
    "comet",      "compass", "cookie",   "copper",  "coral",    "cottage",   "cotton",   "crane",
    "crayon",     "creek",   "cricket",  "crown",   "crystal",  "cup",       "curtain",  "daisy",
    "desert",     "diamond", "dolphin",  "donkey",  "door",     "dragon",    "drum",     "eagle",
    "easel",      "elbow",   "engine",   "falcon",  "feather",  "fence",     "fern",     "ferry",
    "fiddle",     "field",   "fig",      "flag",    "flame",    "flute",     "forest",   "fountain",
    "fox",        "frog",    "galaxy",   "garden",  "garlic",   "gate",      "giraffe",  "glacier",
    "glove",      "goat",    "grape",    "guitar",  "hammer",   "harbor",    "harp",     "hat",
    "hawk",       "hedge",   "helmet",   "hill",    "honey",    "horizon",   "horse",    "island",
    "ivy",        "jacket",  "jar",      "jelly",   "kettle",   "key",       "kite",     "kitten",
    "ladder",     "lagoon",  "lake",     "lamp",    "lantern",  "lemon",     "lens",     "lettuce",
    "lighthouse", "lily",    "lion",     "lizard",  "lobster",  "locket",    "magnet",   "mango",
    "maple",      "marble",  "meadow",   "melon",   "mirror",   "mitten",    "monkey",   "moon",
    "mountain",   "muffin",  "mushroom", "needle",  "nest",     "notebook",  "oak",      "oar",
    "ocean",      "olive",   "onion",    "orchard", "otter",    "owl",       "paddle",   "palace",
    "panda",      "paper",   "parrot",   "peach",   "peanut",   "pear",      "pebble",   "pelican",
    "pencil",     "penguin", "pepper",   "piano",   "pickle",   "pillow",    "pine",     "planet",
    "plum",       "pocket",  "pond",     "poppy",   "potato",   "pumpkin",   "puzzle",   "quill",
    "rabbit",     "raccoon", "radish",   "rainbow", "raven",    "reef",      "ribbon",   "river",
    "robin",      "rocket",  "rose",     "saddle",  "sailboat", "salmon",    "sandal",   "scarf",
    "seal",       "shell",   "shoe",     "shovel",  "sparrow",  "spoon",     "squirrel", "star",
    "statue",     "stone",   "storm",    "straw",   "stream",   "sunflower", "swan",     "table",
    "teapot",     "tiger",   "timber",   "tomato",  "torch",    "tower",     "tractor",  "trail",
    "tree",       "trumpet", "tulip",    "tunnel",  "turtle",   "umbrella",  "valley",   "vase",
    "violin",     "volcano", "wagon",    "walnut",  "walrus",   "whale",     "whistle",  "willow",
    "window",     "wolf",    "yacht",    "zebra",
};

// RULER's noise haystack: these five sentences, repeated, one line per repeat.
constexpr std::string_view kNoise[] = {"The grass is green.", "The sky is blue.",
                                       "The sun is yellow.", "Here we go.",
                                       "There and back again."};

// ---------------------------------------------------------------------------
// The essay bank. Slots: {a} adjective, {n} noun, {s} plural noun, {p} people,
// {v} verb, {t} topic. Every word a slot takes starts with a consonant, so
// "a {a}" and "a {n}" never need "an". No digits or hyphens, so the prose never
// looks like a key or a value.

constexpr std::string_view kEssayTemplates[] = {
    "Most {p} think the hard part is the {n}, but the hard part is usually {t}.",
    "When you {v} something {a}, the first version is almost always worse than you expect.",
    "I used to believe that {t} mattered less than {t}, and I was wrong.",
    "The {a} {s} are rarely the ones that get noticed at first.",
    "If you want to {v} a good {n}, start with a {a} one and improve it.",
    "There is a kind of {t} that only comes from working on {s} you care about.",
    "{p} who {v} {s} for a living tend to learn this early.",
    "It is easy to confuse {t} with {t} when you are young.",
    "A {a} {n} can be worth more than a hundred {a} ones.",
    "The surprising thing about {s} is how {a} they look from the inside.",
    "Nobody plans to waste years on the wrong {n}, yet it happens all the time.",
    "In practice, the best way to {v} a {n} is to talk to the {p} who use it.",
    "What {p} need most is not advice but {t}.",
    "So the question is not whether to {v} the {n}, but when.",
    "Every {a} {n} I know of began as something that looked like a toy.",
    "You can usually tell how much {t} someone has by the {s} they choose.",
    "But {t} is not something you can add at the end.",
    "The {s} that seem {a} today will seem obvious in ten years.",
    "One reason {p} fail is that they {v} too many {s} at once.",
    "This is why {t} tends to compound over time.",
    "Working on a {a} {n} teaches you more than reading about a hundred of them.",
    "The {p} I admire most have a habit of asking {a} questions.",
    "It turns out that {t} is mostly a matter of paying attention.",
    "Few {s} survive contact with real {p} unchanged.",
    "If a {n} is {a}, that is often a sign you are onto something.",
    "Some {p} spend their whole careers trying to {v} the perfect {n}.",
    "The mistake is to treat {t} as a fixed quantity.",
    "Over time, the {a} choice and the {a} choice tend to converge.",
    "There are two ways to {v} a {n}: quickly, or carefully.",
    "Most of what passes for {t} is really just {t} in disguise.",
    "A good test is whether you would still {v} the {n} if nobody were watching.",
    "{p} often underestimate how long it takes to {v} anything {a}.",
    "The place you live quietly shapes the {s} you think are possible.",
    "When I look back, the {a} years were the ones spent on {s}.",
    "Perhaps the best advice is simply to {v} more {s} and worry less.",
    "Ideas about {t} change slowly, and then all at once.",
    "You do not need permission to {v} a {n}.",
    "The {p} who do the best work are usually the ones having the most fun.",
    "It is hard to {v} a {n} well without some {t}.",
    "Even a {a} {n} teaches you something about {t}.",
    "For a long time I assumed {p} cared about {s}, but what they wanted was {t}.",
    "That sounds {a}, and in a sense it is.",
    "The best {s} tend to come from {p} solving their own problems.",
    "Of course, none of this means you should {v} every {n} you see.",
};

constexpr std::string_view kEssayAdjectives[] = {
    "boring",  "bold",    "careful",    "crude",    "deliberate", "difficult",
    "durable", "genuine", "good",       "humble",   "modest",     "narrow",
    "new",     "novel",   "patient",    "polished", "powerful",   "practical",
    "quiet",   "rare",    "rough",      "serious",  "simple",     "small",
    "strange", "subtle",  "surprising", "tedious",  "valuable",   "weird",
};

struct NounForms {
  std::string_view one;
  std::string_view many;
};

constexpr NounForms kEssayNouns[] = {
    {"company", "companies"},    {"problem", "problems"},   {"product", "products"},
    {"project", "projects"},     {"book", "books"},         {"habit", "habits"},
    {"question", "questions"},   {"tool", "tools"},         {"language", "languages"},
    {"painting", "paintings"},   {"city", "cities"},        {"startup", "startups"},
    {"program", "programs"},     {"draft", "drafts"},       {"design", "designs"},
    {"theory", "theories"},      {"market", "markets"},     {"neighborhood", "neighborhoods"},
    {"technique", "techniques"}, {"workshop", "workshops"}, {"notebook", "notebooks"},
    {"mistake", "mistakes"},     {"rule", "rules"},         {"friendship", "friendships"},
    {"lecture", "lectures"},     {"puzzle", "puzzles"},     {"garden", "gardens"},
    {"machine", "machines"},     {"library", "libraries"},  {"recipe", "recipes"},
};

constexpr std::string_view kEssayPeople[] = {
    "founders", "programmers", "investors", "students",   "writers",    "painters",
    "hackers",  "teachers",    "users",     "engineers",  "scientists", "designers",
    "editors",  "customers",   "readers",   "architects",
};

constexpr std::string_view kEssayVerbs[] = {
    "build",   "write", "notice",   "change",  "ignore",   "fix",      "understand",
    "study",   "sell",  "design",   "explain", "finish",   "question", "measure",
    "rewrite", "test",  "simplify", "copy",    "describe", "polish",
};

constexpr std::string_view kEssayTopics[] = {
    "ambition",    "taste",    "curiosity",     "wealth",     "procrastination",
    "persistence", "focus",    "luck",          "discipline", "judgment",
    "originality", "patience", "confidence",    "experience", "imagination",
    "leverage",    "honesty",  "craftsmanship", "attention",  "conviction",
};

// ---------------------------------------------------------------------------
// Randomness.

// What a sample's draws are for; combined with the task's number into the purpose.
enum Purpose : uint32_t { kKeys = 1, kValues, kShuffle, kQueries, kDepths, kDistractors };

// The essay is one text for every seed and sample, as RULER's is: a fixed key.
constexpr RandomKey kEssayKey{0x52554c4552ull /* "RULER" */, 0, 0x45535359u /* "ESSY" */};

// Successive 32-bit Philox words under one key, from counter `first` on.
class Draws {
 public:
  Draws(RandomKey key, uint64_t first) : key_(key), counter_(first) {}

  uint32_t Next() {
    if (used_ == 4) {
      const auto w = RandomWords(key_, counter_++);
      for (int i = 0; i < 4; ++i) block_[i] = w[i];
      used_ = 0;
    }
    return block_[used_++];
  }

  // Uniform in [0, n) for 0 < n <= 2^32 (multiply-shift: bias below n / 2^32).
  uint32_t Below(uint64_t n) { return static_cast<uint32_t>((Next() * n) >> 32); }

  // Uniform in [0, 1) with 53 random bits.
  double Uniform() {
    const uint64_t hi = Next() >> 5;  // 27 bits
    const uint64_t lo = Next() >> 6;  // 26 bits
    return static_cast<double>((hi << 26) | lo) * 0x1.0p-53;
  }

 private:
  RandomKey key_;
  uint64_t counter_;
  std::array<uint32_t, 4> block_{};
  int used_ = 4;
};

template <typename T, size_t N>
const T& Pick(Draws& d, const T (&list)[N]) {
  return list[d.Below(N)];
}

std::string_view TypeName(NeedleType type) {
  switch (type) {
    case NeedleType::kWords:
      return "words";
    case NeedleType::kNumbers:
      return "numbers";
    case NeedleType::kUuids:
      return "uuids";
  }
  return "";
}

// A key or value of `type` (RULER's generate_random).
std::string RandomText(Draws& d, NeedleType type) {
  switch (type) {
    case NeedleType::kWords: {
      std::string word(Pick(d, kAdjectives));
      word += '-';
      word += Pick(d, kNouns);
      return word;
    }
    case NeedleType::kNumbers:  // randint(10^6, 10^7 - 1)
      return std::to_string(1000000 + d.Below(9000000));
    case NeedleType::kUuids: {  // uuid.UUID(int=getrandbits(128), version=4)
      uint32_t w[4] = {d.Next(), d.Next(), d.Next(), d.Next()};
      w[1] = (w[1] & 0xffff0fffu) | 0x00004000u;  // version 4
      w[2] = (w[2] & 0x3fffffffu) | 0x80000000u;  // variant 10xx
      char buf[40];
      std::snprintf(buf, sizeof(buf), "%08x-%04x-%04x-%04x-%04x%08x", unsigned{w[0]},
                    unsigned{w[1] >> 16}, unsigned{w[1] & 0xffffu}, unsigned{w[2] >> 16},
                    unsigned{w[2] & 0xffffu}, unsigned{w[3]});
      return buf;
    }
  }
  return "";
}

std::string Needle(std::string_view type_v, const std::string& key, const std::string& value) {
  std::string s = "One of the special magic ";
  s += type_v;
  s += " for " + key + " is: " + value + ".";
  return s;
}

// Sentence `j` of the essay.
std::string EssaySentence(uint64_t j) {
  Draws d(kEssayKey, j << 8);
  const std::string_view t = Pick(d, kEssayTemplates);
  std::string out;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '{' && i + 2 < t.size() && t[i + 2] == '}') {
      switch (t[i + 1]) {
        case 'a':
          out += Pick(d, kEssayAdjectives);
          break;
        case 'n':
          out += Pick(d, kEssayNouns).one;
          break;
        case 's':
          out += Pick(d, kEssayNouns).many;
          break;
        case 'p':
          out += Pick(d, kEssayPeople);
          break;
        case 'v':
          out += Pick(d, kEssayVerbs);
          break;
        case 't':
          out += Pick(d, kEssayTopics);
          break;
      }
      i += 2;
    } else {
      out += t[i];
    }
  }
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 32);
  return out;
}

// ---------------------------------------------------------------------------
// A sample apart from its haystack size.

struct Plan {
  TaskSpec spec;
  std::string type_v;                // "numbers", ...: the needles' wording
  std::vector<std::string> needles;  // in the order they appear
  std::vector<double> depths;        // ascending, one per needle, in [0, 1)
  std::set<std::string> taken;       // the sample's keys and values
  RandomKey distractor_key;
  std::string intro, question, answer_prefix;
  std::vector<std::string> expected;
};

Plan MakePlan(const TaskSpec& spec, uint32_t task_number, uint64_t seed, uint32_t index) {
  const auto key = [&](Purpose p) { return RandomKey{seed, index, ((task_number + 1) << 8) | p}; };
  Plan plan;
  plan.spec = spec;
  plan.type_v = TypeName(spec.value_type);
  plan.distractor_key = key(kDistractors);
  // A key or value not yet in the sample.
  const auto fresh = [&](Draws& d, NeedleType type) {
    for (;;) {
      std::string s = RandomText(d, type);
      if (plan.taken.insert(s).second) return s;
    }
  };

  // Keys, values and needles (RULER: num_needle_k = max(num_needle_k, num_needle_q)).
  const int num_keys = std::max(spec.num_keys, spec.num_queries);
  Draws key_draws(key(kKeys), 0), value_draws(key(kValues), 0);
  std::vector<std::string> keys;
  std::vector<std::vector<std::string>> values;
  for (int k = 0; k < num_keys; ++k) {
    keys.push_back(fresh(key_draws, spec.key_type));
    values.emplace_back();
    for (int v = 0; v < spec.num_values; ++v) {
      values.back().push_back(fresh(value_draws, spec.value_type));
      plan.needles.push_back(Needle(plan.type_v, keys.back(), values.back().back()));
    }
  }
  Draws shuffle(key(kShuffle), 0);
  for (size_t i = plan.needles.size(); i-- > 1;)
    std::swap(plan.needles[i], plan.needles[shuffle.Below(i + 1)]);
  Draws depth_draws(key(kDepths), 0);
  for (size_t i = 0; i < plan.needles.size(); ++i) plan.depths.push_back(depth_draws.Uniform());
  std::sort(plan.depths.begin(), plan.depths.end());

  // Queried keys: the first num_queries of a random order of the keys.
  std::vector<int> order(static_cast<size_t>(num_keys));
  for (int k = 0; k < num_keys; ++k) order[k] = k;
  Draws query_draws(key(kQueries), 0);
  std::string query;
  for (int q = 0; q < spec.num_queries; ++q) {
    std::swap(order[q], order[q + query_draws.Below(static_cast<uint64_t>(num_keys - q))]);
    const int k = order[q];
    if (q > 0) query += q + 1 == spec.num_queries ? ", and " : ", ";
    query += keys[k];
    for (const auto& v : values[k]) plan.expected.push_back(v);
  }

  // RULER's template, made singular when one value is asked for.
  const bool singular = spec.num_queries * spec.num_values == 1;
  const std::string v = singular ? plan.type_v.substr(0, plan.type_v.size() - 1) : plan.type_v;
  plan.intro = (singular ? "A special magic " + v + " is" : "Some special magic " + v + " are") +
               " hidden within the following text. Make sure to memorize it. I will quiz you "
               "about the " +
               v + " afterwards.";
  plan.question = (singular ? "What is the special magic " : "What are all the special magic ") +
                  v + " for " + query + " mentioned in the provided text?";
  plan.answer_prefix = "The special magic " + v + " for " + query +
                       " mentioned in the provided text " + (singular ? "is" : "are");
  return plan;
}

// ---------------------------------------------------------------------------
// The haystack: a stream of units (noise sentences, essay words or distractor
// needle lines) generated on demand, with running character counts.

class HaystackText {
 public:
  explicit HaystackText(const Plan& plan) : plan_(plan) {}

  // Characters of the first n units with a separator each: a guide for the size search.
  int64_t Chars(int64_t n) {
    Extend(n);
    return cum_[static_cast<size_t>(n)];
  }

  // The largest n with Chars(n) <= chars.
  int64_t UnitsWithin(double chars) {
    if (chars < 0) return 0;
    while (static_cast<double>(cum_.back()) <= chars) Extend(Size() + 1);
    const auto it = std::upper_bound(cum_.begin(), cum_.end(), chars, [](double c, int64_t x) {
      return c < static_cast<double>(x);
    });
    return static_cast<int64_t>(it - cum_.begin()) - 1;
  }

  // The first n units with the needles inserted at their depths.
  std::string Render(int64_t n) {
    Extend(n);
    std::vector<std::string> blocks;  // lines (noise, needles) or sentences (essay)
    std::string_view sep = "\n";
    switch (plan_.spec.haystack) {
      case Haystack::kNoise:
        for (int64_t i = 0; i < n; i += 5) {
          blocks.emplace_back();
          for (int64_t j = i; j < std::min(n, i + 5); ++j)
            blocks.back() += (j > i ? " " : "") + units_[static_cast<size_t>(j)];
        }
        break;
      case Haystack::kNeedles:
        blocks.assign(units_.begin(), units_.begin() + n);
        break;
      case Haystack::kEssay:
        sep = " ";
        for (int64_t i = 0; i < n; ++i) {
          if (i == 0 || ends_sentence_[static_cast<size_t>(i - 1)]) blocks.emplace_back();
          if (!blocks.back().empty()) blocks.back() += ' ';
          blocks.back() += units_[static_cast<size_t>(i)];
        }
        break;
    }
    // Needle j goes to boundary floor(depth_j * (B + 1)) of the B blocks.
    const size_t num_blocks = blocks.size();
    std::string out;
    const auto add = [&](const std::string& s) {
      if (!out.empty()) out += sep;
      out += s;
    };
    size_t j = 0;
    for (size_t b = 0; b <= num_blocks; ++b) {
      while (j < plan_.needles.size() &&
             std::min(num_blocks, static_cast<size_t>(plan_.depths[j] *
                                                      static_cast<double>(num_blocks + 1))) == b)
        add(plan_.needles[j++]);
      if (b < num_blocks) add(blocks[b]);
    }
    return out;
  }

 private:
  int64_t Size() const { return static_cast<int64_t>(units_.size()); }

  void Push(std::string unit, bool ends_sentence) {
    cum_.push_back(cum_.back() + static_cast<int64_t>(unit.size()) + 1);
    units_.push_back(std::move(unit));
    ends_sentence_.push_back(ends_sentence);
  }

  // Generates units until there are at least n.
  void Extend(int64_t n) {
    while (Size() < n) {
      const uint64_t i = static_cast<uint64_t>(Size());
      switch (plan_.spec.haystack) {
        case Haystack::kNoise:
          Push(std::string(kNoise[i % std::size(kNoise)]), true);
          break;
        case Haystack::kNeedles: {
          // Distractor i: a key and a value that are not the sample's.
          Draws d(plan_.distractor_key, i << 20);
          std::string k, v;
          do k = RandomText(d, plan_.spec.key_type);
          while (plan_.taken.count(k));
          do v = RandomText(d, plan_.spec.value_type);
          while (plan_.taken.count(v));
          Push(Needle(plan_.type_v, k, v), true);
          break;
        }
        case Haystack::kEssay: {
          const std::string sentence = EssaySentence(essay_sentences_++);
          size_t start = 0;
          while (start < sentence.size()) {
            size_t end = sentence.find(' ', start);
            if (end == std::string::npos) end = sentence.size();
            Push(sentence.substr(start, end - start), end == sentence.size());
            start = end + 1;
          }
          break;
        }
      }
    }
  }

  const Plan& plan_;
  std::vector<std::string> units_;
  std::vector<bool> ends_sentence_;  // essay: the unit (a word) ends a sentence
  std::vector<int64_t> cum_{0};      // cum_[n]: Chars(n)
  uint64_t essay_sentences_ = 0;
};

std::string Join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

}  // namespace

const std::vector<std::string>& TaskNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& spec : Specs()) n.push_back(spec.name);
    return n;
  }();
  return names;
}

Result<TaskSpec> FindTask(const std::string& task) {
  for (const auto& spec : Specs())
    if (spec.name == task) return spec;
  return Status::Error("ruler: unknown task '" + task + "' (valid: " + Join(TaskNames()) + ")");
}

Result<Sample> Generate(const std::string& task, int64_t context_tokens, uint64_t seed,
                        int64_t index, const TokenCounter& count) {
  MT_ASSIGN_OR_RETURN(const TaskSpec spec, FindTask(task));
  if (index < 0 || index > int64_t{UINT32_MAX})
    return Status::Error("ruler: " + task + ": sample index " + std::to_string(index) +
                         " is out of range [0, " + std::to_string(UINT32_MAX) + "]");
  if (!count) return Status::Error("ruler: " + task + ": no token counter");
  const auto task_number = static_cast<uint32_t>(
      std::find(TaskNames().begin(), TaskNames().end(), task) - TaskNames().begin());
  const Plan plan = MakePlan(spec, task_number, seed, static_cast<uint32_t>(index));
  HaystackText hay(plan);
  const auto context = [&](int64_t n) { return plan.intro + "\n" + hay.Render(n); };
  const auto measure = [&](int64_t n) { return count(context(n) + "\n" + plan.question); };

  // The largest haystack whose prompt fits. Only measured sizes are kept, so the
  // result fits even where counts do not grow with the size.
  const int64_t f0 = measure(0);
  if (f0 > context_tokens)
    return Status::Error("ruler: " + task + ": context_tokens " + std::to_string(context_tokens) +
                         " is too small: the instruction, needles and question alone take " +
                         std::to_string(f0) + " tokens");
  const double budget = static_cast<double>(context_tokens);
  const double base = static_cast<double>(context(0).size() + 1 + plan.question.size());
  const auto chars = [&](int64_t n) { return base + static_cast<double>(hay.Chars(n)); };
  // Whatever the counter, the haystack stops at 64 characters per token of budget.
  const double max_chars = 64.0 * budget + 65536.0;
  const auto units_within = [&](double c) {
    return hay.UnitsWithin(std::min(c, max_chars) - base);
  };

  // Extrapolate (tokens per character) until a size does not fit, then interpolate
  // between the sizes that fit and do not, bisecting after a step that did not halve
  // the interval.
  int64_t lo = 0, hi = -1;  // lo fits; hi, once found, does not
  double f_lo = static_cast<double>(f0), f_hi = 0;
  double slope = f0 > 0 ? static_cast<double>(f0) / base : 0.25;
  bool bisect = false;
  int fits_in_row = 0;
  while (hi < 0 || hi - lo > 1) {
    int64_t guess;
    if (hi < 0) {
      guess = units_within(chars(lo) + (budget - f_lo) / slope);
      if (fits_in_row >= 3) guess = std::max(guess, std::min(2 * lo, units_within(max_chars)));
      if (guess <= lo) {
        if (chars(lo + 1) > max_chars) break;
        guess = lo + 1;
      }
    } else if (bisect) {
      guess = lo + (hi - lo) / 2;
    } else {
      const double c_lo = chars(lo), c_hi = chars(hi);
      guess = std::clamp(units_within(c_lo + (budget - f_lo) * (c_hi - c_lo) / (f_hi - f_lo)),
                         lo + 1, hi - 1);
    }
    const double f = static_cast<double>(measure(guess));
    const bool was_bracketed = hi >= 0, did_bisect = bisect;
    const int64_t width = hi - lo;
    if (f <= budget) {
      lo = guess;
      f_lo = f;
      ++fits_in_row;
      if (f > static_cast<double>(f0)) slope = (f - static_cast<double>(f0)) / (chars(lo) - base);
    } else {
      hi = guess;
      f_hi = f;
      fits_in_row = 0;
    }
    bisect = was_bracketed && !did_bisect && 2 * (hi - lo) > width;
  }

  Sample sample;
  sample.task = task;
  sample.context = context(lo);
  sample.question = plan.question;
  sample.answer_prefix = plan.answer_prefix;
  sample.expected = plan.expected;
  return sample;
}

double Score(const std::string& answer, const std::vector<std::string>& expected) {
  if (expected.empty()) return 0.0;
  const auto lower = [](std::string s) {
    for (char& c : s)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    return s;
  };
  const std::string a = lower(answer);
  int found = 0;
  for (const auto& e : expected) found += a.find(lower(e)) != std::string::npos;
  return static_cast<double>(found) / static_cast<double>(expected.size());
}

}  // namespace masktune::ruler
