#!/usr/bin/env python3
"""Generate golden cases for masktune from the reference implementation.

Runs the maskers of sparse-attention-hub (its `research_attention` package)
on CPU in float32 and writes one safetensors file per case, plus the channel
JSON files of `double_sparsity_top_k` cases and a `manifest.json`, in the
format of ../shared/golden (see its README.md).

Only the deterministic maskers are covered: sink, local, oracle_top_k,
oracle_top_p, quest_top_k, double_sparsity_top_k, hash_attention_top_k.

Usage (needs torch and numpy; `ray` is not needed, it is stubbed):

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch numpy
    mkdir -p /tmp/sah && git -C <mirror of xAlg-ai/sparse-attention-hub> archive HEAD \\
        | tar -x -C /tmp/sah
    /tmp/venv/bin/python scripts/make_golden.py --ref /tmp/sah --out /tmp/extra_golden --seed 1234

The reference is imported module by module (package __init__ files are not
run, so its heavy optional dependencies are not needed); the masker loop and
the masked attention are the reference's own ResearchAttention.custom_attention.
"""

import argparse
import importlib
import json
import math
import os
import struct
import sys
import types

import numpy as np
import torch

PKG = "sparse_attention_hub"
SA = PKG + ".sparse_attention"
MASKERS = SA + ".research_attention.maskers"
FIXED = MASKERS + ".fixed.implementations"


# --------------------------------------------------------------------------
# Importing the reference without its package __init__ files
# --------------------------------------------------------------------------

def import_reference(ref_root):
    """Registers the reference's packages as bare modules (their __init__ files
    import optional dependencies such as transformers, ray, matplotlib) and
    imports the modules the maskers need."""
    ref_root = os.path.abspath(ref_root)
    if not os.path.isdir(os.path.join(ref_root, PKG, "sparse_attention")):
        sys.exit(f"--ref {ref_root}: no {PKG}/sparse_attention there")

    # `from ray import tune` is only used for default search spaces.
    if "ray" not in sys.modules:
        try:
            importlib.import_module("ray.tune")
        except ImportError:
            ray = types.ModuleType("ray")
            tune = types.ModuleType("ray.tune")
            tune.grid_search = lambda values: {"grid_search": values}
            ray.tune = tune
            sys.modules["ray"] = ray
            sys.modules["ray.tune"] = tune

    packages = [
        PKG,
        PKG + ".metric_logging",
        SA,
        SA + ".utils",
        SA + ".research_attention",
        MASKERS,
        MASKERS + ".fixed",
        FIXED,
        FIXED + ".utils",
        MASKERS + ".sampling",
    ]
    for name in packages:
        if name in sys.modules:
            continue
        mod = types.ModuleType(name)
        mod.__path__ = [os.path.join(ref_root, *name.split("."))]
        mod.__package__ = name
        sys.modules[name] = mod

    ref = types.SimpleNamespace()
    ref.mask = importlib.import_module(SA + ".utils.mask")
    ref.attn_utils = importlib.import_module(SA + ".utils.mask_attention_utils")
    ref.ra_base = importlib.import_module(SA + ".research_attention.base")
    ref.basic = importlib.import_module(FIXED + ".basic_fixed")
    ref.topk = importlib.import_module(FIXED + ".oracle_top_k")
    ref.topp = importlib.import_module(FIXED + ".oracle_top_p")
    ref.quest = importlib.import_module(FIXED + ".quest_top_k")
    ref.ds = importlib.import_module(FIXED + ".double_sparsity_top_k")
    ref.hat = importlib.import_module(FIXED + ".hashattention_top_k")
    return ref


def make_masker(ref, spec, out_dir, hat_weights):
    """The reference masker object for one masker entry of the case metadata."""
    t = spec["type"]
    if t == "sink":
        cfg = ref.basic.SinkMaskerConfig(sink_size=spec["sink_size"])
        return ref.basic.SinkMasker(cfg)
    if t == "local":
        cfg = ref.basic.LocalMaskerConfig(window_size=spec["window_size"])
        return ref.basic.LocalMasker(cfg)
    if t == "oracle_top_k":
        cfg = ref.topk.OracleTopKConfig(heavy_size=spec["heavy_size"])
        return ref.topk.OracleTopK(cfg)
    if t == "oracle_top_p":
        cfg = ref.topp.OracleTopPMaskerConfig(top_p=spec["top_p"])
        return ref.topp.OracleTopPMasker(cfg)
    if t == "quest_top_k":
        cfg = ref.quest.QuestTopKMaskerConfig(
            heavy_size=spec["heavy_size"],
            page_size=spec["page_size"],
            label_bits=spec["label_bits"],
        )
        return ref.quest.QuestTopKMasker(cfg)
    if t == "double_sparsity_top_k":
        cfg = ref.ds.DoubleSparsityTopKMaskerConfig(
            heavy_size=spec["heavy_size"],
            sorted_channel_file=os.path.join(out_dir, spec["sorted_channel_file"]),
            group_factor=spec["group_factor"],
            label_bits=spec["label_bits"],
            channel_selection=spec["channel_selection"],
        )
        return ref.ds.DoubleSparsityTopKMasker(cfg)
    if t == "hash_attention_top_k":
        cfg = ref.hat.HashAttentionTopKMaskerConfig(
            heavy_size=spec["heavy_size"],
            hat_bits=spec["hat_bits"],
            hat_mlp_layers=spec["hat_mlp_layers"],
            hat_mlp_hidden_size=spec["hat_mlp_hidden_size"],
            hat_mlp_activation=spec["hat_mlp_activation"],
            hat_weights={0: hat_weights},
        )
        return ref.hat.HashAttentionTopKMasker(cfg)
    raise ValueError(f"masker type {t!r} is not covered by this generator")


# Maskers whose ranked scores go into expected_scores.
SCORED = ("double_sparsity_top_k", "hash_attention_top_k")


def run_reference(ref, q, k, v, attention_mask, scaling, maskers, out_dir, hat_weights):
    """Runs ResearchAttention.custom_attention with the given masker list.

    Returns (final Mask, output (B,H,Q,D), dense output (B,H,Q,D), ranked
    scores of the double-sparsity / hash-attention masker or None)."""
    objs = [make_masker(ref, m, out_dir, hat_weights) for m in maskers]

    # Record the tensor each scored masker hands to torch.topk: the scores it
    # ranks, with the keys of the previous mask already excluded.
    recorded = {}
    current = {"type": None}
    real_topk = torch.topk

    def topk_spy(input, *args, **kwargs):
        if current["type"] in SCORED:
            recorded["scores"] = input.detach().clone()
        return real_topk(input, *args, **kwargs)

    for obj, spec in zip(objs, maskers):
        real_add = obj.add_mask

        def add_mask(*args, _real=real_add, _type=spec["type"], **kwargs):
            current["type"] = _type
            try:
                return _real(*args, **kwargs)
            finally:
                current["type"] = None

        obj.add_mask = add_mask

    # Capture the final mask that custom_attention hands to the attention.
    captured = {}
    real_gmao = ref.ra_base.get_masked_attention_output

    def gmao_spy(*args, **kwargs):
        captured["mask"] = kwargs["sparse_attention_mask"]
        return real_gmao(*args, **kwargs)

    cfg = ref.ra_base.ResearchAttentionConfig(masker_configs=[o.config for o in objs])
    attention = ref.ra_base.ResearchAttention(cfg, objs)
    module = torch.nn.Module()
    module.eval()

    torch.topk = topk_spy
    ref.ra_base.get_masked_attention_output = gmao_spy
    try:
        with torch.no_grad():
            out, _ = attention.custom_attention(
                module=module,
                queries=q,
                keys=k,
                values=v,
                attention_mask=attention_mask,
                scaling=scaling,
                dropout=0.0,
                sparse_meta_data={},
                layer_idx=0,
            )
            dense, _ = ref.attn_utils.get_true_attention_output(
                module, q, k, v, attention_mask, scaling, 0.0
            )
    finally:
        torch.topk = real_topk
        ref.ra_base.get_masked_attention_output = real_gmao

    # The reference returns (B, Q, H, D); the golden files hold (B, H, Q, D).
    out = out.transpose(1, 2).contiguous()
    dense = dense.transpose(1, 2).contiguous()
    return captured["mask"], out, dense, recorded.get("scores")


# --------------------------------------------------------------------------
# safetensors writer in the layout of the existing golden files
# --------------------------------------------------------------------------

def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, float32 ndarray), written in this order."""
    header = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr, dtype="<f4")
        data = arr.tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype="<f4").reshape(info["shape"])
    return out, meta


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------

def S(B, H, Hkv, Q, N, D):
    return {"batch": B, "heads": H, "kv_heads": Hkv, "queries": Q, "keys": N, "head_dim": D}


# Shapes (batch, heads, kv_heads, queries, keys, head_dim)
GQA_Q1 = S(1, 8, 2, 1, 97, 32)      # grouped heads, odd key count
MQA_B2_Q3 = S(2, 8, 1, 3, 333, 64)  # one kv head, batch 2, three queries
MHA_Q8 = S(1, 4, 4, 8, 1000, 32)    # eight queries, 1000 keys
GQA_B2_Q1 = S(2, 6, 3, 1, 257, 16)  # batch 2, groups of 2
GQA_Q8_97 = S(1, 8, 2, 8, 97, 64)   # eight queries over 97 keys
SMALL_Q3 = S(1, 2, 1, 3, 20, 8)     # tiny, three queries
SMALL_Q8 = S(1, 4, 2, 8, 40, 16)    # small, eight queries
MQA_Q1 = S(1, 8, 1, 1, 333, 32)


def sink(n):
    return {"type": "sink", "sink_size": n}


def local(n):
    return {"type": "local", "window_size": n}


def topk(n):
    return {"type": "oracle_top_k", "heavy_size": n}


def topp(p):
    return {"type": "oracle_top_p", "top_p": float(p)}


def quest(n, page, bits=16):
    return {"type": "quest_top_k", "heavy_size": n, "page_size": page, "label_bits": bits}


def ds(n, gf, bits):
    # sorted_channel_file is filled in per case
    return {"type": "double_sparsity_top_k", "heavy_size": n, "group_factor": gf,
            "label_bits": bits, "sorted_channel_file": None, "channel_selection": "qk_proj"}


def hat(n, bits, layers, hidden, act):
    # hat_weight_file is filled in per case (the case file itself)
    return {"type": "hash_attention_top_k", "heavy_size": n, "hat_bits": bits,
            "hat_mlp_layers": layers, "hat_mlp_hidden_size": hidden,
            "hat_mlp_activation": act, "hat_weight_file": None}


# (name, shape, causal, maskers). causal: the case has an additive causal
# attention_mask (only meaningful with several queries); a case with several
# queries and causal False has no attention_mask at all.
CASES = [
    # --- sink / local --------------------------------------------------------
    ("x_sink_local_gqa", GQA_Q1, False, [sink(3), local(10)]),
    ("x_sink_local_frac_b2_q3", MQA_B2_Q3, True, [sink(0.01), local(0.03)]),
    ("x_sink_local_q8", MHA_Q8, True, [sink(16), local(64)]),
    ("x_local1_q8", MHA_Q8, True, [local(1)]),
    ("x_sink1_b2", GQA_B2_Q1, False, [sink(1)]),
    ("x_sink_eq_n", GQA_Q1, False, [sink(97), local(5)]),
    ("x_sink_n_minus_1", GQA_Q1, False, [sink(96)]),
    ("x_local_full_edge_q3", MQA_B2_Q3, True, [local(330)]),
    ("x_local_just_under_q3", MQA_B2_Q3, True, [local(329)]),
    ("x_local_frac1_q3", SMALL_Q3, True, [local(1.0)]),
    ("x_local_nomask_q3", S(1, 4, 2, 3, 50, 16), False, [local(8)]),
    ("x_local_then_sink_q8", GQA_Q8_97, True, [local(12), sink(5)]),
    # --- oracle_top_k --------------------------------------------------------
    ("x_topk_int_q8", MHA_Q8, True, [topk(50)]),
    ("x_topk_stack_b2_q3", MQA_B2_Q3, True, [sink(4), local(16), topk(0.05)]),
    ("x_topk_frac_gqa_b2", GQA_B2_Q1, False, [topk(0.1)]),
    ("x_topk_eq_n", GQA_Q1, False, [topk(97)]),
    ("x_topk_over_n_stack", GQA_Q1, False, [sink(2), topk(200)]),
    ("x_topk_one", GQA_Q1, False, [topk(1)]),
    ("x_topk_frac1", GQA_Q1, False, [topk(1.0)]),
    ("x_topk_prev_fill_q8", SMALL_Q8, True, [sink(10), local(10), topk(15)]),
    ("x_topk_masked_fill_q8", SMALL_Q8, True, [topk(36)]),
    # --- oracle_top_p --------------------------------------------------------
    ("x_topp_q8", MHA_Q8, True, [topp(0.9)]),
    ("x_topp_stack_b2_q3", MQA_B2_Q3, True, [sink(2), local(4), topp(0.5)]),
    ("x_topp_gqa_099", GQA_Q1, False, [topp(0.99)]),
    ("x_topp_one", GQA_Q1, False, [sink(3), topp(1.0)]),
    ("x_topp_zero", GQA_B2_Q1, False, [topp(0.0)]),
    ("x_topp_covered_q8", SMALL_Q8, True, [sink(16), local(16), topp(0.7)]),
    # --- quest_top_k ---------------------------------------------------------
    ("x_quest_ps7_gqa", GQA_Q1, False, [quest(0.2, 7)]),
    ("x_quest_lb4_b2_q3", MQA_B2_Q3, True, [sink(4), local(16), quest(32, 10, 4)]),
    ("x_quest_q8", MHA_Q8, True, [quest(0.05, 16)]),
    ("x_quest_lb8_b2", GQA_B2_Q1, False, [quest(0.1, 32, 8)]),
    ("x_quest_min3_pages", GQA_Q1, False, [quest(5, 16)]),
    ("x_quest_page_gt_n", GQA_Q1, False, [quest(10, 128)]),
    ("x_quest_eq_n", GQA_Q1, False, [quest(97, 8)]),
    ("x_quest_lb2_q3", SMALL_Q3, True, [quest(6, 3, 2)]),
    ("x_quest_lb4_q8_97", GQA_Q8_97, True, [sink(2), local(4), quest(0.3, 9, 4)]),
    # --- double_sparsity_top_k -------------------------------------------
    ("x_ds_lb16_gqa", GQA_Q1, False, [ds(10, 4, 16)]),
    ("x_ds_lb8_b2_q3", MQA_B2_Q3, True, [sink(4), local(16), ds(0.05, 8, 8)]),
    ("x_ds_lb4_q8", MHA_Q8, True, [ds(40, 4, 4)]),
    ("x_ds_one_channel", GQA_B2_Q1, False, [ds(0.1, 16, 4)]),
    ("x_ds_full_edge_q3", MQA_B2_Q3, True, [ds(330, 8, 8)]),
    ("x_ds_just_under_q3", MQA_B2_Q3, True, [ds(329, 8, 8)]),
    ("x_ds_mqa_lb16", MQA_Q1, False, [sink(8), local(8), ds(0.1, 2, 16)]),
    ("x_ds_prev_fill_q8", GQA_Q8_97, True, [sink(4), local(8), ds(85, 4, 8)]),
    # --- hash_attention_top_k ----------------------------------------------
    ("x_hat_relu_gqa", GQA_Q1, False, [hat(10, 16, 2, 32, "relu")]),
    ("x_hat_silu_b2_q3", MQA_B2_Q3, True, [sink(4), local(16), hat(0.05, 32, 3, 32, "silu")]),
    ("x_hat_gelu_q8", MHA_Q8, True, [hat(0.05, 8, 1, 16, "gelu")]),
    ("x_hat_gelu3_b2", GQA_B2_Q1, False, [hat(0.1, 16, 3, 24, "gelu")]),
    ("x_hat_tanh_b2", GQA_B2_Q1, False, [sink(2), hat(0.1, 16, 3, 16, "tanh")]),
    ("x_hat_eq_n", GQA_Q1, False, [hat(97, 16, 2, 16, "relu")]),
    # --- stacks --------------------------------------------------------------
    ("x_stack_topk_topp_q8", SMALL_Q8, True, [sink(2), local(4), topk(4), topp(0.6)]),
    ("x_stack_quest_topk_b2_q3", MQA_B2_Q3, True, [sink(4), local(8), quest(24, 12), topk(8)]),
    ("x_stack_topk_then_sink", GQA_Q1, False, [topk(5), sink(4)]),
    ("x_stack_topp_then_topk_q3", SMALL_Q3, True, [topp(0.5), topk(3)]),
    ("x_stack_quest_then_hat", GQA_Q1, False, [quest(20, 10), hat(8, 16, 2, 16, "silu")]),
    ("x_stack_quest_full_then_ds", GQA_Q1, False, [quest(1.0, 16), ds(10, 4, 16)]),
]


# Cases whose reference mask depends on how torch.topk orders tied scores
# (masktune takes the lower key index first; see ../shared/golden/README.md):
# - fewer new allowed keys than heavy_size, so the top-k reaches scores at
#   -inf (keys after the query's position, and for double sparsity also the
#   previous mask's keys): which of those keys the reference keeps is torch's
#   accident, and picking a previous key adds nothing, so even the kept count
#   per row can differ;
# - HashAttention's integer signature scores: dozens of keys share the
#   threshold score, and the output (so the error) depends on which are kept.
# --skip-tie-prone leaves them out.
TIE_PRONE = {
    "x_topk_masked_fill_q8",
    "x_ds_prev_fill_q8",
    "x_hat_relu_gqa",
    "x_hat_silu_b2_q3",
    "x_hat_gelu_q8",
    "x_hat_gelu3_b2",
    "x_hat_tanh_b2",
    "x_stack_quest_then_hat",
}


def causal_mask(B, Q, N):
    m = torch.zeros(B, 1, Q, N, dtype=torch.float32)
    for i in range(Q):
        m[:, :, i, N - Q + i + 1 :] = float("-inf")
    return m


def hat_weights_for(gen, spec, H, D):
    """Random MLP weights in the reference's layout: lists of (H, in, out)
    matrices and (H, out) biases."""
    layers = spec["hat_mlp_layers"]
    dims = [D] + [spec["hat_mlp_hidden_size"]] * (layers - 1) + [spec["hat_bits"]]
    w = {"query_matrix": [], "query_bias": [], "key_matrix": [], "key_bias": []}
    for kind in ("query", "key"):
        for i in range(layers):
            w[f"{kind}_matrix"].append(
                torch.randn(H, dims[i], dims[i + 1], generator=gen) / math.sqrt(dims[i]))
            w[f"{kind}_bias"].append(0.1 * torch.randn(H, dims[i + 1], generator=gen))
    return w


def make_case(ref, out_dir, index, seed, name, shape, causal, maskers):
    gen = torch.Generator().manual_seed(seed * 1000 + index)
    B, H, Hkv, Q, N, D = (shape[x] for x in ("batch", "heads", "kv_heads", "queries", "keys", "head_dim"))
    q = torch.randn(B, H, Q, D, generator=gen)
    k = torch.randn(B, Hkv, N, D, generator=gen)
    v = torch.randn(B, Hkv, N, D, generator=gen)
    # A few strongly attended keys per kv head, so top-k / top-p have structure.
    heavy = torch.randint(0, N, (B, Hkv, max(1, N // 20)), generator=gen)
    for b in range(B):
        for h in range(Hkv):
            k[b, h, heavy[b, h]] *= 2.0
    attention_mask = causal_mask(B, Q, N) if causal else None
    scaling = 1.0 / math.sqrt(D)

    maskers = [dict(m) for m in maskers]
    hat_weights = None
    for m in maskers:
        if m["type"] == "double_sparsity_top_k":
            m["sorted_channel_file"] = f"{name}.channels.json"
            channels = [torch.randperm(D, generator=gen).tolist() for _ in range(H)]
            with open(os.path.join(out_dir, m["sorted_channel_file"]), "w") as f:
                json.dump({"model.layers.0.self_attn.qk_proj": channels}, f)
        if m["type"] == "hash_attention_top_k":
            m["hat_weight_file"] = f"{name}.safetensors"
            hat_weights = hat_weights_for(gen, m, H, D)

    mask, out, dense, scores = run_reference(
        ref, q, k, v, attention_mask, scaling, maskers, out_dir, hat_weights)

    density = float(mask.get_density())
    error = float(torch.norm(dense - out) / torch.norm(dense))
    meta = {
        "name": name,
        "maskers": maskers,
        "scaling": scaling,
        "causal": bool(causal),
        "expected_density": density,
        "expected_error": error,
        "shape": shape,
    }
    tensors = [
        ("q", q.numpy()),
        ("k", k.numpy()),
        ("v", v.numpy()),
        ("expected_mask", mask.get_dense_mask().numpy()),
        ("expected_out", out.numpy()),
        ("dense_out", dense.numpy()),
    ]
    if attention_mask is not None:
        tensors.append(("attention_mask", attention_mask.numpy()))
    if scores is not None:
        tensors.append(("expected_scores", scores.numpy()))
    if hat_weights is not None:
        for key in ("query_matrix", "query_bias", "key_matrix", "key_bias"):
            for i, t in enumerate(hat_weights[key]):
                tensors.append((f"layer0.{key}.{i}", t.numpy()))
    file = f"{name}.safetensors"
    write_safetensors(os.path.join(out_dir, file), tensors, {"case": json.dumps(meta)})
    return {"name": name, "file": file, "density": density, "error": error}


# --------------------------------------------------------------------------
# Recomputing existing cases (a check of this script against the golden set)
# --------------------------------------------------------------------------

def recompute(ref, path):
    """Re-runs the reference on an existing case and prints how its stored
    mask and output compare."""
    t, meta = read_safetensors(path)
    case = json.loads(meta["case"])
    if any(m["type"] not in ("sink", "local", "oracle_top_k", "oracle_top_p", "quest_top_k",
                             "double_sparsity_top_k", "hash_attention_top_k")
           for m in case["maskers"]):
        print(f"{case['name']}: skipped (maskers not covered)")
        return True
    d = os.path.dirname(os.path.abspath(path))
    hat_weights = None
    for m in case["maskers"]:
        if m["type"] == "hash_attention_top_k":
            n = m["hat_mlp_layers"]
            hat_weights = {key: [torch.from_numpy(t[f"layer0.{key}.{i}"].copy()) for i in range(n)]
                           for key in ("query_matrix", "query_bias", "key_matrix", "key_bias")}
    am = torch.from_numpy(t["attention_mask"].copy()) if "attention_mask" in t else None
    mask, out, dense, scores = run_reference(
        ref, torch.from_numpy(t["q"].copy()), torch.from_numpy(t["k"].copy()),
        torch.from_numpy(t["v"].copy()), am, case["scaling"], case["maskers"], d, hat_weights)
    dm = mask.get_dense_mask().numpy()
    same_mask = np.array_equal(dm != 0, t["expected_mask"] != 0) and np.abs(dm - t["expected_mask"]).max() <= 1e-6
    out_diff = float(np.abs(out.numpy() - t["expected_out"]).max())
    dense_diff = float(np.abs(dense.numpy() - t["dense_out"]).max())
    ok = same_mask and out_diff <= 1e-5 and dense_diff <= 1e-5 and \
        abs(mask.get_density() - case["expected_density"]) < 1e-7
    print(f"{case['name']}: mask {'same' if same_mask else 'DIFFERS'}, "
          f"out diff {out_diff:.2e}, dense diff {dense_diff:.2e}, density "
          f"{mask.get_density()} vs {case['expected_density']}" + ("" if ok else "  <-- MISMATCH"))
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True, help="exported checkout of sparse-attention-hub")
    p.add_argument("--out", help="output folder for the new cases")
    p.add_argument("--seed", type=int, default=1234, help="seed of the random inputs")
    p.add_argument("--only", nargs="*", help="generate only these case names")
    p.add_argument("--skip-tie-prone", action="store_true",
                   help="leave out the cases whose reference mask depends on torch's order "
                        "among tied top-k scores (see TIE_PRONE)")
    p.add_argument("--recompute", nargs="*", metavar="FILE",
                   help="instead of generating, re-run the reference on existing case files "
                        "and report whether their stored mask and outputs are reproduced")
    args = p.parse_args()

    torch.set_num_threads(1)
    ref = import_reference(args.ref)

    if args.recompute is not None:
        results = [recompute(ref, f) for f in args.recompute]
        sys.exit(0 if all(results) else 1)
    if not args.out:
        p.error("--out is required")

    os.makedirs(args.out, exist_ok=True)
    manifest = []
    for index, (name, shape, causal, maskers) in enumerate(CASES):
        if args.only and name not in args.only:
            continue
        if args.skip_tie_prone and name in TIE_PRONE:
            continue
        entry = make_case(ref, args.out, index, args.seed, name, shape, causal, maskers)
        manifest.append(entry)
        print(f"{name}: density {entry['density']:.6g}, error {entry['error']:.6g}", flush=True)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{len(manifest)} cases written to {args.out}")


if __name__ == "__main__":
    main()
