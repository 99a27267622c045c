#include "search/tpe.h"

#include <algorithm>
#include <cmath>

#include "engine/random.h"

namespace masktune::search {
namespace {

using configs::ParamSpace;
constexpr int kCandidates = 24;
constexpr uint32_t kPurposeTpe = 1u << 20;

double ToDouble(const FieldValue& v) {
  if (auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  if (auto* d = std::get_if<double>(&v)) return *d;
  return 0.0;
}

bool Categorical(const ParamSpace& s) {
  return s.kind == ParamSpace::Kind::kChoice || s.kind == ParamSpace::Kind::kGridSearch;
}

// The search interval of a numeric space, in the space the density lives in.
std::pair<double, double> Bounds(const ParamSpace& s) {
  if (s.kind == ParamSpace::Kind::kLogUniform) return {std::log(s.lo), std::log(s.hi)};
  return {s.lo, s.hi};
}

double Internal(const ParamSpace& s, const FieldValue& v) {
  const double x = ToDouble(v);
  return s.kind == ParamSpace::Kind::kLogUniform ? std::log(x) : x;
}

FieldValue External(const ParamSpace& s, double x) {
  const auto [lo, hi] = Bounds(s);
  x = std::clamp(x, lo, hi);
  switch (s.kind) {
    case ParamSpace::Kind::kLogUniform:
      return std::exp(x);
    case ParamSpace::Kind::kRandInt:
      return std::clamp(static_cast<int64_t>(std::floor(x)), static_cast<int64_t>(s.lo),
                        static_cast<int64_t>(s.hi) - 1);
    case ParamSpace::Kind::kQUniform:
      return std::clamp(std::round(x / s.q) * s.q, s.lo, s.hi);
    default:
      return x;
  }
}

// A Parzen estimator over [lo, hi]: a prior Gaussian at the centre plus one
// per observation, with Optuna's neighbour-distance bandwidths.
struct Parzen {
  std::vector<double> mu, sigma;
  double lo = 0, hi = 1;

  Parzen(std::vector<double> points, double l, double h) : lo(l), hi(h) {
    const double range = hi - lo;
    points.push_back(0.5 * (lo + hi));  // the prior
    std::vector<size_t> order(points.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return points[a] < points[b]; });
    mu = points;
    sigma.assign(points.size(), range);
    const double min_sigma = range / std::min(100.0, 1.0 + static_cast<double>(points.size()));
    for (size_t k = 0; k < order.size(); ++k) {
      const double left = k > 0 ? points[order[k]] - points[order[k - 1]] : points[order[k]] - lo;
      const double right =
          k + 1 < order.size() ? points[order[k + 1]] - points[order[k]] : hi - points[order[k]];
      sigma[order[k]] = std::clamp(std::max(left, right), min_sigma, range);
    }
    sigma.back() = range;  // the prior stays wide
  }

  double LogDensity(double x) const {
    double sum = 0;
    for (size_t i = 0; i < mu.size(); ++i) {
      const double z = (x - mu[i]) / sigma[i];
      // Truncated to [lo, hi]: normalise each component by its mass inside.
      const double mass = 0.5 * (std::erf((hi - mu[i]) / (sigma[i] * M_SQRT2)) -
                                 std::erf((lo - mu[i]) / (sigma[i] * M_SQRT2)));
      sum += std::exp(-0.5 * z * z) / (sigma[i] * std::sqrt(2 * M_PI) * std::max(mass, 1e-12));
    }
    return std::log(sum / static_cast<double>(mu.size()) + 1e-300);
  }

  double Sample(double u_component, double u1, double u2) const {
    const size_t i = std::min(mu.size() - 1, static_cast<size_t>(u_component * mu.size()));
    const double n = std::sqrt(-2.0 * std::log(std::max(u1, 1e-300))) * std::cos(2 * M_PI * u2);
    return std::clamp(mu[i] + sigma[i] * n, lo, hi);
  }
};

}  // namespace

TrialParams SuggestTpe(const configs::SweepConfig& sweep, const StackPlan& plan, int64_t trial,
                       const std::vector<Observation>& history) {
  const auto n = static_cast<int64_t>(history.size());
  TrialParams out;
  if (n < sweep.search.n_startup_trials) {
    for (size_t p = 0; p < plan.params.size(); ++p) {
      const RandomKey key{static_cast<uint64_t>(sweep.search.seed),
                          static_cast<uint32_t>(plan.index), static_cast<uint32_t>(p)};
      out[plan.params[p].name] =
          DrawFrom(*plan.params[p].space, RandomUniform(key, static_cast<uint64_t>(trial)));
    }
    return out;
  }
  std::vector<const Observation*> sorted;
  for (const auto& o : history) sorted.push_back(&o);
  // Optuna: complete trials by value, then pruned ones by (-step, value).
  std::stable_sort(sorted.begin(), sorted.end(), [](const Observation* a, const Observation* b) {
    if (a->pruned != b->pruned) return !a->pruned;
    if (a->pruned && a->step != b->step) return a->step > b->step;
    return a->objective < b->objective;
  });
  const int64_t n_good =
      std::min<int64_t>(static_cast<int64_t>(std::ceil(0.1 * static_cast<double>(n))), 25);
  for (size_t p = 0; p < plan.params.size(); ++p) {
    const SearchedParam& param = plan.params[p];
    const ParamSpace& space = *param.space;
    const RandomKey key{static_cast<uint64_t>(sweep.search.seed), static_cast<uint32_t>(plan.index),
                        kPurposeTpe + static_cast<uint32_t>(p)};
    auto u = [&](int k, int j) {
      return RandomUniform(key,
                           static_cast<uint64_t>(trial) * 256 + static_cast<uint64_t>(k) * 4 + j);
    };
    if (Categorical(space)) {
      const size_t K = space.values.size();
      std::vector<double> good(K, 1.0), bad(K, 1.0);  // a prior of one observation each
      for (int64_t i = 0; i < n; ++i) {
        const auto it = sorted[i]->params.find(param.name);
        if (it == sorted[i]->params.end()) continue;
        for (size_t c = 0; c < K; ++c)
          if (space.values[c] == it->second) (i < n_good ? good : bad)[c] += 1.0;
      }
      double gs = 0, bs = 0;
      for (size_t c = 0; c < K; ++c) gs += good[c], bs += bad[c];
      size_t best = 0;
      double best_score = -INFINITY;
      for (int k = 0; k < kCandidates; ++k) {
        double r = u(k, 0) * gs;  // a candidate drawn from l
        size_t c = 0;
        while (c + 1 < K && r >= good[c]) r -= good[c++];
        const double score = std::log(good[c] / gs) - std::log(bad[c] / bs);
        if (score > best_score) best_score = score, best = c;
      }
      out[param.name] = space.values[best];
      continue;
    }
    const auto [lo, hi] = Bounds(space);
    std::vector<double> good, bad;
    for (int64_t i = 0; i < n; ++i) {
      const auto it = sorted[i]->params.find(param.name);
      if (it == sorted[i]->params.end()) continue;
      (i < n_good ? good : bad).push_back(Internal(space, it->second));
    }
    const Parzen l(good, lo, hi), g(bad, lo, hi);
    double best_x = 0.5 * (lo + hi), best_score = -INFINITY;
    for (int k = 0; k < kCandidates; ++k) {
      const double x = l.Sample(u(k, 0), u(k, 1), u(k, 2));
      const double score = l.LogDensity(x) - g.LogDensity(x);
      if (score > best_score) best_score = score, best_x = x;
    }
    out[param.name] = External(space, best_x);
  }
  return out;
}

}  // namespace masktune::search
