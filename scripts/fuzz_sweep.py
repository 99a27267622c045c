#!/usr/bin/env python3
"""Fuzz `masktune validate` with mutated sweep files (python3, stdlib only).

Each case takes one of the shipped example sweeps (configs/examples/*.yaml)
and mutates it: byte flips, deletions, duplications, huge and out-of-range
numbers, long scalars, deep nesting, wrong types, YAML aliases, random bytes.
`masktune validate` runs on it with a 10 s timeout. Exit codes 0 (valid) and
2 (bad input, with FILE:LINE:COLUMN messages) are fine; a signal, a timeout
or any other exit code is a failure: the input is saved to a file, its path
printed, and the script exits 1.

Cases are seeded: case i of seed S is the same on every run, and
`--case I` reruns just that one.

    scripts/fuzz_sweep.py --count 500 --seed 1 --binary build/masktune
"""

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

TIMEOUT_S = 10

HUGE_NUMBERS = [
    "1e309", "-1e309", "1e-320", "-1e-320", "1e-400", "4.9e-324", "1.8e308", "2.2250738585072014e-308",
    "9223372036854775807", "9223372036854775808", "-9223372036854775809",
    "99999999999999999999", "0e999999", "1e99999999999", "-0", "+7", "0x10", ".5", "5.", "1_000",
]

WRONG_TYPES = [
    "[]", "{}", "null", "~", "true", "false", '"text"', "'1'", "[1, 2]", "{grid_search: []}",
    "{uniform: [1]}", "{randint: [5, 1]}", "{quniform: [0.1, 0.5, 0]}", "{loguniform: [0, 1]}",
    "{choice: [[1], {a: 1}]}", "{grid_search: [1, 2], choice: [3]}", "-5", "0", ".inf", "-.inf",
    ".nan", "!!binary AAAA", "*nowhere", "&a 3", "!!str 5", "!custom 1", "|\n  block", "? complex",
    "{uniform: [1e309, 2]}", "{grid_search: [" + ", ".join(str(i) for i in range(300)) + "]}",
    "/dev/zero", "/", ".", "..", "/nonexistent/file.json", "data", "data/", "''", "x" * 300,
]


def number_spans(text):
    return [m.span() for m in re.finditer(r"(?<![\w.])[-+]?\d+(\.\d*)?([eE][-+]?\d+)?(?![\w.])", text)]


def value_spans(text):
    # The value after "key: " up to the end of the flow item or line.
    return [(m.start(1), m.end(1)) for m in re.finditer(r":[ \t]+([^\s,{}\[\]#][^,{}\[\]\n#]*)", text)]


def replace_span(text, span, new):
    return text[: span[0]] + new + text[span[1]:]


def pick(rng, seq):
    return seq[rng.randrange(len(seq))]


def mutate_once(rng, text):
    kind = rng.randrange(16)
    n = len(text)
    if kind == 0 and n:  # byte flips
        b = bytearray(text.encode("utf-8", "surrogateescape"))
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return b.decode("utf-8", "surrogateescape")
    if kind == 1 and n:  # deletion
        a = rng.randrange(n)
        return text[:a] + text[a + rng.randint(1, max(1, min(200, n - a))):]
    if kind == 2 and n:  # duplication
        a = rng.randrange(n)
        b = min(n, a + rng.randint(1, 300))
        at = rng.randrange(n)
        return text[:at] + text[a:b] * rng.randint(1, 4) + text[at:]
    if kind == 3:  # huge and out-of-range numbers
        spans = number_spans(text)
        if spans:
            return replace_span(text, pick(rng, spans), pick(rng, HUGE_NUMBERS))
    if kind == 4:  # very long numbers
        spans = number_spans(text)
        if spans:
            digits = pick(rng, [200000, 50000, 400, 20])
            new = pick(rng, ["1" * digits, "0." + "1" * digits, "1" * digits + ".5", "1e" + "9" * digits,
                             "-" + "9" * digits, "1." + "0" * digits + "e-320"])
            return replace_span(text, pick(rng, spans), new)
    if kind == 5:  # long scalars
        spans = value_spans(text)
        if spans:
            length = pick(rng, [50000, 100000, 5000])
            new = pick(rng, ["a" * length, "'" + "b" * length + "'", "x" * (length // 2) + " y" * 10])
            return replace_span(text, pick(rng, spans), new)
    if kind == 6:  # deep nesting
        spans = value_spans(text)
        if spans:
            depth = pick(rng, [50, 500, 1000, 3000, 20000])
            new = pick(rng, ["[" * depth + "1" + "]" * depth, "{a: " * depth + "1" + "}" * depth,
                             "{grid_search: " * depth + "[1]" + "}" * depth])
            return replace_span(text, pick(rng, spans), new)
    if kind == 7:  # wrong types
        spans = value_spans(text)
        if spans:
            return replace_span(text, pick(rng, spans), pick(rng, WRONG_TYPES))
    if kind == 8:  # random bytes, inserted or the whole file
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 400))).decode("latin-1")
        if rng.random() < 0.2:
            return junk
        at = rng.randrange(n + 1)
        return text[:at] + junk + text[at:]
    if kind == 9:  # lines dropped, swapped, re-indented
        lines = text.split("\n")
        if len(lines) > 2:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            op = rng.randrange(3)
            if op == 0:
                del lines[i]
            elif op == 1:
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines[i] = " " * rng.randint(0, 12) + lines[i].lstrip()
            return "\n".join(lines)
    if kind == 10:  # grids that explode, samples at their limits
        return text + pick(rng, [
            "\nsearch: {algorithm: grid, num_samples: 1073741824}\n",
            "\nsearch: {algorithm: random, num_samples: 1073741824}\n",
            "\nsearch: {algorithm: tpe, num_samples: 1073741825}\n",
            "\nsearch: {num_samples: 99999999999999999999999}\n",
        ])
    if kind == 11:  # a big grid in a new stack
        vals = ", ".join(str(i) for i in range(1, rng.randint(2, 40)))
        fields = "".join("\n    - oracle_top_k: {heavy_size: {grid_search: [%s]}}" % vals for _ in range(rng.randint(1, 14)))
        return re.sub(r"^attention:", "attention:\n  fuzz_grid:" + fields, text, count=1, flags=re.M)
    if kind == 12:  # aliases and anchors
        return "anchors: &x [1, 2, 3]\n" + text + pick(rng, [
            "\n  alias_stack: *x\n", "\n  bomb: &b [*b]\n", "\nstudy: *x\n", "\n<<: *x\n",
            "\n  d: &a [x, x, x]\n  e: &c [*a, *a, *a]\n  f: [*c, *c, *c]\n"])
    if kind == 13:  # dense stacks, duplicate keys and stacks
        return text + pick(rng, ["\n  dense: []\n", "\n  dense:\n", "\n  dense: [[]]\n", "\nstudy: again\n",
                                 "\nattention: {}\n", "\n  " + "s" * 1000 + ": []\n", "\n  1e309: []\n"])
    if kind == 14:  # control characters, BOM, NUL, tabs
        at = rng.randrange(n + 1)
        return text[:at] + pick(rng, ["\x00", "\ufeff", "\t", "\r", "\x1b[2J", "\\", "%YAML 1.2\n---\n", "---\n", "...\n"]) + text[at:]
    if kind == 15:  # paths at odd places
        return re.sub(r"(sorted_channel_file|hat_weight_file|storage|projections_file): [^\n}]*",
                      lambda m: m.group(1) + ": " + pick(rng, ["/dev/zero", "/", "data", "/etc/shadow", "data/README.md",
                                                          "'" + "p/" * 2000 + "'", "/proc/self/mem", "\"\""]),
                      text, count=1)
    return text


def make_case(seed, index, examples):
    rng = random.Random("%s:%s" % (seed, index))
    name = pick(rng, examples)
    with open(name, encoding="utf-8") as f:
        text = f.read()
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        text = mutate_once(rng, text)
    return os.path.basename(name), text


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200, help="cases to run")
    ap.add_argument("--seed", type=int, default=1, help="seed of the cases")
    ap.add_argument("--binary", required=True, help="the masktune binary")
    ap.add_argument("--examples", default=os.path.join(here, "..", "configs", "examples"),
                    help="folder of the sweeps to mutate (and their data/ side files)")
    ap.add_argument("--case", type=int, default=None, help="run only case I")
    ap.add_argument("--save-dir", default=None, help="where a failing input is saved (default: the temp folder)")
    args = ap.parse_args()

    examples = sorted(os.path.join(args.examples, f) for f in os.listdir(args.examples) if f.endswith(".yaml"))
    if not examples:
        print("fuzz_sweep: no .yaml files in %s" % args.examples, file=sys.stderr)
        return 2
    binary = os.path.abspath(args.binary)
    work = tempfile.mkdtemp(prefix="fuzz_sweep_")
    save_dir = args.save_dir or tempfile.gettempdir()
    try:
        # The side files beside the sweeps, so that unmutated paths resolve.
        data = os.path.join(args.examples, "data")
        if os.path.isdir(data):
            shutil.copytree(data, os.path.join(work, "data"))
        cases = [args.case] if args.case is not None else range(args.count)
        counts = {0: 0, 2: 0}
        for i in cases:
            source, text = make_case(args.seed, i, examples)
            path = os.path.join(work, "case.yaml")
            with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(text)
            problem = None
            try:
                r = subprocess.run([binary, "validate", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   timeout=TIMEOUT_S, cwd=work)
                if r.returncode < 0:
                    problem = "killed by signal %d" % -r.returncode
                elif r.returncode not in (0, 2):
                    problem = "exit code %d" % r.returncode
                elif r.returncode == 2 and not r.stderr.strip():
                    problem = "exit code 2 without a message"
                else:
                    counts[r.returncode] += 1
                out = (r.stderr or r.stdout)[-600:].decode("utf-8", "replace")
            except subprocess.TimeoutExpired:
                problem = "no answer within %d s" % TIMEOUT_S
                out = ""
            if problem:
                saved = os.path.join(save_dir, "fuzz_sweep_seed%d_case%d.yaml" % (args.seed, i))
                shutil.copyfile(path, saved)
                print("fuzz_sweep: case %d (seed %d, from %s): %s" % (i, args.seed, source, problem))
                print("fuzz_sweep: input saved to %s (rerun: --seed %d --case %d)" % (saved, args.seed, i))
                if out:
                    print("fuzz_sweep: output tail:\n" + out)
                return 1
        print("fuzz_sweep: %d cases, seed %d: %d valid, %d rejected (exit 2), no crash, hang or other exit"
              % (len(cases), args.seed, counts[0], counts[2]))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
