"""How much lossless compression would save on stored features: zlib and lzma over a set's feature files.

    python -m benchmarks.compression runs/demo-size1/data/train

Reads every `*.features.safetensors` member of the set's shards and reports raw and compressed
bytes per sample and the time per sample to compress. Random-weight maps compress unlike trained
ones, so run it on a set from a trained model (the mini world's demo sets).
"""

from __future__ import annotations

import argparse
import lzma
import tarfile
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

CODECS: dict[str, Callable[[bytes], bytes]] = {
    "zlib-6": lambda data: zlib.compress(data, 6),
    "lzma-1": lambda data: lzma.compress(data, preset=1),
}


def feature_files(folder: Path) -> list[bytes]:
    payloads = []
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".features.safetensors"):
                    handle = tar.extractfile(member)
                    assert handle is not None
                    payloads.append(handle.read())
    if not payloads:
        raise SystemExit(f"No *.features.safetensors in the shards of {folder}; pass a set folder.")
    return payloads


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a set folder written by groundiff generate")
    args = parser.parse_args(argv)
    payloads = feature_files(args.folder)
    raw = sum(len(p) for p in payloads) / len(payloads)
    print(f"{len(payloads)} samples, raw features {raw / 1e3:.1f} kB per sample")
    for name, compress in CODECS.items():
        start = time.perf_counter()
        packed = sum(len(compress(p)) for p in payloads) / len(payloads)
        seconds = (time.perf_counter() - start) / len(payloads)
        print(f"{name}: {packed / 1e3:.1f} kB per sample (ratio {raw / packed:.2f}), {1e3 * seconds:.1f} ms per sample")


if __name__ == "__main__":
    main()
