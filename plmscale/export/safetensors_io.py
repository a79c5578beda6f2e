"""The safetensors file format, written and read with torch alone.

The format is small enough to own (an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the raw bytes back to back), and owning it keeps `plmscale export` and
`load_exported` free of extra dependencies. tests/test_export.py holds both directions against the
`safetensors` package and transformers' loader.
"""

import json
import struct
from pathlib import Path

import torch

from plmscale.errors import PlmscaleError

_DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                torch.int64: "I64", torch.int32: "I32"}
_DTYPES = {name: dtype for dtype, name in _DTYPE_NAMES.items()}
_ALIGN = 8  # the header is padded with spaces so tensor data starts 8-byte aligned (as the reference writer)


def write_safetensors(tensors: dict, path, metadata: dict | None = None) -> None:
    """Write {name: tensor} to path; metadata: string -> string, stored under "__metadata__"."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.dtype not in _DTYPE_NAMES:
            raise ValueError(f"tensor {name}: dtype {tensor.dtype} has no safetensors name here")
        blob = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": _DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(len(text) + 8) % _ALIGN)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for blob in blobs:
            handle.write(blob)


def read_safetensors(path) -> tuple[dict, dict]:
    """({name: tensor}, metadata) from a safetensors file; a truncated or foreign file names itself."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PlmscaleError(f"{path} does not exist; run `plmscale export RUN` to write it") from None
    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + size])
        metadata = header.pop("__metadata__", None) or {}
        body = memoryview(data)[8 + size:]
        tensors = {}
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            if end > len(body) or begin > end:
                raise ValueError(f"tensor {name} lies beyond the end of the file")
            dtype = _DTYPES[entry["dtype"]]
            flat = torch.frombuffer(bytearray(body[begin:end]), dtype=dtype) if end > begin \
                else torch.empty(0, dtype=dtype)
            tensors[name] = flat.reshape(entry["shape"])
    except (struct.error, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise PlmscaleError(f"{path}: not a readable safetensors file ({error}); export the run again") from None
    return tensors, metadata
