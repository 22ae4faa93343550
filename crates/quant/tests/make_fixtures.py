#!/usr/bin/env python3
"""Writes the dequantization fixtures for hearth-quant into tests/fixtures/quant/.

For each fixture: `<name>.bin` holds raw ggml blocks (rows of `cols` elements) and `<name>.f32`
the little-endian float32 values gguf-py's `gguf.quants.dequantize` gives for them. Fixtures made
by gguf-py's own quantizers also name their float input (`quant_source.f32`, shared), so the Rust
test checks our quantizers against gguf-py's byte for byte. `index.json` lists them all.

Sources:
  - real tensors (a few rows) from the default model for the types it contains
    (Q4_K, Q6_K, Q5_0, Q8_0, F32);
  - gguf-py's quantizers for F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0;
  - random bytes with finite f16 scales for the types gguf-py cannot quantize
    (Q2_K, Q3_K, Q5_K, IQ4_NL, IQ4_XS).

Usage: python crates/quant/tests/make_fixtures.py [--model PATH] [--out DIR]
(needs `pip install gguf numpy`; deterministic: rerunning rewrites identical files).
"""

import argparse
import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

REPO = Path(__file__).resolve().parents[3]
DEFAULT_MODEL = Path.home() / ".cache/hearth/models/gemma-3-270m-q4_k_m.gguf"

# (fixture name, tensor, first row, row count) taken from the model as stored.
MODEL_ROWS = [
    ("model_q4_k", "blk.0.attn_output.weight", 0, 3),
    ("model_q6_k", "blk.0.ffn_down.weight", 5, 2),
    ("model_q5_0", "blk.0.attn_q.weight", 10, 4),
    ("model_q8_0", "blk.0.attn_v.weight", 3, 3),
    ("model_f32", "blk.0.attn_norm.weight", 0, 1),
]

# Types gguf-py quantizes; the input is real weights (dequantized rows of the model) plus
# edge cases: an all-zero block, a block of equal values, a tiny-magnitude block, an outlier.
GGUF_PY_QUANT = [
    ("gguf_f16", T.F16),
    ("gguf_bf16", T.BF16),
    ("gguf_q4_0", T.Q4_0),
    ("gguf_q4_1", T.Q4_1),
    ("gguf_q5_0", T.Q5_0),
    ("gguf_q5_1", T.Q5_1),
    ("gguf_q8_0", T.Q8_0),
]

# Types gguf-py cannot quantize: random blocks, with every f16 scale field (byte offsets)
# overwritten by a finite value of moderate size.
RANDOM_BLOCKS = [
    ("random_q2_k", T.Q2_K, [80, 82]),
    ("random_q3_k", T.Q3_K, [108]),
    ("random_q5_k", T.Q5_K, [0, 2]),
    ("random_iq4_nl", T.IQ4_NL, [0]),
    ("random_iq4_xs", T.IQ4_XS, [0]),
]


def tensor_rows(reader, name, first, count):
    t = next(t for t in reader.tensors if t.name == name)
    cols = int(t.shape[0])
    data = np.asarray(t.data)
    if t.tensor_type == T.F32:
        data = data.reshape(-1, cols).view(np.uint8)
    rows = data.reshape(data.shape[0] if data.ndim > 1 else 1, -1)[first:first + count]
    return t.tensor_type, cols, np.ascontiguousarray(rows)


def quantizer_input(reader, rng):
    _, cols, rows = tensor_rows(reader, "blk.1.ffn_up.weight", 0, 2)
    real = dequantize(rows, T.Q5_0).reshape(-1)[:1024]
    edge = np.concatenate([
        np.zeros(32),
        np.full(32, 0.25),
        rng.standard_normal(32) * 1e-6,
        np.where(np.arange(32) == 7, 9.0, rng.standard_normal(32) * 0.01),
        rng.standard_normal(256 - 128) * 0.05,
    ])
    return np.concatenate([real, edge]).astype(np.float32).reshape(5, 256)


def random_blocks(rng, qtype, f16_offsets, rows, cols):
    block_len, block_bytes = GGML_QUANT_SIZES[qtype]
    nblocks = rows * cols // block_len
    raw = rng.integers(0, 256, size=(nblocks, block_bytes), dtype=np.uint8)
    for off in f16_offsets:
        d = (rng.uniform(0.05, 1.05, nblocks) * 0.02 * rng.choice([-1, 1], nblocks, p=[0.2, 0.8]))
        raw[:, off:off + 2] = d.astype(np.float16).view(np.uint8).reshape(nblocks, 2)
    return raw.reshape(rows, -1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--out", type=Path, default=REPO / "tests/fixtures/quant")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    reader = GGUFReader(args.model)
    rng = np.random.default_rng(20240611)
    index = []

    def emit(name, qtype, cols, blocks, origin, source=None):
        blocks = np.ascontiguousarray(blocks, dtype=np.uint8)
        rows = blocks.shape[0]
        if qtype == T.F32:
            values = blocks.view(np.float32)
        else:
            values = dequantize(blocks, qtype)
        values = np.ascontiguousarray(values, dtype="<f4").reshape(rows, cols)
        (args.out / f"{name}.bin").write_bytes(blocks.tobytes())
        (args.out / f"{name}.f32").write_bytes(values.tobytes())
        entry = {"name": name, "type": qtype.name, "rows": rows, "cols": cols,
                 "blocks": f"{name}.bin", "dequantized": f"{name}.f32", "origin": origin}
        if source is not None:
            (args.out / "quant_source.f32").write_bytes(source.astype("<f4").tobytes())
            entry["source"] = "quant_source.f32"
        index.append(entry)

    for name, tensor, first, count in MODEL_ROWS:
        qtype, cols, rows = tensor_rows(reader, tensor, first, count)
        emit(name, qtype, cols, rows, f"{args.model.name}: {tensor} rows {first}..{first + count}")

    src = quantizer_input(reader, rng)
    for name, qtype in GGUF_PY_QUANT:
        q = quantize(src, qtype)
        blocks = np.ascontiguousarray(q).view(np.uint8).reshape(src.shape[0], -1)
        emit(name, qtype, src.shape[1], blocks, "gguf.quants.quantize", source=src)

    for name, qtype, offsets in RANDOM_BLOCKS:
        rows, cols = 2, 512
        emit(name, qtype, cols, random_blocks(rng, qtype, offsets, rows, cols),
             "random blocks with finite f16 scales")

    (args.out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {len(index)} fixtures, {total} bytes, to {args.out}")


if __name__ == "__main__":
    main()
