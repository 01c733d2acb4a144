#!/usr/bin/env python3
"""Writes the `weights` seeds under fuzz/corpus/weights/ (standard library only):
`python3 fuzz/make_seeds.py`.

The other seeds are committed as they are: `ir_text` holds `vidrt_ir::text::print` of small
graphs (the crate doc's linear example, a graph of the VAE-style view ops with NaN, inf and
-0.0 scalars, the tiny DiT with one block after `passes::pipeline`, the tiny umT5 with one
layer); `config` the tiny model's and Wan2.1-T2V-1.3B's diffusers configs, documents split by
`---` lines; `golden_case` the ../shared/golden case.json files trimmed to a few checks.
`regress-*` files are inputs that once crashed a target.
"""
import json
import struct
from pathlib import Path

OUT = Path(__file__).resolve().parent / "corpus" / "weights"


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, raw bytes)] -> bytes of a safetensors file."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the format pads the header to 8 bytes
    return struct.pack("<Q", len(h)) + h + data


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    f32 = struct.pack("<4f", 1.0, -2.5, 3.0e-3, 1.0e30)
    seeds = {
        "seed-f32": safetensors([("a", "F32", [2, 2], f32)]),
        "seed-mixed": safetensors(
            [
                ("w.f16", "F16", [3], struct.pack("<3e", 1.0, -0.5, 65504.0)),
                ("w.bf16", "BF16", [2], bytes.fromhex("803f00c0")),
                ("ids.i32", "I32", [2], struct.pack("<2i", -1, 7)),
                ("ids.i64", "I64", [1, 1], struct.pack("<q", 1 << 40)),
                ("scalar", "F32", [], struct.pack("<f", 2.0)),
                ("empty", "F32", [0, 3], b""),
            ],
            metadata={"format": "pt"},
        ),
        "seed-unsupported-dtype": safetensors([("u", "U8", [4], bytes([1, 2, 3, 4])), ("f", "F64", [1], struct.pack("<d", 1.0))]),
        "seed-empty-header": safetensors([]),
        "seed-truncated": safetensors([("a", "F32", [2, 2], f32)])[:-5],
    }
    for name, b in seeds.items():
        (OUT / name).write_bytes(b)
        print(f"{OUT / name}: {len(b)} bytes")


if __name__ == "__main__":
    main()
