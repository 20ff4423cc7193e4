"""Build the shipped CLIP tokenizer files from the BPE merges in the open_clip_torch wheel.

The real CLIP vocabulary (49,408 tokens, MIT licensed by OpenAI) ships inside the
`open_clip_torch` wheel as `open_clip/bpe_simple_vocab_16e6.txt.gz`. This script turns it into the
`vocab.json` + `merges.txt` pair that `transformers.CLIPTokenizer.from_pretrained` reads, and writes
them to `src/groundiff/sd/assets/clip_tokenizer/`. Run it once after `pip install open_clip_torch`:

    python scripts/build_clip_tokenizer.py
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import open_clip

# CLIP keeps the first 48,894 merges of the file (49,408 = 2·256 byte tokens + merges + 2 specials).
NUM_MERGES = 49408 - 2 * 256 - 2
OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "groundiff" / "sd" / "assets" / "clip_tokenizer"


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE uses for the raw bytes 0..255, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def main() -> None:
    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe_path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == 49408, len(tokens)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (OUT_DIR / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (OUT_DIR / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {len(tokens)} tokens and {len(merges)} merges to {OUT_DIR}")


if __name__ == "__main__":
    main()
