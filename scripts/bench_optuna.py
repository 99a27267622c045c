#!/usr/bin/env python3
"""Early stopping against the reference implementation: Optuna's TPE with its
SuccessiveHalvingPruner, beside masktune's random search with and without
ASHA, on the same objective and the same samples.

The samples are synthetic attention (sinks, a local bias, heavy hitters,
outlier channels, a needle: what attention_error's generator plants) written
once as safetensors files (q, k, v) into a folder. masktune runs its
attention_error benchmark on that folder (build/bench_scheduler --folder);
Optuna's trials drive `masktune attend` on one file per step, report the
running objective (sparsity_10 of the mean density and error so far, as
attention_error reports it) and ask the pruner. Printed: sample evaluations
spent and the best objective per stack, per seed and in total.

Not part of `make test`: it makes a throwaway virtual environment (default
/tmp/masktune-optuna-venv) and installs optuna from PyPI into it.

usage: scripts/bench_optuna.py [--build build] [--seeds 5] [--trials 50]
                               [--samples 16] [--keys 4096] [--venv DIR]
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The quickstart stacks (configs/examples/quickstart.yaml) as masker lists.
def stack_maskers(stack, params):
    sink = {"type": "sink", "sink_size": 64}
    local = {"type": "local", "window_size": 64}
    if stack == "topk":
        return [sink, local, {"type": "oracle_top_k", "heavy_size": float(params["heavy_size"])}]
    if stack == "quest":
        return [sink, local, {"type": "quest_top_k", "heavy_size": float(params["heavy_size"]),
                              "page_size": int(params["page_size"])}]
    return [sink, {"type": "oracle_top_p", "top_p": float(params["top_p"])}]


def suggest(stack, trial):
    if stack == "topk":
        return {"heavy_size": trial.suggest_float("heavy_size", 0.01, 0.15)}
    if stack == "quest":
        return {"heavy_size": trial.suggest_categorical("heavy_size", [0.05, 0.1]),
                "page_size": trial.suggest_categorical("page_size", [16, 32, 64])}
    return {"top_p": trial.suggest_float("top_p", 0.5, 0.95)}


def sparsity_10(density, error):
    return 0.99 * error + 0.01 * density + 10.0 * max(0.0, density - 0.10)


def ensure_venv(venv):
    """Re-runs this script inside a virtual environment that has optuna."""
    if os.environ.get("MASKTUNE_OPTUNA_VENV") == venv:
        return
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        print(f"bench_optuna: creating {venv} (python3 -m venv; pip install optuna numpy)",
              file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", venv])
    check = subprocess.run([python, "-c", "import optuna, numpy"], capture_output=True)
    if check.returncode != 0:
        subprocess.check_call([python, "-m", "pip", "install", "-q", "optuna", "numpy"])
    env = dict(os.environ, MASKTUNE_OPTUNA_VENV=venv)
    os.execve(python, [python, os.path.abspath(__file__)] + sys.argv[1:], env)


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        data = array.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def make_samples(folder, samples, keys, heads=8, kv_heads=2, dim=64, seed=7):
    """Synthetic attention with the traits attention_error's generator plants."""
    import numpy as np
    os.makedirs(folder, exist_ok=True)
    for i in range(samples):
        rng = np.random.default_rng([seed, i])
        q = rng.standard_normal((1, heads, 1, dim))
        k = rng.standard_normal((1, kv_heads, keys, dim))
        v = rng.standard_normal((1, kv_heads, keys, dim))
        outliers = rng.integers(0, dim, max(1, dim // 16))
        q[..., outliers] *= 4.0
        k[..., outliers] *= 4.0
        g = heads // kv_heads
        for h in range(kv_heads):
            d = q[0, h * g:(h + 1) * g, :, :].sum(axis=(0, 1))
            d = d / (np.linalg.norm(d) + 1e-12)  # unit: alpha * d adds ~alpha to the scaled score
            def push(j, alpha):
                k[0, h, j, :] += alpha * d
            for j in range(min(4, keys)):
                push(j, 3.0)  # sinks
            for j in range(max(0, keys - 64), keys):
                push(j, 1.5 * math.exp(-(keys - 1 - j) / 32.0))  # local bias
            for j in rng.integers(0, keys, max(1, keys // 100)):
                push(j, 2.0)  # heavy hitters
            push(int(rng.integers(0, keys)), 5.0)  # a needle
        write_safetensors(os.path.join(folder, f"sample-{i:03d}.safetensors"),
                          {"q": q, "k": k, "v": v})


def attend(binary, path, maskers):
    out = subprocess.run([binary, "attend", "--input", path, "--maskers", json.dumps(maskers)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"masktune attend: {out.stderr.strip()}")
    line = json.loads(out.stdout.strip().splitlines()[-1])
    return line["density"], line["error"]


def run_optuna(binary, files, stack, trials, seed):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    evaluations = 0

    def objective(trial):
        nonlocal evaluations
        maskers = stack_maskers(stack, suggest(stack, trial))
        density = error = 0.0
        for step, path in enumerate(files, start=1):
            d, e = attend(binary, path, maskers)
            evaluations += 1
            density += d
            error += e
            value = sparsity_10(density / step, error / step)
            if step < len(files):
                trial.report(value, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return value

    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(reduction_factor=4))
    study.optimize(objective, n_trials=trials)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return evaluations, min(t.value for t in complete), pruned


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--trials", type=int, default=50, help="num_samples per stack (quest: x2)")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--keys", type=int, default=4096)
    p.add_argument("--venv", default="/tmp/masktune-optuna-venv")
    p.add_argument("--skip-masktune", action="store_true", help="only Optuna's side")
    p.add_argument("--skip-optuna", action="store_true", help="only masktune's side")
    p.add_argument("--grace", type=int, default=1, help="ASHA's grace_period (masktune's side)")
    args = p.parse_args()
    ensure_venv(args.venv)
    binary = os.path.join(args.build, "masktune")
    bench = os.path.join(args.build, "bench_scheduler")
    for f in (binary, bench):
        if not os.path.exists(f):
            sys.exit(f"bench_optuna: {f} is missing: build it first (make)")
    with tempfile.TemporaryDirectory(prefix="masktune_optuna_") as tmp:
        folder = os.path.join(tmp, "samples")
        make_samples(folder, args.samples, args.keys)
        files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
        if not args.skip_masktune:
            print(f"== masktune: random search, without and with ASHA (bench_scheduler), "
                  f"{args.samples} samples of {args.keys} keys", flush=True)
            subprocess.check_call([bench, "--seeds", str(args.seeds), "--num-samples",
                                   str(args.trials), "--grace", str(args.grace), "--folder",
                                   folder])
        if args.skip_optuna:
            return
        print(f"== Optuna {__import__('optuna').__version__}: TPESampler + "
              f"SuccessiveHalvingPruner(reduction_factor=4), masktune attend per sample",
              flush=True)
        print(f"{'seed':<5} {'trials':>7} {'pruned':>7} {'evaluations':>12}  best objective per stack")
        total = 0
        for seed in range(1, args.seeds + 1):
            line, trials, pruned, evals = "", 0, 0, 0
            for stack, n in (("topk", args.trials), ("quest", 2 * args.trials),
                             ("top_p", args.trials)):
                e, best, pr = run_optuna(binary, files, stack, n, seed)
                evals += e
                trials += n
                pruned += pr
                line += f"{stack} {best:.5f}  "
            total += evals
            print(f"{seed:<5} {trials:>7} {pruned:>7} {evals:>12}  {line}", flush=True)
        print(f"total sample evaluations: optuna {total}")


if __name__ == "__main__":
    main()
