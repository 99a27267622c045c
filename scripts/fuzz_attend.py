#!/usr/bin/env python3
"""Fuzz `masktune attend` with mutated masker lists and safetensors files.

Each case starts from a small valid input (a safetensors file with q, k, v and
maybe attention_mask and case metadata, written here with struct, and a valid
masker list), applies one to three mutations (bit flips, truncation, header
edits with huge, negative or non-finite numbers, deep nesting, wrong types,
duplicate keys, overlapping data, non-finite or overflowing tensor values, odd
flags), and runs the binary with a timeout.

A case fails on a signal, a timeout, an exit code other than 0 or 2, an exit 2
without exactly one line on stderr, or an exit 0 whose output is not one JSON
line with a finite error and a density in [0, 1]. Failing cases are copied to
WORKDIR/failures/case-N/ with repro.sh; the script exits 1 if any failed.

    scripts/fuzz_attend.py --count 500 --seed 1 --binary build/masktune --workdir /tmp/fz
    scripts/fuzz_attend.py --seed 1 --only 17 ...   # one case again

Python 3 standard library only. The same seed gives the same cases.
"""
import argparse
import json
import math
import os
import random
import shlex
import shutil
import struct
import subprocess
import sys
import time

# --- valid inputs -------------------------------------------------------------


def half_bits(x):
    return struct.unpack("<H", struct.pack("<e", x))[0]


def bf16_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0] >> 16


def encode(values, dtype):
    if dtype == "F32":
        return struct.pack("<%df" % len(values), *values)
    if dtype == "F16":
        return struct.pack("<%dH" % len(values), *[half_bits(v) for v in values])
    return struct.pack("<%dH" % len(values), *[bf16_bits(v) for v in values])


def build_safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, values). Returns (header dict, data bytes)."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, dtype, shape, values in tensors:
        raw = encode(values, dtype)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, data


def pack(header_text, data):
    h = header_text.encode("utf-8", "surrogatepass") if isinstance(header_text, str) else header_text
    return struct.pack("<Q", len(h)) + h + data


def random_masker(rng, keys):
    size = lambda: rng.choice([rng.randint(1, keys), round(rng.uniform(0.05, 1.0), 3)])
    kind = rng.choice(["sink", "local", "causal", "oracle_top_k", "oracle_top_p", "random_sampling",
                       "adaptive_sampling", "quest_top_k", "pq_top_k", "magic_pig"])
    if kind == "sink":
        return {"type": kind, "sink_size": size()}
    if kind == "local":
        return {"type": kind, "window_size": size()}
    if kind == "causal":
        return {"type": kind}
    if kind == "oracle_top_k":
        return {"type": kind, "heavy_size": size()}
    if kind == "oracle_top_p":
        return {"type": kind, "top_p": round(rng.uniform(0, 1), 3)}
    if kind == "random_sampling":
        return {"type": kind, "sampling_rate": round(rng.uniform(0.05, 1), 3), "seed": rng.randint(0, 99)}
    if kind == "adaptive_sampling":
        return {"type": kind, "base_rate_sampling": round(rng.uniform(0.05, 0.9), 3),
                "epsilon": round(rng.uniform(0.05, 0.9), 3), "delta": round(rng.uniform(0.05, 0.9), 3),
                "init_offset": rng.randint(0, 2), "local_offset": rng.randint(0, 2)}
    if kind == "quest_top_k":
        return {"type": kind, "heavy_size": size(), "page_size": rng.choice([1, 2, 4, 8])}
    if kind == "pq_top_k":
        return {"type": kind, "heavy_size": size(), "pq_sub_dim": 2, "pq_bits": rng.choice([1, 2, 3])}
    return {"type": kind, "lsh_k": rng.choice([1, 2, 4]), "lsh_l": rng.choice([1, 2, 8]),
            "seed": rng.randint(0, 99)}


def random_list(rng, keys):
    out, sampling = [], False
    for _ in range(rng.randint(0, 3)):
        m = random_masker(rng, keys)
        is_sampling = m["type"] in ("random_sampling", "adaptive_sampling", "magic_pig")
        if is_sampling and sampling:
            continue
        sampling = sampling or is_sampling
        out.append(m)
    return out


def random_case(rng):
    """A valid attend input: tensors, metadata, masker list."""
    batch, kv_heads = rng.choice([1, 1, 2]), rng.choice([1, 2])
    heads = kv_heads * rng.choice([1, 2])
    queries, keys = rng.randint(1, 4), rng.randint(8, 40)
    head_dim = rng.choice([2, 4, 8])
    dtype = rng.choice(["F32", "F32", "F16", "BF16"])
    gauss = lambda n: [rng.gauss(0, 1) for _ in range(n)]
    tensors = [("q", dtype, [batch, heads, queries, head_dim], gauss(batch * heads * queries * head_dim)),
               ("k", dtype, [batch, kv_heads, keys, head_dim], gauss(batch * kv_heads * keys * head_dim)),
               ("v", dtype, [batch, kv_heads, keys, head_dim], gauss(batch * kv_heads * keys * head_dim))]
    if rng.random() < 0.3:  # causal: 0 up to each query's position, -inf after
        mask = [0.0 if j <= keys - queries + i else -math.inf
                for _ in range(batch) for i in range(queries) for j in range(keys)]
        tensors.append(("attention_mask", "F32", [batch, 1, queries, keys], mask))
    maskers = random_list(rng, keys)
    metadata = None
    if rng.random() < 0.4:
        metadata = {"case": json.dumps({"maskers": maskers, "scaling": 1 / math.sqrt(head_dim)})}
    return tensors, metadata, maskers, keys


# --- mutations ----------------------------------------------------------------

HOSTILE = ["1e999", "-1e999", "1e308", "-1", "0", "0.0", "1e20", "1e-320", "9223372036854775807",
           "9223372036854775808", "18446744073709551616", "-9223372036854775809", "null", "true",
           '"x"', '""', "[]", "{}", "[1,2]", '{"a":1}', "NaN", "Infinity", "-0", "1.5", "3.4e38"]


def deep(depth, inner="1"):
    return "[" * depth + inner + "]" * depth


def hostile_value(rng):
    r = rng.random()
    if r < 0.1:
        return deep(rng.choice([63, 64, 65, 200, 100000]))
    if r < 0.15:
        return '"' + "a" * rng.choice([1000, 100000]) + '"'
    return rng.choice(HOSTILE)


def mutate_text(rng, text):
    """Byte-level damage to a JSON text."""
    op = rng.choice(["flip", "truncate", "insert", "delete", "dup"])
    b = bytearray(text.encode("utf-8", "surrogatepass"))
    if not b:
        return text
    i = rng.randrange(len(b))
    if op == "flip":
        b[i] ^= 1 << rng.randrange(8)
    elif op == "truncate":
        b = b[:i]
    elif op == "insert":
        b[i:i] = rng.choice([b"[", b"{", b"]", b"}", b",", b'"', b"\\", b"\x00", b"\xff", b"1e999", b"\n"])
    elif op == "delete":
        del b[i:i + rng.randint(1, 4)]
    else:
        j = rng.randrange(len(b))
        b[j:j] = b[i:i + rng.randint(1, 16)]
    return b.decode("utf-8", "replace")


def mutate_maskers(rng, maskers):
    """Returns the --maskers text."""
    op = rng.choice(["value", "value", "type", "deep", "dup_key", "text", "top", "extra", "two_sampling",
                     "item"])
    items = json.loads(json.dumps(maskers)) or [{"type": "sink", "sink_size": 4}]
    m = rng.choice(items)
    if op == "value":
        fields = [k for k in m if k != "type"] or ["heavy_size"]
        m[rng.choice(fields)] = "@@V@@"
        return json.dumps(items).replace('"@@V@@"', hostile_value(rng))
    if op == "type":
        m["type"] = "@@V@@"
        return json.dumps(items).replace('"@@V@@"', rng.choice(
            ["5", "null", "[]", "{}", '"top_k"', '"sink\\n"', '""', '"\\u0000"', deep(100)]))
    if op == "deep":
        return deep(rng.choice([62, 63, 64, 65, 1000, 100000]), json.dumps(items))
    if op == "dup_key":
        text = json.dumps(items)
        return text.replace('{"type"', '{"type": "sink", "type"', 1)
    if op == "text":
        return mutate_text(rng, json.dumps(items))
    if op == "top":
        return rng.choice(["{}", "null", "5", '"x"', "", "[[]]", "[5]", "[null]", "[{}]", " ", "[{\"type\"}]"])
    if op == "extra":
        m["no_such_field"] = 1
        return json.dumps(items)
    if op == "two_sampling":
        items += [{"type": "random_sampling", "sampling_rate": 0.5}, {"type": "magic_pig", "lsh_k": 2, "lsh_l": 2}]
        return json.dumps(items)
    items[rng.randrange(len(items))] = "@@V@@"
    return json.dumps(items).replace('"@@V@@"', hostile_value(rng))


def tensor_bytes_edit(rng, tensors):
    """Edits values: non-finite, overflowing, denormal."""
    name, dtype, shape, values = rng.choice(tensors)
    values = list(values)
    if not values:
        return tensors
    kind = rng.choice(["nan", "inf", "big", "big_all", "tiny", "zero_all"])
    big = {"F32": 3.4e38, "F16": 65504.0, "BF16": 3.38e38}[dtype]
    if kind == "nan":
        values[rng.randrange(len(values))] = math.nan
    elif kind == "inf":
        values[rng.randrange(len(values))] = rng.choice([math.inf, -math.inf])
    elif kind == "big":
        values[rng.randrange(len(values))] = big
    elif kind == "big_all":
        values = [big * rng.choice([1, -1]) for _ in values]
    elif kind == "tiny":
        values = [1e-42 for _ in values]
    else:
        values = [0.0 for _ in values]
    return [(n, d, s, values if n == name else v) for n, d, s, v in tensors]


def shape_edit(rng, tensors):
    """A valid file whose shapes attend must reject (or accept)."""
    out = []
    victim = rng.randrange(len(tensors))
    for idx, (name, dtype, shape, values) in enumerate(tensors):
        if idx == victim:
            op = rng.choice(["rank", "dim", "zero", "drop", "rename"])
            if op == "rank":
                shape = [len(values)] if rng.random() < 0.5 else [1] + shape
            elif op == "dim":
                d = rng.randrange(len(shape))
                shape = list(shape)
                shape[d] += 1
                n = 1
                for x in shape:
                    n *= x
                values = (values * (n // max(1, len(values)) + 1))[:n]
            elif op == "zero":
                shape = list(shape)
                shape[rng.randrange(len(shape))] = 0
                values = []
            elif op == "drop":
                continue
            else:
                name = rng.choice(["Q", "q ", "k\n", "attention_mask", "x"])
        out.append((name, dtype, shape, values))
    return out


def header_edit(rng, header):
    """Edits the header dict; returns its JSON text (maybe with raw tokens)."""
    names = [n for n in header if n != "__metadata__"]
    op = rng.choice(["shape", "offsets", "dtype", "entry", "dup", "overlap", "meta", "meta_deep", "case",
                     "deep", "huge_shape", "neg_offset", "not_object"])
    h = json.loads(json.dumps(header))
    name = rng.choice(names) if names else "q"
    e = h.get(name, {})
    if op == "shape" and e:
        e["shape"][rng.randrange(len(e["shape"]))] = "@@V@@"
    elif op == "offsets" and e:
        e["data_offsets"][rng.randrange(2)] = "@@V@@"
    elif op == "dtype" and e:
        e["dtype"] = rng.choice(["I8", "F64", "f32", "", 5, None, ["F32"]])
    elif op == "entry" and e:
        del e[rng.choice(["dtype", "shape", "data_offsets"])]
    elif op == "dup" and e:
        text = json.dumps(h)
        entry = json.dumps({name: e})[1:-1]
        return text[:-1] + ", " + entry + "}"
    elif op == "overlap" and len(names) > 1:
        a, b = rng.sample(names, 2)
        h[a]["data_offsets"] = list(h[b]["data_offsets"]) if rng.random() < 0.5 else [0, h[a]["data_offsets"][1] - h[a]["data_offsets"][0]]
    elif op == "meta":
        h["__metadata__"] = rng.choice([5, None, [], {"case": 5}, {"case": "not json"}, {"case": "[]"},
                                        {"case": "{}"}, {"case": '{"maskers": 5}'},
                                        {"case": '{"maskers": [], "scaling": "x"}'},
                                        {"case": '{"maskers": [], "scaling": 1e999}'},
                                        {"case": '{"maskers": [], "scaling": 0}'},
                                        {"case": '{"maskers": [], "scaling": -1e38}'}])
    elif op == "meta_deep":
        h["__metadata__"] = {"case": '{"maskers": ' + deep(rng.choice([64, 65, 100000]), "") + "}"}
    elif op == "case":
        h["__metadata__"] = {"case": mutate_text(rng, json.dumps({"maskers": [{"type": "sink", "sink_size": 2}],
                                                                   "scaling": 0.5}))}
    elif op == "deep":
        return json.dumps(h)[:-1] + ', "zz": ' + deep(rng.choice([64, 65, 100000])) + "}"
    elif op == "huge_shape" and e:
        e["shape"] = rng.choice([[0, 2 ** 62, 2 ** 62, 8], [2 ** 64 - 1, 1, 1, 1], [2 ** 32, 2 ** 32, 1, 1],
                                 [2 ** 63, 0, 1, 1], [1, 1, 1, 2 ** 40]])
    elif op == "neg_offset" and e:
        e["data_offsets"] = rng.choice([[-4, 0], [8, 4], [0, -1], [2 ** 64 - 1, 2 ** 64 - 1], [0, 2 ** 63]])
    elif op == "not_object":
        return rng.choice(["[]", "null", "5", '"x"', "", "{"])
    return json.dumps(h).replace('"@@V@@"', hostile_value(rng))


def special_flags(rng, workdir):
    op = rng.choice(["scaling", "scaling", "layer", "seed", "out", "repeat"])
    if op == "scaling":
        return ["--scaling", rng.choice(["nan", "inf", "-inf", "0", "-1", "1e39", "1e-45", "1e38", "abc",
                                         "-nan", "1e999"])]
    if op == "layer":
        return ["--layer", rng.choice(["5", "-1", "99999999999999999999", "x"])]
    if op == "seed":
        return ["--seed", rng.choice(["0", "-5", "1e3", "18446744073709551616"])]
    if op == "out":
        return ["--out", rng.choice([os.path.join(workdir, "o.safetensors"), workdir, "/nonexistent/o"])]
    return ["--repeat", rng.choice(["1", "0", "-1"])]


def make_case(rng, index, root):
    """Writes the case's files under root; returns the argument list."""
    tensors, metadata, maskers, keys = random_case(rng)
    header, data = build_safetensors(tensors, metadata)
    maskers_text = json.dumps(maskers)
    file_bytes = None
    extra = []
    if rng.random() < 0.3:  # still valid: edge sizes, big values, odd scalings
        ops = [rng.choice(["edge_sizes", "edge_sizes", "values", "flags", "none"])]
    else:
        ops = [rng.choice(["maskers", "maskers", "values", "shapes", "header", "header", "bytes", "flags",
                           "maskers", "values", "header", "input", "file_maskers"])
               for _ in range(rng.randint(1, 3))]
    for op in ops:
        if op == "edge_sizes":
            for m in maskers:
                for f in m:
                    if f in ("sink_size", "window_size", "heavy_size", "init_offset", "local_offset"):
                        m[f] = rng.choice([1, keys - 1, keys, keys + 1, 2 ** 31, 2 ** 63 - 1, 1.0, 0.999,
                                           1e-300, 1.5, 1e20, 1e300])
            maskers_text = json.dumps(maskers)
        elif op == "maskers":
            maskers_text = mutate_maskers(rng, maskers)
        elif op == "values":
            tensors = tensor_bytes_edit(rng, tensors)
            header, data = build_safetensors(tensors, metadata)
        elif op == "shapes":
            tensors = shape_edit(rng, tensors)
            header, data = build_safetensors(tensors, metadata)
        elif op == "header":
            file_bytes = pack(header_edit(rng, header), data)
        elif op == "bytes":
            b = bytearray(file_bytes or pack(json.dumps(header), data))
            kind = rng.choice(["flip", "flip", "truncate", "length", "append"])
            if kind == "flip":
                for _ in range(rng.randint(1, 8)):
                    i = rng.randrange(len(b))
                    b[i] ^= 1 << rng.randrange(8)
            elif kind == "truncate":
                b = b[:rng.randrange(len(b))]
            elif kind == "length":
                n = struct.unpack("<Q", bytes(b[:8]))[0]
                b[:8] = struct.pack("<Q", rng.choice([0, 1, n - 1, n + 1, n + 8, 2 ** 63, 2 ** 64 - 1, 100 << 20]))
            else:
                b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            file_bytes = bytes(b)
        elif op == "flags":
            extra += special_flags(rng, root)
    path = os.path.join(root, "input.safetensors")
    with open(path, "wb") as f:
        f.write(file_bytes if file_bytes is not None else pack(json.dumps(header), data))
    if "input" in ops:
        special = rng.choice(["dir", "empty", "/dev/null", "/dev/zero", "/dev/urandom", "missing"])
        if special == "dir":
            path = root
        elif special == "empty":
            open(path, "wb").close()
        elif special == "missing":
            path = os.path.join(root, "missing.safetensors")
        else:
            path = special
    args = ["attend", "--input", path, "--device", "cpu"]
    if metadata is None or rng.random() < 0.7 or "maskers" in ops:
        # An argument holds at most 128 KiB and no NUL byte: such lists go in a file.
        if ("file_maskers" in ops or "\x00" in maskers_text
                or len(maskers_text.encode("utf-8", "surrogatepass")) > 100000):
            mpath = os.path.join(root, "maskers.json")
            with open(mpath, "w", encoding="utf-8", errors="surrogatepass") as f:
                f.write(maskers_text)
            target = mpath
            if "file_maskers" in ops:
                target = rng.choice([mpath, mpath, root, "/dev/zero", "/dev/urandom", os.path.join(root, "none")])
            args += ["--maskers", "@" + target]
        else:
            args += ["--maskers", maskers_text]
    return args + extra, ops


def judge(proc):
    """None when the outcome is acceptable, else why not."""
    rc = proc.returncode
    if rc < 0:
        return "signal %d" % -rc
    if rc not in (0, 2):
        return "exit code %d" % rc
    err = proc.stderr.decode("utf-8", "replace")
    if rc == 2:
        lines = err.splitlines()
        if len(lines) != 1 or not err.endswith("\n"):
            return "exit 2 with %d lines on stderr" % len(lines)
        return None
    try:
        line = json.loads(proc.stdout)
    except ValueError:
        return "exit 0 without a JSON line"
    error, density = line.get("error"), line.get("density")
    if not isinstance(error, (int, float)) or not math.isfinite(error):
        return "exit 0 with error %r" % (error,)
    if not isinstance(density, (int, float)) or not 0 <= density <= 1:
        return "exit 0 with density %r" % (density,)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--only", type=int, default=None, help="run this case number only")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    failures_dir = os.path.join(a.workdir, "failures")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    counts = {"exit 0": 0, "exit 2": 0}
    failed = []
    start = time.monotonic()
    cases = [a.only] if a.only is not None else range(a.count)
    for i in cases:
        rng = random.Random(a.seed * 1000003 + i)
        root = os.path.join(a.workdir, "case-%d" % i)
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        args, ops = make_case(rng, i, root)
        cmd = [a.binary] + args
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=a.timeout,
                                  env=env, stdin=subprocess.DEVNULL)
            why = judge(proc)
            if why is None:
                counts["exit %d" % proc.returncode] += 1
            output = proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            why = "timeout after %gs" % a.timeout
            output = (e.stdout or b"") + (e.stderr or b"")
        if why is None:
            shutil.rmtree(root, ignore_errors=True)
            continue
        failed.append((i, why))
        keep = os.path.join(failures_dir, "case-%d" % i)
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(root, keep)
        shutil.rmtree(root, ignore_errors=True)
        # The saved command reads the saved files.
        saved = [x.replace(root, keep) for x in cmd]
        with open(os.path.join(keep, "repro.sh"), "w") as f:
            f.write("#!/bin/sh\n# %s; mutations: %s\n%s\n" % (why, ", ".join(ops), shlex.join(saved)))
        with open(os.path.join(keep, "output.txt"), "wb") as f:
            f.write(output[:100000])
        print("case %d FAILED: %s (mutations: %s); saved in %s" % (i, why, ", ".join(ops), keep),
              file=sys.stderr)
    elapsed = time.monotonic() - start
    print("fuzz_attend: %d cases (seed %d) in %.1fs: %d exit 0, %d exit 2, %d failed"
          % (len(cases), a.seed, elapsed, counts["exit 0"], counts["exit 2"], len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
