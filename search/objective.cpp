#include "search/objective.h"

#include <algorithm>
#include <limits>

namespace masktune::search {
namespace {

double Get(const Metrics& m, const std::string& name) {
  auto it = m.find(name);
  return it == m.end() ? std::numeric_limits<double>::quiet_NaN() : it->second;
}

}  // namespace

double ObjectiveValue(const configs::ObjectiveSpec& objective, const Metrics& metrics) {
  const double error = Get(metrics, "error"), density = Get(metrics, "density");
  if (objective.name == "default") return error + 0.1 * density + (density > 0.5 ? 5.0 : 0.0);
  if (objective.name.rfind("sparsity_", 0) == 0) {
    const double target = std::stoi(objective.name.substr(9)) / 100.0;
    return 0.99 * error + 0.01 * density + 10.0 * std::max(0.0, density - target);
  }
  const auto& [name, minimise] = objective.metrics.front();
  const double v = Get(metrics, name);
  return minimise ? v : -v;
}

std::vector<size_t> ParetoFront(const configs::ObjectiveSpec& objective,
                                const std::vector<Metrics>& points) {
  auto oriented = [&](const Metrics& m, size_t k) {
    const auto& [name, minimise] = objective.metrics[k];
    return minimise ? Get(m, name) : -Get(m, name);
  };
  std::vector<size_t> front;
  for (size_t i = 0; i < points.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < points.size() && !dominated; ++j) {
      if (i == j) continue;
      bool no_worse = true, better = false;
      for (size_t k = 0; k < objective.metrics.size(); ++k) {
        const double a = oriented(points[j], k), b = oriented(points[i], k);
        no_worse &= a <= b;
        better |= a < b;
      }
      dominated = no_worse && better;
    }
    if (!dominated) front.push_back(i);
  }
  return front;
}

}  // namespace masktune::search
