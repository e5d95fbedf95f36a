#!/usr/bin/env python3
"""Writes the vendored MNIST (data/mnist) as an image folder for `smartmixed-cli train`:
OUT/train/<digit>/*.pgm and OUT/test/<digit>/*.pgm, as torchvision's ImageFolder expects.

Usage: mnist_to_folder.py [OUT] [PER_SPLIT_LIMIT]   (default OUT: data/mnist-folder)
Standard library only. Class folders are named zero, one, ... nine.
"""
import gzip
import struct
import sys
from pathlib import Path

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def idx(path):
    data = gzip.open(path).read()
    ndims = data[3]
    dims = struct.unpack(">" + "I" * ndims, data[4 : 4 + 4 * ndims])
    return dims, data[4 + 4 * ndims :]


def write(out, split, images, labels, limit):
    (count, rows, cols), pixels = idx(images)
    _, digits = idx(labels)
    size = rows * cols
    for i in range(min(count, limit)):
        folder = out / split / NAMES[digits[i]]
        folder.mkdir(parents=True, exist_ok=True)
        header = f"P5\n{cols} {rows}\n255\n".encode()
        (folder / f"{i:05}.pgm").write_bytes(header + pixels[i * size : (i + 1) * size])
    print(f"{out / split}: {min(count, limit)} images")


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "data/mnist-folder")
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 10**9
    src = Path(__file__).resolve().parent.parent / "data" / "mnist"
    write(out, "train", src / "train-images-idx3-ubyte.gz", src / "train-labels-idx1-ubyte.gz", limit)
    write(out, "test", src / "t10k-images-idx3-ubyte.gz", src / "t10k-labels-idx1-ubyte.gz", limit)


if __name__ == "__main__":
    main()
