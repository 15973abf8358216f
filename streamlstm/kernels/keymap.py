"""Stream key -> slot in compiled code: an open-addressing hash table over key bytes.

The StreamTable (:mod:`streamlstm.state.table`) keeps its keys here instead of
in a Python dict of str: ~60 bytes a stream instead of ~500, and a lookup of a
micro-batch costs well under the dict's half microsecond a key.

Arrays (``cap`` slots, ``tsize`` a power of two >= 2 * cap buckets):

- ``table (tsize,) uint64``: each bucket holds the upper 32 bits of the key's
  hash and the slot in the lower 32; ``EMPTY`` (all ones) = no entry. Linear
  probing; deletion shifts the rest of the run back (no tombstones), so the
  load stays below 1/2 whatever the churn of keys.
- ``slot_hash (cap,) uint64``: the 64-bit hash of each slot's key (its home
  bucket is ``hash & (tsize - 1)``); read only to delete and to rebuild.
- ``krec (cap, 2) int64``: offset and length of each slot's key bytes (UTF-8)
  in ``kbytes (arena,) uint8``; length -1 marks a free slot.
- ``kinfo (3,) int64``: bytes used in the arena, bytes of released keys in it
  (garbage until the next compaction), free slots on the stack.
- ``free (cap,) int32``: a stack of free slots; the top is popped first.

A hash match is only a candidate: the key bytes are compared in full, so two
keys with the same 64-bit hash stay two streams.

Why lookups go in stages: at 100k streams behind a detector whose state rows
fill the caches, every array a lookup reads is a cache miss. :func:`_find`
reads the home buckets of the whole batch in one loop, then the candidates'
key records, then their bytes: loads that do not depend on each other, so
the CPU keeps many misses in flight instead of one at a time. A key the
stages do not settle (probe run longer than one bucket) takes the plain probe.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from streamlstm.kernels.config import NJIT

# kinfo fields.
K_USED = 0
K_GARBAGE = 1
K_NFREE = 2
N_KINFO = 3

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MIX1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_S32 = np.uint64(32)
EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
_LOW = np.uint64(0xFFFFFFFF)
_HIGH = np.uint64(0xFFFFFFFF00000000)


@njit(**NJIT)
def _hash(buf, start, end, seed):  # pragma: no cover - compiled
    """FNV-1a over ``buf[start:end]`` from a seeded basis, then murmur3's finaliser
    (FNV's low bits alone cluster in a power-of-two table)."""
    h = _FNV_OFFSET ^ seed
    for j in range(start, end):
        h = (h ^ np.uint64(buf[j])) * _FNV_PRIME
    h ^= h >> _S33
    h *= _MIX1
    h ^= h >> _S33
    h *= _MIX2
    h ^= h >> _S33
    return h


@njit(**NJIT)
def _same(buf, start, n, kbytes, off):  # pragma: no cover - compiled
    for j in range(n):
        if buf[start + j] != kbytes[off + j]:
            return False
    return True


@njit(**NJIT)
def _probe(buf, start, end, h, table, krec, kbytes):  # pragma: no cover - compiled
    """(slot of the key or -1, the bucket where the probe stopped)."""
    mask = table.shape[0] - 1
    b = np.int64(h & np.uint64(mask))
    n = end - start
    while True:
        e = table[b]
        if e == EMPTY:
            return -1, b
        if (e ^ h) >> _S32 == 0:
            s = np.int64(e & _LOW)
            if krec[s, 1] == n and _same(buf, start, n, kbytes, krec[s, 0]):
                return s, b
        b = (b + 1) & mask


@njit(**NJIT)
def _find(
    buf, offs, seed, table, krec, kbytes, touch, touched, tseq, hashes, out
):  # pragma: no cover - compiled
    """Slots of the keys ``buf[offs[i]:offs[i+1]]`` into ``out`` (-1: not in the table),
    their hashes into ``hashes``; found slots get ``touched = tseq[i]`` if ``touch``.
    Returns how many were not found. In stages (see the module docstring): ``out``
    holds the home bucket's entry, then the candidate slot, then the answer."""
    n = offs.shape[0] - 1
    mask = table.shape[0] - 1
    for i in range(n):
        hashes[i] = _hash(buf, offs[i], offs[i + 1], seed)
    # Stage 1: the home buckets (independent loads).
    for i in range(n):
        out[i] = np.int64(table[np.int64(hashes[i] & np.uint64(mask))])
    # Stage 2: the candidate's key length (independent loads); -2: settle by probing.
    for i in range(n):
        e = np.uint64(out[i])
        if e == EMPTY:
            out[i] = -1
        elif (e ^ hashes[i]) >> _S32 == 0:
            s = np.int64(e & _LOW)
            out[i] = s if krec[s, 1] == offs[i + 1] - offs[i] else -2
        else:
            out[i] = -2
    # Stage 3: the bytes; anything unsettled takes the plain probe.
    missing = 0
    for i in range(n):
        s = out[i]
        a = offs[i]
        if s >= 0 and not _same(buf, a, offs[i + 1] - a, kbytes, krec[s, 0]):
            s = -2
        if s == -2:
            s, _ = _probe(buf, a, offs[i + 1], hashes[i], table, krec, kbytes)
        out[i] = s
        if s < 0:
            missing += 1
    if touch:
        for i in range(n):
            if out[i] >= 0:
                touched[out[i]] = tseq[i]
    return missing


@njit(**NJIT)
def _insert(
    start,
    buf,
    offs,
    hashes,
    table,
    slot_hash,
    krec,
    kbytes,
    kinfo,
    free,
    group,
    touched,
    last_time,
    gnew,
    tseq,
    out,
    new_slots,
    n_new,
):  # pragma: no cover - compiled
    """Resolve every ``out[i] < 0`` from ``start`` on, in order: the key's slot if it is
    in the table by now (an earlier key of the same batch), else a new slot popped
    from ``free`` with ``group = gnew[i]``, ``touched = tseq[i]``, ``last_time = 0``,
    recorded in ``new_slots[n_new[0]]``. Returns the index of the first key that
    found the free stack empty (the caller grows or evicts, then calls again from
    there), or the number of keys when all are resolved. The arena must hold the
    bytes of every key still to come (the caller checks)."""
    n = offs.shape[0] - 1
    for i in range(start, n):
        if out[i] >= 0:
            continue
        a = offs[i]
        e = offs[i + 1]
        h = hashes[i]
        s, b = _probe(buf, a, e, h, table, krec, kbytes)
        if s >= 0:
            out[i] = s
            touched[s] = tseq[i]
            continue
        if kinfo[K_NFREE] == 0:
            return i
        kinfo[K_NFREE] -= 1
        s = np.int64(free[kinfo[K_NFREE]])
        table[b] = (h & _HIGH) | np.uint64(s)
        slot_hash[s] = h
        used = kinfo[K_USED]
        for j in range(e - a):
            kbytes[used + j] = buf[a + j]
        krec[s, 0] = used
        krec[s, 1] = e - a
        kinfo[K_USED] = used + e - a
        group[s] = gnew[i]
        touched[s] = tseq[i]
        last_time[s] = 0.0
        new_slots[n_new[0]] = s
        n_new[0] += 1
        out[i] = s
    return n


@njit(**NJIT)
def _release(slots, table, slot_hash, krec, kinfo, free, group, gone):  # pragma: no cover
    """Free ``slots`` (skipping free ones): out of the table, key bytes to garbage,
    group -1, onto the free stack in the order given. ``gone[i]`` says which were
    live. Deletion shifts the rest of the probe run back so no probe stops early."""
    mask = table.shape[0] - 1
    for i in range(slots.shape[0]):
        s = slots[i]
        if krec[s, 1] < 0:
            gone[i] = False
            continue
        gone[i] = True
        b = np.int64(slot_hash[s] & np.uint64(mask))
        while np.int64(table[b] & _LOW) != s:
            b = (b + 1) & mask
        # Backward-shift deletion: move later entries of the run into the hole when
        # their home bucket is not inside (hole, their bucket].
        hole = b
        j = (b + 1) & mask
        while table[j] != EMPTY:
            home = np.int64(slot_hash[np.int64(table[j] & _LOW)] & np.uint64(mask))
            if ((j - home) & mask) >= ((j - hole) & mask):
                table[hole] = table[j]
                hole = j
            j = (j + 1) & mask
        table[hole] = EMPTY
        kinfo[K_GARBAGE] += krec[s, 1]
        krec[s, 1] = -1
        group[s] = -1
        free[kinfo[K_NFREE]] = s
        kinfo[K_NFREE] += 1


@njit(**NJIT)
def _rebuild(table, slot_hash, krec):  # pragma: no cover - compiled
    """Fill an empty ``table`` (all ``EMPTY``) with every live slot, in slot order."""
    mask = table.shape[0] - 1
    for s in range(krec.shape[0]):
        if krec[s, 1] < 0:
            continue
        h = slot_hash[s]
        b = np.int64(h & np.uint64(mask))
        while table[b] != EMPTY:
            b = (b + 1) & mask
        table[b] = (h & _HIGH) | np.uint64(s)


@njit(**NJIT)
def _compact(kbytes, krec, out):  # pragma: no cover - compiled
    """Copy the live keys' bytes into ``out`` in slot order, updating their offsets;
    returns the bytes used."""
    used = 0
    for s in range(krec.shape[0]):
        n = krec[s, 1]
        if n < 0:
            continue
        a = krec[s, 0]
        for j in range(n):
            out[used + j] = kbytes[a + j]
        krec[s, 0] = used
        used += n
    return used


@njit(**NJIT)
def _gather(slots, kbytes, krec, out, lengths):  # pragma: no cover - compiled
    """The keys of ``slots`` (all live) back to back into ``out``, their lengths."""
    used = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        n = krec[s, 1]
        a = krec[s, 0]
        for j in range(n):
            out[used + j] = kbytes[a + j]
        lengths[i] = n
        used += n
    return used
