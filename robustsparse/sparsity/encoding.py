"""Compressed encoding of masked tensors: only the kept values plus the cheapest index for each masked tensor.

Every masked tensor is stored as its kept values (in row-major order) and an index from which
the mask is rebuilt. Several index encodings are tried and the smallest that reproduces the
mask exactly is kept:

| encoding  | index stored                                                   | fits             |
| --------- | -------------------------------------------------------------- | ---------------- |
| `dense`   | nothing                                                        | nothing masked   |
| `bitmap`  | one bit per weight                                             | anything         |
| `indices` | int16/int32 position of every kept weight                      | very sparse      |
| `rows`    | one bit per group (row, kernel, channel block)                 | row, kernel      |
| `pattern` | one bit per group (if some are empty) + the rank of its kept-position pattern among the C(block, keep) possible ones, in ceil(log2 C) bits | window, window+kernel, n:m |
| `outer`   | one bit per output channel + one bit per input column          | filter, channel  |
| `periodic` | the period P and one bit per weight of P kernels: kernel (k, c) is kernel (k + c) mod P of them | psconv |

Unmasked tensors (BatchNorm statistics, unmasked biases...) are stored as they are. The result
is a flat `dict[str, Tensor]` (safe for `torch.save` / `torch.load(weights_only=True)`), with a
JSON header in a uint8 tensor; `load_compressed` gives back a bit-identical state dict.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from robustsparse.errors import CheckpointError
from robustsparse.sparsity.granularity import RowView

__all__ = ["export_compressed", "load_compressed", "compressed_size_bytes", "dense_size_bytes", "COMPRESSED_FORMAT"]

COMPRESSED_FORMAT = "robustsparse.compressed"
_VERSION = 1
_HEADER = "__header__"
_SEP = "::"
_MAX_PATTERNS = 1 << 16  # larger pattern tables cost more to build than they save
_DTYPES = {
    str(dt).removeprefix("torch."): dt
    for dt in (
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.float64,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )
}


# ------------------------------------------------------------------------------ bit packing
def _pack_bits(bits: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.packbits(bits.astype(np.uint8).ravel(), bitorder="little").copy())


def _unpack_bits(data: torch.Tensor, count: int) -> np.ndarray:
    return np.unpackbits(data.numpy(), count=count, bitorder="little").astype(bool)


def _pack_codes(codes: np.ndarray, nbits: int) -> torch.Tensor:
    """Pack non-negative integers of `nbits` bits each into bytes."""
    shifts = np.arange(nbits, dtype=np.uint64)
    bits = (codes.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)
    return _pack_bits(bits)


def _unpack_codes(data: torch.Tensor, count: int, nbits: int) -> np.ndarray:
    bits = _unpack_bits(data, count * nbits).reshape(count, nbits).astype(np.uint64)
    return (bits << np.arange(nbits, dtype=np.uint64)).sum(axis=1)


@lru_cache(maxsize=64)
def _pattern_table(block: int, keep: int) -> np.ndarray | None:
    """Sorted bit codes of every way to keep `keep` of `block` positions (None if too many)."""
    if math.comb(block, keep) > _MAX_PATTERNS or block > 62:
        return None
    codes = [sum(1 << i for i in combo) for combo in itertools.combinations(range(block), keep)]
    return np.array(sorted(codes), dtype=np.int64)


def _row_codes(rows: np.ndarray) -> np.ndarray:
    return (rows.astype(np.int64) << np.arange(rows.shape[1], dtype=np.int64)).sum(axis=1)


# ------------------------------------------------------------------------------ mask encodings
def _shape4(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    return (shape[0], shape[1], shape[2], shape[3]) if len(shape) == 4 else (shape[0], shape[1], 1, 1)


def _encode_bitmap(mask: torch.Tensor) -> tuple[dict, dict]:
    return {"encoding": "bitmap"}, {"index": _pack_bits(mask.flatten().numpy())}


def _encode_indices(mask: torch.Tensor) -> tuple[dict, dict]:
    dtype = torch.int16 if mask.numel() <= 2**15 else torch.int32
    return {"encoding": "indices"}, {"index": torch.nonzero(mask.flatten()).flatten().to(dtype)}


def _encode_rows(mask: torch.Tensor, view: RowView) -> tuple[dict, dict] | None:
    rows = view.rows(mask, pad=False)
    valid = view.valid()
    kept = rows.any(1)
    if not torch.equal(rows, kept[:, None] & valid):
        return None
    return {"encoding": "rows", "view": view.kind, "block": view.block}, {"index": _pack_bits(kept.numpy())}


def _encode_pattern(mask: torch.Tensor, view: RowView) -> tuple[dict, dict] | None:
    rows = view.rows(mask, pad=False).numpy()
    count = rows.sum(1)
    live = count > 0
    if not live.any():
        return None
    keep = int(count[live][0])
    if not (count[live] == keep).all():
        return None
    table = _pattern_table(view.block, keep)
    if table is None:
        return None
    codes = _row_codes(rows[live])
    ranks = np.searchsorted(table, codes)
    nbits = max(1, math.ceil(math.log2(len(table))))
    meta = {
        "encoding": "pattern",
        "view": view.kind,
        "block": view.block,
        "keep": keep,
        "bits": nbits,
        "all_rows": bool(live.all()),
    }
    tensors = {"index": _pack_codes(ranks, nbits)}
    if not live.all():
        tensors["rows"] = _pack_bits(live)
    return meta, tensors


def _encode_outer(mask: torch.Tensor) -> tuple[dict, dict] | None:
    k, c, r, s = _shape4(tuple(mask.shape))
    m = mask.reshape(k, c, r * s)
    out_keep = m.reshape(k, -1).any(1)
    in_keep = m.any(2).any(0)
    if not bool((m == (out_keep[:, None, None] & in_keep[None, :, None])).all()):
        return None
    return {"encoding": "outer"}, {"index": _pack_bits(out_keep.numpy()), "cols": _pack_bits(in_keep.numpy())}


def _encode_periodic(mask: torch.Tensor, period: int) -> tuple[dict, dict] | None:
    """Kernel (k, c) a function of (k + c) mod `period` (psconv's supports): store one period."""
    if mask.dim() != 4 or period < 1:
        return None
    k, c, r, s = mask.shape
    residue = (torch.arange(k)[:, None] + torch.arange(c)[None, :]) % period
    kernels = mask.reshape(k, c, r * s)
    sequence = torch.zeros(period, r * s, dtype=torch.bool)
    sequence[residue.flatten()] = kernels.reshape(k * c, r * s)
    if not torch.equal(sequence[residue], kernels):  # not periodic after all
        return None
    return {"encoding": "periodic", "period": period}, {"index": _pack_bits(sequence.numpy())}


def _decode_mask(entry: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    shape = tuple(entry["shape"])
    numel = math.prod(shape)
    kind = entry["encoding"]
    if kind == "dense":
        return torch.ones(shape, dtype=torch.bool)
    if kind == "bitmap":
        return torch.from_numpy(_unpack_bits(tensors["index"], numel)).reshape(shape)
    if kind == "indices":
        mask = torch.zeros(numel, dtype=torch.bool)
        mask[tensors["index"].long()] = True
        return mask.reshape(shape)
    if kind == "outer":
        k, c, r, s = _shape4(shape)
        out_keep = torch.from_numpy(_unpack_bits(tensors["index"], k))
        in_keep = torch.from_numpy(_unpack_bits(tensors["cols"], c))
        return (out_keep[:, None, None] & in_keep[None, :, None]).expand(k, c, r * s).reshape(shape)
    if kind == "periodic":
        k, c, r, s = shape
        period = int(entry["period"])
        sequence = torch.from_numpy(_unpack_bits(tensors["index"], period * r * s)).reshape(period, r * s)
        return sequence[(torch.arange(k)[:, None] + torch.arange(c)[None, :]) % period].reshape(shape)
    view = RowView(entry["view"], _shape4(shape), int(entry["block"]))
    if kind == "rows":
        kept = torch.from_numpy(_unpack_bits(tensors["index"], view.n_rows))
        return view.unrows(kept[:, None] & view.valid()).reshape(shape)
    if kind == "pattern":
        live = np.ones(view.n_rows, dtype=bool) if entry["all_rows"] else _unpack_bits(tensors["rows"], view.n_rows)
        table = _pattern_table(view.block, int(entry["keep"]))
        ranks = _unpack_codes(tensors["index"], int(live.sum()), int(entry["bits"]))
        codes = table[ranks.astype(np.int64)]
        rows = np.zeros((view.n_rows, view.block), dtype=bool)
        rows[live] = ((codes[:, None] >> np.arange(view.block, dtype=np.int64)) & 1).astype(bool)
        return view.unrows(torch.from_numpy(rows)).reshape(shape)
    raise CheckpointError(
        f"compressed blob uses unknown encoding {kind!r}; expected one of dense, bitmap, indices, rows, pattern, outer, periodic"
    )


def _candidates(mask: torch.Tensor, spec: Mapping[str, Any] | None) -> list[tuple[dict, dict]]:
    if bool(mask.all()):
        return [({"encoding": "dense"}, {})]
    found = [_encode_bitmap(mask), _encode_indices(mask)]
    if mask.dim() in (2, 4):
        shape4 = _shape4(tuple(mask.shape))
        views = [RowView("kernel", shape4, shape4[2] * shape4[3])]
        if shape4[3] > 1:
            views.append(RowView("row", shape4, shape4[3]))
        if spec and spec.get("view") in ("cblock", "nm", "kernel", "row", "column"):
            views.append(RowView(spec["view"], shape4, int(spec["block"])))
        for view in views:
            for encoded in (_encode_rows(mask, view), _encode_pattern(mask, view)):
                if encoded is not None:
                    found.append(encoded)
        outer = _encode_outer(mask)
        if outer is not None:
            found.append(outer)
    if spec and spec.get("period"):
        periodic = _encode_periodic(mask, int(spec["period"]))
        if periodic is not None:
            found.append(periodic)
    return found


def _nbytes(tensors: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


# ------------------------------------------------------------------------------ public API
def export_compressed(
    state_dict: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    granularity_info: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Store only the kept values of every masked tensor plus the cheapest index.

    Args:
        state_dict: the model's state dict (masks applied).
        masks: parameter name -> bool tensor (True = kept).
        granularity_info: the pruner's `granularity_info()` / `metadata()` (adds the
            granularity's own views, e.g. n:m groups, to the encodings tried).

    Returns:
        A flat dict of tensors; `load_compressed` rebuilds the state dict bit for bit.

    Raises:
        CheckpointError: a mask does not fit its tensor, or a masked entry is not +0.0.
    """
    specs = (granularity_info or {}).get("layers") or {}
    if not specs and isinstance((granularity_info or {}).get("sparsity"), Mapping):
        specs = granularity_info["sparsity"].get("layers") or {}
    entries: dict[str, Any] = {}
    blob: dict[str, torch.Tensor] = {}
    for name, value in state_dict.items():
        t = value.detach().cpu().contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise CheckpointError(f"cannot export {name!r} of dtype {dtype}; supported: {', '.join(_DTYPES)}")
        entry: dict[str, Any] = {"shape": list(t.shape), "dtype": dtype}
        mask = masks.get(name)
        if mask is None:
            entry["encoding"] = "raw"
            blob[f"{name}{_SEP}values"] = t.clone()
            entries[name] = entry
            continue
        mask = mask.detach().cpu().bool()
        if tuple(mask.shape) != tuple(t.shape):
            raise CheckpointError(f"mask of {name!r} has shape {tuple(mask.shape)}, the tensor {tuple(t.shape)}")
        dropped = t[~mask]
        if bool((dropped != 0).any()) or (t.is_floating_point() and bool(torch.signbit(dropped).any())):
            raise CheckpointError(
                f"{name!r} has masked entries that are not +0.0; apply the masks (apply_masks_) before exporting"
            )
        best = min(_candidates(mask, specs.get(name)), key=lambda c: _nbytes(c[1]))
        meta, tensors = best
        entry.update(meta)
        for key, tensor in tensors.items():
            blob[f"{name}{_SEP}{key}"] = tensor
        blob[f"{name}{_SEP}values"] = t.flatten()[mask.flatten()].clone()
        entries[name] = entry
    header = json.dumps(
        {"format": COMPRESSED_FORMAT, "version": _VERSION, "order": list(state_dict), "entries": entries}
    )
    blob[_HEADER] = torch.frombuffer(bytearray(header.encode()), dtype=torch.uint8).clone()
    return blob


def load_compressed(blob: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """The state dict stored by `export_compressed`, bit-identical to the one exported.

    Raises:
        CheckpointError: the blob is not a compressed export of a supported version.
    """
    if _HEADER not in blob:
        raise CheckpointError("not a compressed export: no header; export it with export_compressed()")
    try:
        header = json.loads(bytes(blob[_HEADER].tolist()).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"compressed export has a damaged header ({exc})") from None
    if header.get("format") != COMPRESSED_FORMAT or header.get("version") != _VERSION:
        raise CheckpointError(
            f"compressed export format {header.get('format')!r} v{header.get('version')!r} "
            f"is not supported; expected {COMPRESSED_FORMAT} v{_VERSION}"
        )
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name in header["order"]:
        entry = header["entries"][name]
        values = blob[f"{name}{_SEP}values"]
        if entry["encoding"] == "raw":
            out[name] = values.clone()
            continue
        tensors = {key.split(_SEP, 1)[1]: t for key, t in blob.items() if key.startswith(f"{name}{_SEP}")}
        mask = _decode_mask(entry, tensors)
        t = torch.zeros(tuple(entry["shape"]), dtype=_DTYPES[entry["dtype"]])
        t.view(-1)[mask.reshape(-1)] = values
        out[name] = t
    return out


def compressed_size_bytes(blob: Mapping[str, torch.Tensor]) -> int:
    """Payload bytes of a compressed export (values, indices and header)."""
    return _nbytes(blob)


def dense_size_bytes(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Payload bytes of a plain state dict (every tensor in full)."""
    return _nbytes(state_dict)
