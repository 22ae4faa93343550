#!/usr/bin/env python3
"""llama.cpp reference outputs for a GGUF file, in the format of tests/fixtures/synthetic/*.json.

Usage: python3 scripts/make-reference.py MODEL.gguf --prompts FIXTURE.json -o OUT.json [--threads 2]

Runs llama.cpp through llama-cpp-python's low-level API (install as bench/compare says: llama-cpp-python
0.3.36 built natively) twice, with flash attention on and off, on the prompts of an existing fixture (its `logits`
and `greedy` prompt texts, re-tokenized with the model's own vocabulary):
- `logits`: each prompt decoded in one batch with every position's logits; per position the top-10 ids and logits
  and the logsumexp (`positions`, and `positions_fa_off`);
- `greedy`: `n_predict` greedy tokens after the prompt (stopping at an end-of-generation token), with the gap between
  the two best logits at each step (`output_ids`, `step_top2_gap`, and the `_fa_off` twins).
The tests read only ids and logits, never the texts. hearth's own synthetic files (`hearth synth`) need this for the
architectures the shared fixtures do not cover (Mixtral-style experts in llama files).
"""
import argparse, ctypes, hashlib, json, math, os, sys

import llama_cpp as L

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--prompts", required=True, help="a fixture JSON whose prompts to use")
ap.add_argument("-o", "--output", required=True)
ap.add_argument("--threads", type=int, default=2)
args = ap.parse_args()

src = json.load(open(args.prompts))
L.llama_backend_init()
mp = L.llama_model_default_params()
model = L.llama_model_load_from_file(args.model.encode(), mp)
if not model:
    sys.exit(f"llama.cpp could not load {args.model}")
vocab = L.llama_model_get_vocab(model)
n_vocab = L.llama_vocab_n_tokens(vocab)
N_CTX = 512


def context(flash):
    cp = L.llama_context_default_params()
    cp.n_ctx = N_CTX
    cp.n_batch = N_CTX
    cp.n_ubatch = N_CTX
    cp.n_threads = args.threads
    cp.n_threads_batch = args.threads
    cp.flash_attn_type = 1 if flash else 0
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        sys.exit("llama.cpp could not make a context")
    return ctx


def tokenize(text):
    raw = text.encode()
    size = len(raw) + 8
    while True:
        buf = (L.llama_token * size)()
        n = L.llama_tokenize(vocab, raw, len(raw), buf, len(buf), True, True)
        if n >= 0:
            return list(buf[:n])
        size = -n  # the room it needs


def decode(ctx, ids, pos0, all_logits):
    batch = L.llama_batch_init(len(ids), 0, 1)
    for i, t in enumerate(ids):
        batch.token[i] = t
        batch.pos[i] = pos0 + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = 1 if all_logits or i == len(ids) - 1 else 0
    batch.n_tokens = len(ids)
    if L.llama_decode(ctx, batch) != 0:
        sys.exit("llama_decode failed")
    L.llama_batch_free(batch)


def row(ctx, i):
    p = L.llama_get_logits_ith(ctx, i)
    return [p[j] for j in range(n_vocab)]


def top10(v):
    order = sorted(range(len(v)), key=lambda j: (-v[j], j))[:10]
    m = max(v)
    lse = m + math.log(sum(math.exp(x - m) for x in v))
    return {"top10_ids": order, "top10_logits": [round(v[j], 4) for j in order], "logsumexp": round(lse, 4)}


def clear(ctx):
    L.llama_memory_clear(L.llama_get_memory(ctx), True)


def run(flash):
    ctx = context(flash)
    logits, greedy = [], []
    for case in src["logits"]:
        ids = tokenize(case["prompt"])
        clear(ctx)
        decode(ctx, ids, 0, True)
        logits.append((case["prompt"], ids, [top10(row(ctx, i)) for i in range(len(ids))]))
    for case in src["greedy"]:
        ids = tokenize(case["prompt"])
        clear(ctx)
        decode(ctx, ids, 0, False)
        out, gaps, stop = [], [], "length"
        for step in range(case["n_predict"]):
            v = row(ctx, -1)
            best = sorted(range(n_vocab), key=lambda j: (-v[j], j))[:2]
            gaps.append(round(v[best[0]] - v[best[1]], 4))
            if L.llama_vocab_is_eog(vocab, best[0]):
                stop = "eog"
                break
            out.append(best[0])
            decode(ctx, [best[0]], len(ids) + step, False)
        greedy.append((case["prompt"], ids, case["n_predict"], out, gaps, stop))
    L.llama_free(ctx)
    return logits, greedy


on_l, on_g = run(True)
off_l, off_g = run(False)
data = open(args.model, "rb").read()
info = ctypes.create_string_buffer(256)
L.llama_model_desc(model, info, 256)
out = {
    "model": os.path.basename(args.model),
    "model_sha256": hashlib.sha256(data).hexdigest(),
    "model_bytes": len(data),
    "description": info.value.decode(),
    "reference": f"llama.cpp via llama-cpp-python {L.__version__} (low-level API), scripts/make-reference.py",
    "system_info": L.llama_print_system_info().decode().strip(),
    "settings": {"n_ctx": N_CTX, "n_threads": args.threads, "n_batch": N_CTX, "n_ubatch": N_CTX, "add_bos": True,
                 "parse_special": True, "kv_cache": "f16",
                 "fa_off_fields": "keys ending in _fa_off: same run with flash_attn off"},
    "logits": [
        {"prompt": p, "input_ids": ids, "positions": pos, "positions_fa_off": off[2]}
        for (p, ids, pos), off in zip(on_l, off_l)
    ],
    "greedy": [
        {"prompt": p, "prompt_ids": ids, "n_predict": n, "output_ids": o, "step_top2_gap": g,
         "min_top2_gap": min(g) if g else None, "stop_reason": s,
         "output_ids_fa_off": off[3], "step_top2_gap_fa_off": off[4], "stop_reason_fa_off": off[5]}
        for (p, ids, n, o, g, s), off in zip(on_g, off_g)
    ],
}
json.dump(out, open(args.output, "w"), indent=1)
print(f"{args.output}: {len(out['logits'])} logit prompts, {len(out['greedy'])} greedy runs ({out['description']})")
