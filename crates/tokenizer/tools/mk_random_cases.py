#!/usr/bin/env python3
"""Regenerates tests/fixtures/tokenizer/llama_cpp_random_cases.jsonl with llama.cpp's ids.

usage: mk_random_cases.py OUT.jsonl   (needs tools/difftok built, and the fetched test assets)
"""
import json
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
home = os.environ.get("HEARTH_HOME", os.path.expanduser("~/.cache/hearth"))
vocab = home + "/test-assets/llama.cpp-0.3.36/vocab/ggml-vocab-%s.gguf"
gemma = home + "/models/gemma-3-270m-q4_k_m.gguf"
specials = ["<|endoftext|>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>",
            "<|eot_id|>", "<|end|>", "<|user|>", "<BOS_TOKEN>", "<|START_OF_TURN_TOKEN|>", "<PAD>",
            "<｜begin▁of▁sentence｜>", "<fim_prefix>", "<|assistant|>", "[PAD151646]", "<|padding|>", "ø",
            "<0x0A>", "▁", "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<b>", "[multimodal]",
            "<start_of_image>"]
families = ["gemma-3", "llama-spm", "phi-3", "llama-bpe", "qwen2", "gpt-2", "deepseek-llm", "command-r",
            "deepseek-coder", "starcoder", "falcon", "mpt", "refact", "qwen35"]
out = []
for k, family in enumerate(families):
    path = gemma if family == "gemma-3" else vocab % family
    texts = []
    for mode, seed, n in [("words", 100 + k, 9), ("soup", 200 + k, 4)]:
        env = dict(os.environ, MODE=mode)
        raw = subprocess.run(["python3", here + "/gen_texts.py", str(seed), str(n)] + specials,
                             capture_output=True, env=env, check=True).stdout.decode()
        texts += raw.split("\x01SEP\x01\n")[:n]
    texts = [t for t in texts if len(t) <= 200]
    tmp = "/tmp/mk_random_cases.txt"
    open(tmp, "w").write("\x01SEP\x01\n".join(texts))
    res = subprocess.run([here + "/difftok", path, tmp], capture_output=True, check=True).stdout.decode().split("\n")
    for i, t in enumerate(texts):
        ids = {}
        for line in res[i * 5:i * 5 + 4]:
            key, _, rest = line.partition(":")
            ids[key] = [int(x) for x in rest.split()]
        out.append({"vocab": family, "text": t, "ids": ids})
with open(sys.argv[1], "w") as f:
    for o in out:
        f.write(json.dumps(o, ensure_ascii=False, separators=(",", ":")) + "\n")
print(len(out), "cases")
