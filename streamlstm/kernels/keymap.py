"""Stream key -> slot in compiled code: an open-addressing hash table over key bytes.

The StreamTable (:mod:`streamlstm.state.table`) keeps its keys here instead of
in a Python dict of str: ~50 bytes a stream instead of ~500, and a lookup of a
micro-batch costs tens of nanoseconds a key instead of half a microsecond.

Arrays (``cap`` slots, ``tsize`` a power of two >= 2 * cap buckets):

- ``table (tsize,) int32``: the slot stored in each bucket, -1 = empty.
  Linear probing; deletion shifts the following run back (no tombstones), so
  the load stays below 1/2 whatever the churn of keys.
- ``slot_hash (cap,) uint64``: the 64-bit hash of each slot's key (its home
  bucket is ``hash & (tsize - 1)``; also the cheap first test of a probe).
- ``koff (cap,) int64``, ``klen (cap,) int32``: where each slot's key bytes
  (UTF-8) sit in ``kbytes (arena,) uint8``; ``klen == -1`` marks a free slot.
- ``kinfo (3,) int64``: bytes used in the arena, bytes of released keys in it
  (garbage until the next compaction), free slots on the stack.
- ``free (cap,) int32``: a stack of free slots; the top is popped first.

A hash match is only a candidate: the key bytes are compared in full, so two
keys with the same 64-bit hash stay two streams.
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
def _probe(buf, start, end, h, table, slot_hash, kbytes, koff, klen):  # pragma: no cover
    """(slot of the key or -1, the bucket where the probe stopped)."""
    mask = table.shape[0] - 1
    b = np.int64(h & np.uint64(mask))
    n = end - start
    while True:
        s = table[b]
        if s < 0:
            return -1, b
        if slot_hash[s] == h and klen[s] == n and _same(buf, start, n, kbytes, koff[s]):
            return np.int64(s), b
        b = (b + 1) & mask


@njit(**NJIT)
def _find(
    buf, offs, seed, table, slot_hash, kbytes, koff, klen, touch, touched, tseq, hashes, out
):  # pragma: no cover - compiled
    """Slots of the keys ``buf[offs[i]:offs[i+1]]`` into ``out`` (-1: not in the table),
    their hashes into ``hashes``; found slots get ``touched = tseq[i]`` if ``touch``. Returns how
    many were not found."""
    missing = 0
    for i in range(offs.shape[0] - 1):
        a = offs[i]
        e = offs[i + 1]
        h = _hash(buf, a, e, seed)
        hashes[i] = h
        s, _ = _probe(buf, a, e, h, table, slot_hash, kbytes, koff, klen)
        out[i] = s
        if s < 0:
            missing += 1
        elif touch:
            touched[s] = tseq[i]
    return missing


@njit(**NJIT)
def _insert(
    start,
    buf,
    offs,
    hashes,
    table,
    slot_hash,
    kbytes,
    koff,
    klen,
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
        s, b = _probe(buf, a, e, h, table, slot_hash, kbytes, koff, klen)
        if s >= 0:
            out[i] = s
            touched[s] = tseq[i]
            continue
        if kinfo[K_NFREE] == 0:
            return i
        kinfo[K_NFREE] -= 1
        s = np.int64(free[kinfo[K_NFREE]])
        table[b] = s
        slot_hash[s] = h
        used = kinfo[K_USED]
        for j in range(e - a):
            kbytes[used + j] = buf[a + j]
        koff[s] = used
        klen[s] = e - a
        kinfo[K_USED] = used + e - a
        group[s] = gnew[i]
        touched[s] = tseq[i]
        last_time[s] = 0.0
        new_slots[n_new[0]] = s
        n_new[0] += 1
        out[i] = s
    return n


@njit(**NJIT)
def _release(slots, table, slot_hash, klen, kinfo, free, group, gone):  # pragma: no cover
    """Free ``slots`` (skipping free ones): out of the table, key bytes to garbage,
    group -1, onto the free stack in the order given. ``gone[i]`` says which were
    live. Deletion shifts the rest of the probe run back so no probe stops early."""
    mask = table.shape[0] - 1
    for i in range(slots.shape[0]):
        s = slots[i]
        if klen[s] < 0:
            gone[i] = False
            continue
        gone[i] = True
        b = np.int64(slot_hash[s] & np.uint64(mask))
        while table[b] != s:
            b = (b + 1) & mask
        # Backward-shift deletion: move later entries of the run into the hole when
        # their home bucket is not inside (hole, their bucket].
        hole = b
        j = (b + 1) & mask
        while table[j] >= 0:
            home = np.int64(slot_hash[table[j]] & np.uint64(mask))
            if ((j - home) & mask) >= ((j - hole) & mask):
                table[hole] = table[j]
                hole = j
            j = (j + 1) & mask
        table[hole] = -1
        kinfo[K_GARBAGE] += klen[s]
        klen[s] = -1
        group[s] = -1
        free[kinfo[K_NFREE]] = s
        kinfo[K_NFREE] += 1


@njit(**NJIT)
def _rebuild(table, slot_hash, klen):  # pragma: no cover - compiled
    """Fill an empty ``table`` (all -1) with every live slot, in slot order."""
    mask = table.shape[0] - 1
    for s in range(klen.shape[0]):
        if klen[s] < 0:
            continue
        b = np.int64(slot_hash[s] & np.uint64(mask))
        while table[b] >= 0:
            b = (b + 1) & mask
        table[b] = s


@njit(**NJIT)
def _compact(kbytes, koff, klen, out):  # pragma: no cover - compiled
    """Copy the live keys' bytes into ``out`` in slot order, updating ``koff``;
    returns the bytes used."""
    used = 0
    for s in range(klen.shape[0]):
        n = klen[s]
        if n < 0:
            continue
        a = koff[s]
        for j in range(n):
            out[used + j] = kbytes[a + j]
        koff[s] = used
        used += n
    return used


@njit(**NJIT)
def _gather(slots, kbytes, koff, klen, out, lengths):  # pragma: no cover - compiled
    """The keys of ``slots`` (all live) back to back into ``out``, their lengths."""
    used = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        n = klen[s]
        a = koff[s]
        for j in range(n):
            out[used + j] = kbytes[a + j]
        lengths[i] = n
        used += n
    return used
