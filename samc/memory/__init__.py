"""The episodic memory (§4.1): codecs, the byte-budgeted FIFO and Zarr snapshots.

The paper (§4.1, Algorithm 1 lines 9-11) keeps, for every stored sample, only the pixels whose
Grad-CAM saliency exceeds the threshold μ (Eq. 4.4) and stores them "in the format of sparse
matrix", the Coordinate Format ``COO(x')``; ``COO^-1`` recovers the zero-padded image before
completion (Eq. 4.6). Samples enter the per-task memory first-in-first-out, so "the last group of
samples are stored in memory in the end" (§4.1). Appendix H / Table 4 measures the memory as a
*byte* budget of "N raw images" and reports how many masked images fit in it.

Modules, one job each:

* :mod:`samc.memory.codecs` — how one image becomes a record: ``raw``, ``lossless``, ``jxl``,
  ``webp``, the paper's ``coo``, SAMC's ``sparse`` and the saliency-weighted ``salient_lowres``
  and ``salient_blur``; each one class behind :class:`~samc.memory.codecs.base.Codec`
  (encode, decode, bytes) and a line in ``CODECS``;
* :mod:`samc.memory.records` — encode / decode by codec name, size bounds, the flat layout;
* :mod:`samc.memory.fifo` — the byte budget and the FIFO that keeps the last records that fit;
* :mod:`samc.memory.task_memory` — a finished task memory ``M_t`` and its size summary;
* :mod:`samc.memory.snapshot` — its Zarr v3 store, written atomically, read back verified.

Conventions: images are numpy ``uint8`` arrays ``(C, H, W)``; saliency masks numpy ``bool``
``(H, W)`` (True = pixel kept, all C channels). Bad input raises :class:`MemoryFormatError`,
whose message names the field or store path and what is wrong.
"""
from samc.memory.codecs import CODECS, Codec, get_codec, parse_spec
from samc.memory.codecs.coo import coo, coo_inverse, coo_nbytes
from samc.memory.errors import MemoryFormatError
from samc.memory.fifo import FifoMemory, budget_bytes
from samc.memory.records import (ENCODINGS, decode, encode, encode_batch, min_record_nbytes,
                                 record_kept_count)
from samc.memory.snapshot import load_snapshot, save_snapshot
from samc.memory.task_memory import FORMAT, FORMAT_VERSION, TaskMemory, dense_task_memory, describe

__all__ = [
    "CODECS", "Codec", "ENCODINGS", "FORMAT", "FORMAT_VERSION", "FifoMemory", "MemoryFormatError",
    "TaskMemory", "budget_bytes", "coo", "coo_inverse", "coo_nbytes", "decode", "dense_task_memory",
    "describe", "encode", "encode_batch", "get_codec", "load_snapshot", "min_record_nbytes",
    "parse_spec", "record_kept_count", "save_snapshot",
]
