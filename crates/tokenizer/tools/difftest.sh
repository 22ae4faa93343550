#!/usr/bin/env bash
# Differential test against llama.cpp: random texts through tools/difftok (llama.cpp) and the
# dump_ids example (hearth), compared line by line. See tools/README.md.
# usage: difftest.sh MODEL.gguf SEED COUNT [special-token texts to sprinkle in...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
model=$(realpath "$1"); seed=$2; n=$3; shift 3
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 "$here/gen_texts.py" "$seed" "$n" "$@" > "$work/texts"
"${DIFFTOK:-$here/difftok}" "$model" "$work/texts" > "$work/cpp"
cargo run -q -p hearth-tokenizer --example dump_ids -- "$model" "$work/texts" "$work/rs"
python3 - "$work/texts" "$work/cpp" "$work/rs" <<'PY'
import sys
texts = open(sys.argv[1], encoding="utf-8").read().split("\x01SEP\x01\n")
a = open(sys.argv[2]).read().split("\n"); b = open(sys.argv[3]).read().split("\n")
bad = [(texts[i // 5], x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y]
print(f"{len(texts)} texts, {len(bad)} differing lines" + ("" if len(a) == len(b) else f" (line counts {len(a)} vs {len(b)})"))
for t, x, y in bad[:5]:
    print(repr(t)[:200]); print("  llama.cpp", x[:300]); print("  hearth   ", y[:300])
sys.exit(1 if bad or len(a) != len(b) else 0)
PY
