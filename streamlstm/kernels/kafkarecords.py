"""Kafka record batches (message format v2) as bytes -> record columns.

Two compiled passes over the bytes of one fetch (the ``records`` field of a
partition in a Fetch response), arrays in, arrays out:

- :func:`_walk_batches` finds the batches back to back and reads their
  61-byte headers into one int64 row each (``H_*`` columns), stopping where
  kafka-python's ``MemoryRecords`` stops (a trailing partial batch is not an
  error: the broker cuts fetches at a size, not at a batch);
- :func:`_parse_records` reads the records of the batches the caller chose
  (segments: record bytes, which may be a decompressed copy, plus the batch's
  base offset and timestamps) into columns: offset, timestamp, key and value
  spans (start, length; -1 = null), the span of the headers, and each
  record's size. Errors stop the pass with a code (``E_*``) at the record
  where kafka-python's ``DefaultRecordBatch`` would raise, so the caller can
  hand out the records before it and then raise the same error.

Varints are zigzag (Kafka's, as ``kafka.record.util.decode_varint``). A
header key must be UTF-8 (kafka-python decodes it and fails otherwise), so it
is checked here with Python's strict rules (no surrogates, no overlong forms).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from streamlstm.kernels.config import NJIT, NJIT_INLINE

# Columns of a batch header row (_walk_batches).
H_POS = 0  # start of the batch in the buffer
H_END = 1  # end of the batch (pos + 12 + length)
H_BASE = 2  # base offset
H_EPOCH = 3  # partition leader epoch
H_MAGIC = 4
H_CRC = 5  # as unsigned 32 bits
H_ATTR = 6
H_LAST_DELTA = 7
H_FIRST_TS = 8
H_MAX_TS = 9
H_PRODUCER = 10
H_COUNT = 11
N_H = 12
# Bytes of a v2 batch header, and of the smallest legal batch slice (kafka-python's
# MemoryRecords.MIN_SLICE: LOG_OVERHEAD 12 + a v0 record's overhead 14).
HEADER_SIZE = 61
LOG_OVERHEAD = 12
MIN_SLICE = 26
# Where the CRC-covered bytes start in a batch (the attributes field).
CRC_FROM = 21

# Error codes of _parse_records (status[S_ERR]).
E_NONE = 0
E_SHORT = 1  # a read past the end of the record bytes (kafka-python: IndexError)
E_VARINT = 2  # a varint longer than 64 bits
E_HEADER_COUNT = 3  # negative header count
E_HEADER_KEY = 4  # negative header key size
E_SIZE = 5  # the record's length varint disagrees with what was read
E_TRAILING = 6  # bytes left after the batch's last record
E_UTF8 = 7  # a header key that is not UTF-8
# status slots
S_N = 0  # records written
S_ERR = 1
S_SEG = 2  # segment of the error
S_A = 3  # error detail (E_SIZE: expected; E_TRAILING: bytes left; E_HEADER_*: the value)
S_B = 4  # error detail (E_SIZE: read)
S_SKIPPED = 5  # records read but before the fetch offset
S_SKIPPED_BYTES = 6  # their length fields, summed
N_S = 7

_NONE = np.iinfo(np.int64).min  # "no record parsed in this segment"


@njit(**NJIT_INLINE)
def _be(buf, p, n):  # pragma: no cover - compiled
    """Big-endian unsigned integer of ``n`` bytes at ``p``."""
    v = np.int64(0)
    for k in range(n):
        v = (v << 8) | np.int64(buf[p + k])
    return v


@njit(**NJIT_INLINE)
def _signed(v, bits):  # pragma: no cover - compiled
    top = np.int64(1) << (bits - 1)
    return v - (top << 1) if v >= top else v


@njit(**NJIT)
def _walk_batches(buf, out):  # pragma: no cover - compiled
    """Headers of the batches in ``buf`` (uint8) into ``out (capacity, N_H)`` int64.

    Returns (batches, status): status 0 = stopped at the end or at a partial
    trailing batch; 1 = the next slice is shorter than MIN_SLICE (kafka-python's
    CorruptRecordError "Record size is less than the minimum record overhead"),
    its start in ``out[batches, H_POS]``; 2 = ``out`` is full (call again from
    the last end with a bigger array). A slice of magic 0/1 gets its magic and
    nothing else (the caller sends the fetch to kafka-python's own reader).
    """
    n = buf.shape[0]
    pos = np.int64(0)
    nb = 0
    while n - pos >= LOG_OVERHEAD:
        length = _signed(_be(buf, pos + 8, 4), 32)
        end = pos + LOG_OVERHEAD + length
        if end > n:
            break
        if nb == out.shape[0]:
            return nb, 2
        out[nb, H_POS] = pos
        out[nb, H_END] = end
        if end - pos < MIN_SLICE:
            return nb, 1
        magic = _signed(_be(buf, pos + 16, 1), 8)
        out[nb, H_MAGIC] = magic
        if magic >= 2 and end - pos >= HEADER_SIZE:
            out[nb, H_BASE] = _signed(_be(buf, pos, 8), 64)
            out[nb, H_EPOCH] = _signed(_be(buf, pos + 12, 4), 32)
            out[nb, H_CRC] = _be(buf, pos + 17, 4)
            out[nb, H_ATTR] = _signed(_be(buf, pos + 21, 2), 16)
            out[nb, H_LAST_DELTA] = _signed(_be(buf, pos + 23, 4), 32)
            out[nb, H_FIRST_TS] = _signed(_be(buf, pos + 27, 8), 64)
            out[nb, H_MAX_TS] = _signed(_be(buf, pos + 35, 8), 64)
            out[nb, H_PRODUCER] = _signed(_be(buf, pos + 43, 8), 64)
            out[nb, H_COUNT] = _signed(_be(buf, pos + 57, 4), 32)
        nb += 1
        pos = end
    return nb, 0


@njit(**NJIT_INLINE)
def _varint(buf, p, end, st):  # pragma: no cover - compiled
    """(value, next position) of the zigzag varint at ``p``; sets st[S_ERR] on error."""
    if p >= end or p < 0:
        st[S_ERR] = E_SHORT
        return np.int64(0), p
    b = np.uint64(buf[p])
    result = b & np.uint64(0x7F)
    p += 1
    shift = np.uint64(7)
    while b & np.uint64(0x80):
        if shift >= 64:
            st[S_ERR] = E_VARINT
            return np.int64(0), p
        if p >= end:
            st[S_ERR] = E_SHORT
            return np.int64(0), p
        b = np.uint64(buf[p])
        result |= (b & np.uint64(0x7F)) << shift
        p += 1
        shift += np.uint64(7)
    v = np.int64(result >> np.uint64(1)) ^ -np.int64(result & np.uint64(1))
    return v, p


@njit(**NJIT_INLINE)
def _utf8_ok(buf, a, e):  # pragma: no cover - compiled
    """Is ``buf[a:e]`` valid UTF-8 by Python's strict decoder?"""
    p = a
    while p < e:
        c = buf[p]
        if c < 0x80:
            p += 1
            continue
        if 0xC2 <= c <= 0xDF:
            need, lo, hi = 1, 0x80, 0xBF
        elif c == 0xE0:
            need, lo, hi = 2, 0xA0, 0xBF
        elif c == 0xED:
            need, lo, hi = 2, 0x80, 0x9F  # no surrogates
        elif 0xE1 <= c <= 0xEF:
            need, lo, hi = 2, 0x80, 0xBF
        elif c == 0xF0:
            need, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= c <= 0xF3:
            need, lo, hi = 3, 0x80, 0xBF
        elif c == 0xF4:
            need, lo, hi = 3, 0x80, 0x8F
        else:
            return False
        if p + need >= e:  # a sequence cut by the end
            return False
        b = buf[p + 1]
        if b < lo or b > hi:
            return False
        for k in range(2, need + 1):
            b = buf[p + k]
            if b < 0x80 or b > 0xBF:
                return False
        p += need + 1
    return True


@njit(**NJIT)
def _parse_records(  # pragma: no cover - compiled
    buf, seg, fetch_offset, offsets, stamps, keys, values, headers, sizes, seg_last, st
):
    """Records of the segments ``seg (k, 7)`` int64: start, end, record count, base
    offset, first timestamp, log-append time (1: every record takes the batch's max
    timestamp, column 6; 0: first timestamp + the record's delta).

    Writes the records at offsets >= ``fetch_offset`` (earlier ones are read and
    checked, as kafka-python does, then dropped): ``offsets``, ``stamps`` (n,)
    int64; ``keys``, ``values`` (n, 2) int64 start and length (-1: null);
    ``headers (n, 2)`` int64 start of the header section and header count;
    ``sizes (n,)`` int64 the record's length field. ``seg_last (k,)`` gets the
    offset of the last record read in each segment (int64 min: none). ``st``
    (N_S,) int64: records written, error code and where (``S_*``).

    Why one function: a record's fields are read in their order, and every read
    can be the one that fails; splitting it would pass the position and the
    status through every call.
    """
    n = 0
    for s in range(seg.shape[0]):
        seg_last[s] = _NONE
    for s in range(seg.shape[0]):
        p = seg[s, 0]
        end = seg[s, 1]
        count = seg[s, 2]
        base = seg[s, 3]
        first_ts = seg[s, 4]
        log_append = seg[s, 5] != 0
        max_ts = seg[s, 6]
        st[S_SEG] = s
        for _r in range(count):
            length, p = _varint(buf, p, end, st)
            if st[S_ERR]:
                break
            start = p
            _attr, p = _varint(buf, p, end, st)
            if st[S_ERR]:
                break
            ts_delta, p = _varint(buf, p, end, st)
            if st[S_ERR]:
                break
            off_delta, p = _varint(buf, p, end, st)
            if st[S_ERR]:
                break
            klen, p = _varint(buf, p, end, st)
            if st[S_ERR]:
                break
            kpos = p
            if klen >= 0:
                p += klen
            vlen, p = _varint(buf, p, end, st)
            if st[S_ERR]:
                break
            vpos = p
            if vlen >= 0:
                p += vlen
            hcount, p = _varint(buf, p, end, st)
            if st[S_ERR]:
                break
            if hcount < 0:
                st[S_ERR] = E_HEADER_COUNT
                st[S_A] = hcount
                break
            hpos = p
            for _h in range(hcount):
                hk, p = _varint(buf, p, end, st)
                if st[S_ERR]:
                    break
                if hk < 0:
                    st[S_ERR] = E_HEADER_KEY
                    st[S_A] = hk
                    break
                if not _utf8_ok(buf, p, min(p + hk, end)):
                    st[S_ERR] = E_UTF8
                    break
                p += hk
                hv, p = _varint(buf, p, end, st)
                if st[S_ERR]:
                    break
                if hv >= 0:
                    p += hv
            if st[S_ERR]:
                break
            if p - start != length:
                st[S_ERR] = E_SIZE
                st[S_A] = length
                st[S_B] = p - start
                break
            offset = base + off_delta
            seg_last[s] = offset
            if offset < fetch_offset:
                st[S_SKIPPED] += 1
                st[S_SKIPPED_BYTES] += length
                continue
            offsets[n] = offset
            stamps[n] = max_ts if log_append else first_ts + ts_delta
            keys[n, 0] = kpos
            keys[n, 1] = klen if klen >= 0 else -1
            values[n, 0] = vpos
            values[n, 1] = vlen if vlen >= 0 else -1
            headers[n, 0] = hpos
            headers[n, 1] = hcount
            sizes[n] = length
            n += 1
        if st[S_ERR]:
            st[S_N] = n
            return
        if p != end:
            st[S_ERR] = E_TRAILING
            st[S_A] = end - p
            st[S_N] = n
            return
    st[S_N] = n
