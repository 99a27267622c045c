#!/usr/bin/env python3
"""masktune's Llama runtime against llama.cpp on the same GGUF, side by side.

Runs, interleaved, `bench_model --stacks dense --format json` (masktune) and the same
workload through llama-cpp-python (llama.cpp built from source by pip, in a
throwaway virtual environment this script creates; never part of make test):
a dense prefill of --context tokens of ordinary text, then --decode greedy
tokens one at a time, with the same thread count. Each run is its own
process, so peak resident memory (ru_maxrss) is that run's. Prints the
medians and masktune's ratios: prefill tokens/s, decode tokens/s (higher is
better for masktune when the ratio is above 1) and peak memory (masktune's
over llama.cpp's; below 1 is better).

  python3 bench/vs_llama_cpp.py [--bench-model build/bench_model]
      [--model models/SmolLM2-135M-Instruct.Q4_1.gguf] [--threads 2]
      [--context 2048] [--decode 32] [--runs 7] [--venv /tmp/masktune-llamacpp-venv]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

LLAMA_CPP_VERSION = "0.3.36"
SENTENCE = "The quick brown fox jumps over the lazy dog while the river runs to the sea. "


def llama_child(args):
    """Inside the venv: one llama.cpp run, one JSON line."""
    import numpy as np
    from llama_cpp import Llama

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    llm = Llama(model_path=args.model, n_ctx=args.context + args.decode + 16,
                n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    sentence = llm.tokenize(SENTENCE.encode(), add_bos=False, special=False)
    prompt = (sentence * (args.context // len(sentence) + 1))[:args.context]
    t0 = time.perf_counter()
    llm.eval(prompt)
    prefill = time.perf_counter() - t0
    def last_logits():  # what llama_get_logits gives for the batch's last token
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))

    tok = int(np.argmax(last_logits()))
    t0 = time.perf_counter()
    for _ in range(args.decode):
        llm.eval([tok])
        tok = int(np.argmax(last_logits()))
    decode = time.perf_counter() - t0
    print(json.dumps({
        "prefill_tokens_per_s": args.context / prefill,
        "decode_ms_per_token": 1e3 * decode / args.decode,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "interpreter_rss_mb": base}))


def ensure_venv(venv):
    py = os.path.join(venv, "bin", "python")
    check = [py, "-c", "import llama_cpp,sys; sys.exit(llama_cpp.__version__ != '%s')"
             % LLAMA_CPP_VERSION]
    if os.path.exists(py) and subprocess.run(check, capture_output=True).returncode == 0:
        return py
    print(f"installing llama-cpp-python {LLAMA_CPP_VERSION} into {venv} "
          "(builds llama.cpp from source: minutes)", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "numpy",
                    f"llama-cpp-python=={LLAMA_CPP_VERSION}"], check=True)
    return py


def run_json(cmd, env=None):
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"vs_llama_cpp: {' '.join(cmd)} exited {out.returncode}:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench-model", default="build/bench_model")
    p.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--venv", default="/tmp/masktune-llamacpp-venv")
    p.add_argument("--llama-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.llama_child:
        return llama_child(args)
    for path in (args.bench_model, args.model):
        if not os.path.exists(path):
            sys.exit(f"vs_llama_cpp: {path} does not exist (make builds and fetches it)")
    py = ensure_venv(args.venv)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    common = ["--model", args.model, "--context", str(args.context), "--decode", str(args.decode)]
    ours, theirs = [], []
    for i in range(args.runs):
        ours.append(run_json([args.bench_model, "--stacks", "dense", "--format", "json"] + common, env))
        theirs.append(run_json([py, os.path.abspath(__file__), "--llama-child",
                                "--threads", str(args.threads)] + common))
        print(f"run {i + 1}/{args.runs}: masktune {ours[-1]['prefill_tokens_per_s']:.0f} tok/s "
              f"prefill, {ours[-1]['decode_ms_per_token']:.2f} ms/token; llama.cpp "
              f"{theirs[-1]['prefill_tokens_per_s']:.0f} tok/s, "
              f"{theirs[-1]['decode_ms_per_token']:.2f} ms/token", file=sys.stderr, flush=True)

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    rows = [("prefill tokens/s", "prefill_tokens_per_s", False),
            ("decode ms/token", "decode_ms_per_token", True),
            ("peak resident MB", "max_rss_mb", True)]
    print(f"{args.model}, {args.threads} threads, {args.context}-token context, "
          f"{args.decode} decoded tokens, medians of {args.runs} interleaved runs")
    print(f"{'':18} {'masktune':>10} {'llama.cpp':>10} {'masktune advantage':>20}")
    for label, key, lower_better in rows:
        a, b = med(ours, key), med(theirs, key)
        print(f"{label:18} {a:10.2f} {b:10.2f} {(b / a if lower_better else a / b):19.2f}x")
    print(f"(llama.cpp's figure includes the Python interpreter's "
          f"{med(theirs, 'interpreter_rss_mb'):.0f} MB before the model was loaded)")
    print(json.dumps({"masktune": {k: med(ours, k) for _, k, _ in rows},
                      "llama_cpp": {k: med(theirs, k) for _, k, _ in rows}}))


if __name__ == "__main__":
    main()
