// attention_error: masker stacks on attention tensors; density, error and the
// recall of the dense top mass. Synthetic inputs carry the traits of real
// attention; or q, k, v come from safetensors files captured from a model.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

#include "engine/attention.h"
#include "engine/backend.h"
#include "engine/benchmarks/benchmark.h"
#include "engine/benchmarks/synthetic.h"
#include "engine/cuda/cuda_attention.h"
#include "engine/random.h"
#include "engine/safetensors.h"

namespace masktune {
namespace {

// Share of the dense attention mass whose keys the recall metric asks for.
constexpr double kTopMass = 0.9;

// An attention sample (q, k, v, mask, scaling: synthetic.h's) and what is
// computed from it once per worker.
struct Sample : AttentionSample {
  Tensor dense_out;                            // computed once per worker
  std::vector<std::vector<int32_t>> top_mass;  // per row: keys holding kTopMass of the dense mass
};

// One synthetic sample: the generator of engine/benchmarks/synthetic.h.
Sample Synthesize(const nlohmann::json& s, int64_t index) {
  Sample out;
  static_cast<AttentionSample&>(out) = SynthesizeAttention(s, index);
  return out;
}

// Keys holding kTopMass of each row's dense attention mass.
std::vector<std::vector<int32_t>> TopMass(const AttentionInputs& in) {
  const int64_t N = in.num_keys(), H = in.heads(), Q = in.num_queries(), g = in.group();
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(in.batch() * H * Q));
  for (int64_t b = 0; b < in.batch(); ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Q; ++i) {
        std::vector<std::pair<double, int32_t>> w(static_cast<size_t>(N));
        double mx = -INFINITY;
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t d = 0; d < in.head_dim(); ++d)
            s += static_cast<double>(in.query(b, h, i)[d]) * in.key(b, h / g, j)[d];
          s = s * in.scaling + (in.attention_mask ? in.mask_row(b, i)[j] : 0.0);
          w[j] = {s, static_cast<int32_t>(j)};
          mx = std::max(mx, s);
        }
        double total = 0;
        for (auto& [s, j] : w) total += (s = std::exp(s - mx));
        std::sort(w.begin(), w.end(), [](auto& a, auto& c) { return a.first > c.first; });
        auto& keys = out[(b * H + h) * Q + i];
        double acc = 0;
        for (auto& [s, j] : w) {
          if (acc >= kTopMass * total) break;
          acc += s;
          keys.push_back(j);
        }
      }
  return out;
}

class AttentionErrorBenchmark : public Benchmark {
 public:
  // `resident`: each sample's inputs on the backend, uploaded once (they
  // point into `samples`, which must not move afterwards).
  AttentionErrorBenchmark(std::vector<Sample> samples, std::unique_ptr<Backend> backend,
                          std::vector<std::unique_ptr<BackendInputs>> resident)
      : samples_(std::move(samples)),
        backend_(std::move(backend)),
        resident_(std::move(resident)) {}

  // The dense reference (on the CPU, whatever the backend) and the top mass.
  static void Prepare(Sample& s) {
    s.dense_out = DenseAttention(s.Inputs());
    s.top_mass = TopMass(s.Inputs());
  }

  Result<Metrics> Run(const MaskerRegistry& registry,
                      const std::vector<MaskerConfig>& configs) override {
    return RunSteps(registry, configs, {});
  }
  int64_t Steps() const override { return static_cast<int64_t>(samples_.size()); }

  Result<Metrics> RunSteps(const MaskerRegistry& registry, const std::vector<MaskerConfig>& configs,
                           const StepCallback& on_step) override {
    MT_ASSIGN_OR_RETURN(MaskerStack stack, MaskerStack::Build(registry, configs));
    double density = 0, error = 0, density_max = 0, error_max = 0, recall = 0;
    int64_t rows = 0;
    // The metrics of the first n samples.
    auto so_far = [&](size_t n) {
      return Metrics{{"density", density / static_cast<double>(n)},
                     {"error", error / static_cast<double>(n)},
                     {"density_max", density_max},
                     {"error_max", error_max},
                     {"recall", recall / static_cast<double>(rows)}};
    };
    for (size_t i = 0; i < samples_.size(); ++i) {
      const Sample& s = samples_[i];
      BackendInputs& resident = *resident_[i];
      const AttentionInputs& in = resident.host();
      StackState state;  // samples are independent calls
      auto mask = backend_->BuildMask(stack, resident, state);
      if (!mask.ok()) return mask.status().WithContext("sample " + std::to_string(i) + ": ");
      const double d = mask->AttendedDensity();  // a dense baseline ([]) reads every key
      auto out_or = backend_->MaskedAttention(resident, mask.value());
      if (!out_or.ok()) return out_or.status().WithContext("sample " + std::to_string(i) + ": ");
      const Tensor& out = out_or.value();
      const double e = RelativeL2Error(out, s.dense_out);
      density += d;
      error += e;
      density_max = std::max(density_max, d);
      error_max = std::max(error_max, e);
      std::vector<float> row(static_cast<size_t>(in.num_keys()));
      for (size_t r = 0; r < s.top_mass.size(); ++r, ++rows) {
        if (mask->is_full() || mask->is_empty()) {
          recall += 1.0;
          continue;
        }
        mask->ExpandRow(static_cast<int64_t>(r), row.data());
        int64_t hit = 0;
        for (int32_t j : s.top_mass[r]) hit += row[j] > 0;
        recall += s.top_mass[r].empty() ? 1.0 : static_cast<double>(hit) / s.top_mass[r].size();
      }
      if (on_step && !on_step(static_cast<int64_t>(i) + 1, so_far(i + 1))) return so_far(i + 1);
    }
    return so_far(samples_.size());
  }

 private:
  std::vector<Sample> samples_;
  std::unique_ptr<Backend> backend_;                      // where masks and masked attention run
  std::vector<std::unique_ptr<BackendInputs>> resident_;  // per sample
};

// noop: waits, then reports a density and an error computed from the
// parameters, so that samplers have a landscape to search.
class NoopBenchmark : public Benchmark {
 public:
  NoopBenchmark(int64_t sleep_ms, int64_t steps) : sleep_ms_(sleep_ms), steps_(steps) {}
  int64_t Steps() const override { return steps_; }
  Result<Metrics> Run(const MaskerRegistry& registry,
                      const std::vector<MaskerConfig>& configs) override {
    return RunSteps(registry, configs, {});
  }
  // Every step sleeps sleep_ms and reports the same metrics.
  Result<Metrics> RunSteps(const MaskerRegistry&, const std::vector<MaskerConfig>& configs,
                           const StepCallback& on_step) override {
    Metrics m = Landscape(configs);
    // The OpenMP threads the trial was given (resources, worker/): for tests.
    m["omp_threads"] = omp_get_max_threads();
    for (int64_t step = 1; step <= steps_; ++step) {
      if (sleep_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms_));
      if (on_step && !on_step(step, m)) break;
    }
    return m;
  }

 private:
  static Metrics Landscape(const std::vector<MaskerConfig>& configs) {
    double sum = 0, count = 0;
    for (const MaskerConfig& c : configs)
      for (const auto& [field, value] : c.values) {
        double x;
        if (auto* i = std::get_if<int64_t>(&value))
          x = static_cast<double>(*i) / (static_cast<double>(*i) + 100.0);
        else if (auto* d = std::get_if<double>(&value))
          x = std::min(1.0, std::fabs(*d));
        else
          continue;
        sum += x;
        count += 1;
      }
    const double density = count > 0 ? sum / count : 1.0;
    // A valley at density 0.2 with ripples: a minimum for a sampler to find.
    const double error = std::pow(density - 0.2, 2) + 0.05 * (1 - std::cos(25 * density));
    return Metrics{{"density", density},
                   {"error", error},
                   {"density_max", density},
                   {"error_max", error},
                   {"recall", 1.0 - density / 2}};
  }

  int64_t sleep_ms_, steps_;
};

}  // namespace

Status CheckBenchmarkDevice(const std::string& name, const Device& device) {
  if (device.cuda() && name == "ruler_niah")
    return Status::Error(
        "ruler_niah: runs on the CPU only; --device cuda is not supported yet (the model "
        "runtime has no GPU path): run its workers with --device cpu");
  return Status::Ok();  // attention_error runs on either; noop runs no attention
}

Result<std::unique_ptr<Benchmark>> CreateBenchmark(const nlohmann::json& spec,
                                                   const Device& device) {
  const std::string name = spec.value("name", "");
  MT_RETURN_IF_ERROR(CheckBenchmarkDevice(name, device));
  if (name == "noop")
    return std::unique_ptr<Benchmark>(
        new NoopBenchmark(spec.value("sleep_ms", 0), std::max<int64_t>(1, spec.value("steps", 1))));
  if (name == "ruler_niah") return CreateRulerNiahBenchmark(spec);
  // Masked attention runs on `device`; the dense reference stays on the CPU.
  if (device.cuda() && !cuda::Available())
    return Status::Error("attention_error: device " + device.ToString() +
                         ": no CUDA device on this worker");
  if (name != "attention_error") return Status::Error("unknown benchmark '" + name + "'");
  std::vector<Sample> samples;
  if (spec.contains("folder")) {
    const std::string folder = spec["folder"].get<std::string>();
    std::vector<std::string> files;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(folder, ec))
      if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
    if (ec) return Status::Error("benchmark folder '" + folder + "': " + ec.message());
    std::sort(files.begin(), files.end());
    if (files.empty())
      return Status::Error("benchmark folder '" + folder + "' has no .safetensors files");
    for (const std::string& f : files) {
      MT_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Read(f));
      Sample s;
      for (auto [name, t] : {std::pair{"q", &s.q}, {"k", &s.k}, {"v", &s.v}}) {
        MT_ASSIGN_OR_RETURN(const Tensor* src, file.Get(name, 4));
        *t = *src;
      }
      if (file.Has("attention_mask")) {
        s.mask = *file.Get("attention_mask").value();
        s.has_mask = true;
      }
      s.scaling = static_cast<float>(1.0 / std::sqrt(static_cast<double>(s.q.dim(3))));
      MT_RETURN_IF_ERROR(CheckAttentionInputs(s.Inputs()).WithContext(f + ": "));
      samples.push_back(std::move(s));
    }
  } else {
    const nlohmann::json syn = spec.value("synthetic", nlohmann::json::object());
    for (int64_t i = 0; i < syn.value("samples", 8); ++i) samples.push_back(Synthesize(syn, i));
  }
  MT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, CreateBackend(device));
  std::vector<std::unique_ptr<BackendInputs>> resident;
  for (Sample& s : samples) {
    AttentionErrorBenchmark::Prepare(s);
    MT_ASSIGN_OR_RETURN(auto r, backend->Upload(s.Inputs()));
    resident.push_back(std::move(r));
  }
  // `samples` moves as a vector (its elements stay put): `resident` still points into them.
  return std::unique_ptr<Benchmark>(
      new AttentionErrorBenchmark(std::move(samples), std::move(backend), std::move(resident)));
}

}  // namespace masktune
