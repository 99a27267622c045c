#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "search/objective.h"
#include "search/plan.h"
#include "search/tpe.h"

namespace masktune::search {
namespace {

configs::SweepConfig Parse(const std::string& yaml) {
  auto r = configs::ParseSweep(yaml, "s.yaml", MaskerRegistry::WithBuiltins());
  REQUIRE_MESSAGE(r.ok(), r.status().message());
  return std::move(r).value();
}

const char* kSweep = R"(study: s
benchmark: {name: noop}
search: {algorithm: random, num_samples: 3, seed: 5}
attention:
  a:
    - sink: {sink_size: {grid_search: [4, 8]}}
    - quest_top_k:
        heavy_size: {uniform: [0.05, 0.25]}
        page_size: {grid_search: [16, 32, 64]}
        label_bits: {randint: [2, 9]}
  b:
    - oracle_top_k: {heavy_size: {loguniform: [0.001, 0.1]}}
    - oracle_top_p: {top_p: {quniform: [0.5, 0.9, 0.1]}}
)";

TEST_CASE("grid fields are crossed and repeated num_samples times") {
  const auto sweep = Parse(kSweep);
  const auto plans = PlanSweep(sweep);
  REQUIRE(plans.size() == 2);
  CHECK(plans[0].grid_points == 6);
  CHECK(plans[0].trials == 18);
  CHECK(plans[1].trials == 3);
  std::map<std::pair<int64_t, int64_t>, int> seen;
  for (int64_t t = 0; t < plans[0].trials; ++t) {
    const TrialParams p = SampleBasic(sweep, plans[0], t);
    ++seen[{std::get<int64_t>(p.at("sink.sink_size")),
            std::get<int64_t>(p.at("quest_top_k.page_size"))}];
  }
  CHECK(seen.size() == 6);                                    // every combination ...
  for (const auto& [combo, count] : seen) CHECK(count == 3);  // ... once per sample
  // The first grid field varies slowest.
  CHECK(std::get<int64_t>(SampleBasic(sweep, plans[0], 0).at("sink.sink_size")) == 4);
  CHECK(std::get<int64_t>(SampleBasic(sweep, plans[0], 2).at("sink.sink_size")) == 4);
  CHECK(std::get<int64_t>(SampleBasic(sweep, plans[0], 3).at("sink.sink_size")) == 8);
  CHECK(std::get<int64_t>(SampleBasic(sweep, plans[0], 1).at("quest_top_k.page_size")) == 32);
}

TEST_CASE("random draws stay in their spaces and repeat with the seed") {
  auto sweep = Parse(kSweep);
  const auto plans = PlanSweep(sweep);
  std::set<double> distinct;
  std::set<int64_t> bits;
  for (int64_t t = 0; t < 400; ++t) {
    const TrialParams p = SampleBasic(sweep, plans[0], t);
    const double h = std::get<double>(p.at("quest_top_k.heavy_size"));
    CHECK(h >= 0.05);
    CHECK(h < 0.25);
    distinct.insert(h);
    const int64_t b = std::get<int64_t>(p.at("quest_top_k.label_bits"));
    CHECK(b >= 2);
    CHECK(b <= 8);  // randint's upper bound is exclusive
    bits.insert(b);
    const TrialParams q = SampleBasic(sweep, plans[1], t);
    const double lk = std::get<double>(q.at("oracle_top_k.heavy_size"));
    CHECK(lk >= 0.001);
    CHECK(lk < 0.1);
    const double tp = std::get<double>(q.at("oracle_top_p.top_p"));
    CHECK(std::fabs(tp * 10 - std::round(tp * 10)) < 1e-9);  // multiples of q = 0.1
    CHECK(tp >= 0.5);
    CHECK(tp <= 0.9);
    // Materialised configs pass the registry.
    CHECK(Materialize(MaskerRegistry::WithBuiltins(), plans[1], q).ok());
  }
  CHECK(distinct.size() == 400);
  CHECK(bits.size() == 7);
  // Same seed, same sequence; another seed, another one.
  const TrialParams first = SampleBasic(sweep, plans[0], 7);
  CHECK(SampleBasic(sweep, plans[0], 7) == first);
  sweep.search.seed = 6;
  CHECK_FALSE(SampleBasic(sweep, plans[0], 7) == first);
  // Loguniform: about as many draws per decade.
  int low = 0;
  for (int64_t t = 0; t < 1000; ++t)
    low += std::get<double>(SampleBasic(sweep, plans[1], t).at("oracle_top_k.heavy_size")) < 0.01;
  CHECK(low > 420);
  CHECK(low < 580);
}

TEST_CASE("materialised configs carry the constants and the drawn values") {
  const auto sweep = Parse(kSweep);
  const auto plans = PlanSweep(sweep);
  const TrialParams p = SampleBasic(sweep, plans[0], 4);
  auto configs = Materialize(MaskerRegistry::WithBuiltins(), plans[0], p);
  REQUIRE(configs.ok());
  REQUIRE(configs->size() == 2);
  CHECK((*configs)[0].Int("sink_size") == std::get<int64_t>(p.at("sink.sink_size")));
  CHECK((*configs)[1].Float("heavy_size") == std::get<double>(p.at("quest_top_k.heavy_size")));
  CHECK((*configs)[1].Int("page_size") == std::get<int64_t>(p.at("quest_top_k.page_size")));
}

TEST_CASE("every shipped example's trials become buildable stacks, through the stored JSON") {
  // What a worker does with a trial: parameters as stored, read back, materialised, built.
  const MaskerRegistry registry = MaskerRegistry::WithBuiltins();
  const auto dir = std::filesystem::path(MASKTUNE_SOURCE_DIR) / "configs" / "examples";
  int stacks = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;  // data/ holds their side files
    CAPTURE(entry.path().string());
    auto sweep = configs::LoadSweep(entry.path().string(), registry);
    REQUIRE_MESSAGE(sweep.ok(), sweep.status().message());
    for (const auto& plan : PlanSweep(sweep.value())) {
      auto params = ParamsFromJson(ParamsToJson(SampleBasic(sweep.value(), plan, 0)));
      REQUIRE(params.ok());
      auto configs = Materialize(registry, plan, params.value());
      REQUIRE_MESSAGE(configs.ok(), configs.status().message());
      auto stack = MaskerStack::Build(registry, configs.value());
      CHECK_MESSAGE(stack.ok(), stack.status().message());
      ++stacks;
    }
  }
  CHECK(stacks >= 10);
}

// A known landscape: a narrow valley at x = 0.137 (log scale for y) with a
// categorical that matters.
double Landscape(const TrialParams& p) {
  const double x = std::get<double>(p.at("oracle_top_k.heavy_size"));
  const double y = std::get<double>(p.at("oracle_top_p.top_p"));
  const int64_t c = std::get<int64_t>(p.at("quest_top_k.page_size"));
  return std::pow((x - 0.137) * 10, 2) + std::pow(std::log10(y / 0.02), 2) + (c == 32 ? 0 : 1);
}

double BestAfter(const std::string& algorithm, int64_t seed, int trials) {
  const std::string yaml =
      "study: t\nbenchmark: {name: noop}\nsearch: {algorithm: " + algorithm +
      ", num_samples: " + std::to_string(trials) + ", seed: " + std::to_string(seed) +
      ", n_startup_trials: 10}\nattention:\n  a:\n"
      "    - oracle_top_k: {heavy_size: {uniform: [0.01, 0.9]}}\n"
      "    - oracle_top_p: {top_p: {loguniform: [0.001, 1.0]}}\n"
      "    - quest_top_k: {heavy_size: 8, page_size: {choice: [8, 16, 32, 64]}}\n";
  const auto sweep = Parse(yaml);
  const auto plans = PlanSweep(sweep);
  std::vector<Observation> history;
  double best = INFINITY;
  for (int t = 0; t < trials; ++t) {
    const TrialParams p = algorithm == "tpe" ? SuggestTpe(sweep, plans[0], t, history)
                                             : SampleBasic(sweep, plans[0], t);
    const double v = Landscape(p);
    best = std::min(best, v);
    history.push_back({p, v});
  }
  return best;
}

TEST_CASE("TPE beats random search on a known objective over fixed seeds") {
  double tpe = 0, random = 0;
  int tpe_wins = 0;
  for (int64_t seed = 1; seed <= 8; ++seed) {
    const double a = BestAfter("tpe", seed, 60), b = BestAfter("random", seed, 60);
    tpe += a;
    random += b;
    tpe_wins += a < b;
  }
  MESSAGE("mean best after 60 trials: tpe " << tpe / 8 << ", random " << random / 8);
  CHECK(tpe < 0.5 * random);
  CHECK(tpe_wins >= 6);
  // Deterministic for a given history.
  CHECK(BestAfter("tpe", 3, 30) == BestAfter("tpe", 3, 30));
}

TEST_CASE("stored parameters round-trip, floats stay floats, damage is an error") {
  const TrialParams p = {
      {"a.size", 1.0}, {"b.count", int64_t{2}}, {"c.mode", std::string("x")}, {"d.on", true}};
  auto back = ParamsFromJson(ParamsToJson(p));
  REQUIRE(back.ok());
  CHECK(back.value() == p);
  CHECK(std::holds_alternative<double>(back.value().at("a.size")));
  CHECK_FALSE(ParamsFromJson("[1]").ok());
  CHECK(ParamsFromJson(R"({"a": null})").status().message() ==
        "stored parameter 'a': expected a number, bool or string, found null");
}

TEST_CASE("objective formulas of the reference runner") {
  configs::ObjectiveSpec o;
  o.name = "default";
  CHECK(ObjectiveValue(o, {{"error", 0.2}, {"density", 0.1}}) == doctest::Approx(0.21));
  CHECK(ObjectiveValue(o, {{"error", 0.2}, {"density", 0.6}}) == doctest::Approx(5.26));
  CHECK(ObjectiveValue(o, {{"error", 0.2}, {"density", 0.5}}) == doctest::Approx(0.25));
  o.name = "sparsity_10";
  CHECK(ObjectiveValue(o, {{"error", 0.3}, {"density", 0.05}}) == doctest::Approx(0.2975));
  CHECK(ObjectiveValue(o, {{"error", 0.3}, {"density", 0.15}}) == doctest::Approx(0.7985));
  o.name = "sparsity_25";
  CHECK(ObjectiveValue(o, {{"error", 0.1}, {"density", 0.3}}) == doctest::Approx(0.602));
  o.name = "recall";
  o.metrics = {{"recall", false}};
  CHECK(ObjectiveValue(o, {{"recall", 0.9}}) == -0.9);  // maximised: lower is better negated
}

TEST_CASE("the Pareto front keeps the points nothing dominates") {
  configs::ObjectiveSpec o;
  o.metrics = {{"error", true}, {"density", true}};
  const std::vector<Metrics> pts = {{{"error", 0.1}, {"density", 0.5}},
                                    {{"error", 0.2}, {"density", 0.2}},
                                    {{"error", 0.3}, {"density", 0.3}},  // dominated by 1
                                    {{"error", 0.5}, {"density", 0.05}},
                                    {{"error", 0.1}, {"density", 0.6}}};  // dominated by 0
  CHECK(ParetoFront(o, pts) == std::vector<size_t>{0, 1, 3});
}

}  // namespace
}  // namespace masktune::search
