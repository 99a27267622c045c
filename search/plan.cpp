#include "search/plan.h"

#include <cmath>
#include <cstdint>

#include "engine/random.h"

namespace masktune::search {

using configs::ParamSpace;

std::vector<StackPlan> PlanSweep(const configs::SweepConfig& sweep) {
  std::vector<StackPlan> plans;
  for (size_t s = 0; s < sweep.stacks.size(); ++s) {
    const configs::StackSpec& stack = sweep.stacks[s];
    StackPlan plan;
    plan.stack = &stack;
    plan.index = s;
    std::map<std::string, int> type_count;
    for (const auto& m : stack.maskers) ++type_count[m.type];
    for (size_t i = 0; i < stack.maskers.size(); ++i) {
      const configs::MaskerEntry& m = stack.maskers[i];
      const std::string prefix = type_count[m.type] > 1 ? m.type + "#" + std::to_string(i) : m.type;
      for (const auto& [field, space] : m.fields) {
        if (!space.searched()) continue;
        plan.params.push_back({prefix + "." + field, i, field, &space});
        if (space.kind == ParamSpace::Kind::kGridSearch) {
          const auto n = static_cast<int64_t>(space.values.size());
          plan.grid_points = plan.grid_points > INT64_MAX / n ? INT64_MAX : plan.grid_points * n;
        }
      }
    }
    // TPE treats grid_search fields as categorical: num_samples trials in all.
    // A stack that searches nothing runs once. Overflow saturates; ParseSweep
    // refuses such plans (configs::CheckTrialCap).
    plan.trials = configs::StackTrials(stack, sweep.search);
    plans.push_back(std::move(plan));
  }
  return plans;
}

std::string ParamsToJson(const TrialParams& params) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, value] : params) j[name] = FieldValueToJson(value);
  return j.dump();
}

Result<TrialParams> ParamsFromJson(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return Status::Error("stored parameters are not a JSON object: " + text);
  TrialParams out;
  for (const auto& [name, v] : j.items()) {
    auto value = FieldValueFromJson(v);
    if (!value.ok()) return value.status().WithContext("stored parameter '" + name + "': ");
    out[name] = std::move(value).value();
  }
  return out;
}

FieldValue DrawFrom(const ParamSpace& space, double u) {
  switch (space.kind) {
    case ParamSpace::Kind::kConstant:
      return space.values[0];
    case ParamSpace::Kind::kGridSearch:
    case ParamSpace::Kind::kChoice: {
      const size_t n = space.values.size();
      return space.values[std::min(n - 1, static_cast<size_t>(u * static_cast<double>(n)))];
    }
    case ParamSpace::Kind::kUniform:
      return space.lo + u * (space.hi - space.lo);
    case ParamSpace::Kind::kLogUniform:
      return std::exp(std::log(space.lo) + u * (std::log(space.hi) - std::log(space.lo)));
    case ParamSpace::Kind::kRandInt: {
      const auto lo = static_cast<int64_t>(space.lo), hi = static_cast<int64_t>(space.hi);
      return std::min(hi - 1, lo + static_cast<int64_t>(u * static_cast<double>(hi - lo)));
    }
    case ParamSpace::Kind::kQUniform: {
      // Ray Tune: round(uniform(lo, hi) / q) * q.
      const double x = std::round((space.lo + u * (space.hi - space.lo)) / space.q) * space.q;
      return std::clamp(x, space.lo, space.hi);
    }
  }
  return space.values.empty() ? FieldValue{} : space.values[0];
}

TrialParams SampleBasic(const configs::SweepConfig& sweep, const StackPlan& plan, int64_t trial) {
  TrialParams out;
  int64_t grid_index = trial % plan.grid_points;
  // The last grid field varies fastest.
  for (auto it = plan.params.rbegin(); it != plan.params.rend(); ++it) {
    if (it->space->kind != ParamSpace::Kind::kGridSearch) continue;
    const auto n = static_cast<int64_t>(it->space->values.size());
    out[it->name] = it->space->values[static_cast<size_t>(grid_index % n)];
    grid_index /= n;
  }
  for (size_t p = 0; p < plan.params.size(); ++p) {
    const SearchedParam& param = plan.params[p];
    if (param.space->kind == ParamSpace::Kind::kGridSearch) continue;
    const RandomKey key{static_cast<uint64_t>(sweep.search.seed), static_cast<uint32_t>(plan.index),
                        static_cast<uint32_t>(p)};
    out[param.name] = DrawFrom(*param.space, RandomUniform(key, static_cast<uint64_t>(trial)));
  }
  return out;
}

Result<std::vector<MaskerConfig>> Materialize(const MaskerRegistry& registry, const StackPlan& plan,
                                              const TrialParams& params) {
  std::vector<MaskerConfig> configs;
  for (size_t i = 0; i < plan.stack->maskers.size(); ++i) {
    const configs::MaskerEntry& m = plan.stack->maskers[i];
    std::map<std::string, FieldValue> values;
    for (const auto& [field, space] : m.fields)
      values[field] = space.values.empty() ? FieldValue{} : space.values[0];
    for (const SearchedParam& p : plan.params)
      if (p.masker == i) values[p.field] = params.at(p.name);
    auto config = registry.Validate(m.type, values, "");
    if (!config.ok())
      return config.status().WithContext(m.where.ToString() + ": attention." + plan.stack->name +
                                         "[" + std::to_string(i) + "] (" + m.type + "): ");
    configs.push_back(std::move(config).value());
  }
  return configs;
}

}  // namespace masktune::search
