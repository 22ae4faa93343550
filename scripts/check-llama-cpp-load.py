#!/usr/bin/env python3
# Checks that llama.cpp loads and runs GGUF files hearth wrote (synthetic models), through llama-cpp-python.
# Usage: LLAMA_CPP_LIB_PATH=<dir with libllama.so> python3 scripts/check-llama-cpp-load.py FILE.gguf...
# (install: CMAKE_ARGS="-DLLAMA_BUILD=OFF" pip install llama-cpp-python==0.3.36, with libllama built from the same
# source package, or a plain `pip install llama-cpp-python==0.3.36`, which compiles it).
# Each file: load, decode a prompt in one batch (low-level API), generate 8 greedy tokens, print one line.
import sys, ctypes, llama_cpp as L
L.llama_backend_init()
for path in sys.argv[1:]:
    mp = L.llama_model_default_params()
    m = L.llama_model_load_from_file(path.encode(), mp)
    if not m:
        print(f"FAIL load {path}"); continue
    cp = L.llama_context_default_params(); cp.n_ctx = 256; cp.n_threads = 2; cp.n_threads_batch = 2
    ctx = L.llama_init_from_model(m, cp)
    vocab = L.llama_model_get_vocab(m)
    text = b"Hello, my name is"
    toks = (L.llama_token * 64)()
    n = L.llama_tokenize(vocab, text, len(text), toks, 64, True, True)
    batch = L.llama_batch_get_one(toks, n)
    assert L.llama_decode(ctx, batch) == 0
    nv = L.llama_vocab_n_tokens(vocab)
    out = []
    for _ in range(8):
        logits = L.llama_get_logits_ith(ctx, -1)
        best = max(range(nv), key=lambda i: logits[i])
        out.append(best)
        one = (L.llama_token * 1)(best)
        assert L.llama_decode(ctx, L.llama_batch_get_one(one, 1)) == 0
    desc = ctypes.create_string_buffer(256); L.llama_model_desc(m, desc, 256)
    print(f"OK {path.split('/')[-1]}: {desc.value.decode()}, n_params={L.llama_model_n_params(m)}, prompt {n} tokens, greedy {out}")
    L.llama_free(ctx); L.llama_model_free(m)
