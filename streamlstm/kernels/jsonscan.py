"""A compiled scanner for flat JSON objects: record values -> numbers and key spans.

Arrays in, arrays out: the values of a batch back to back (``buf`` uint8,
record ``i`` is ``buf[starts[i]:ends[i]]``, an end below its start marks a
record that is not bytes), the wanted top-level fields by name, and per record
either the fields' values or "not mine". The decoder
(:mod:`streamlstm.io.fastjson`) sends every "not mine" record to the general
decoder, so this scanner only has to be exact on what it accepts, and it
accepts only what it can read exactly:

- one JSON object of members separated by JSON whitespace, all bytes ASCII,
  no backslash in any string (so no escapes and no unicode keys: those go to
  the general decoder), no nested object or array anywhere, no field read twice;
- a number field holds a JSON number (strict grammar) or ``null``; the
  number becomes the correctly rounded float64 (what orjson + numpy give, bit
  for bit) when it has at most 18 significant digits and is a normal double:
  by Clinger's fast path, else by Eisel-Lemire, which says when it cannot
  decide; anything else (19-digit numbers, 1e400, subnormals, ``NaN``) is
  "not mine";
- a string field (the stream key) holds a string; its span is returned.

Length: the grammar walk and the number conversion it feeds (Clinger, Eisel-Lemire and
its table of powers of five) are one contract, exactness, that the tests hold against
orjson record by record; split, each half would be checked apart from what it serves.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamlstm.kernels.config import NJIT, NJIT_INLINE

STRING = 0
NUMBER = 1
# Significant digits accumulated; the scanner converts up to 15 by Clinger's fast
# path (10**15 < 2**53) and up to 18 by Eisel-Lemire (10**18 < 2**63: orjson reads
# longer integers otherwise); longer numbers go to the general decoder.
MAX_DIGITS = 19
_POW10 = np.array([10.0**k for k in range(23)], np.float64)
_U1 = np.uint64(1)
_U10 = np.uint64(10)
_S32 = np.uint64(32)
_M32 = np.uint64(0xFFFFFFFF)
_TOP = np.uint64(1 << 63)
# fast_float's precision mask for binary64 (mantissa bits + 3 = 55 bits checked).
_PREC_MASK = np.uint64(0xFFFFFFFFFFFFFFFF >> 55)
_Q_MIN = -342
_Q_MAX = 308


def _powers_of_five() -> tuple[np.ndarray, np.ndarray]:
    """fast_float's 128-bit table of 5**q, q in [-342, 308]: normalised so the top
    bit is set; truncated for q >= 0, ``2**b // 5**-q + 1`` for q < 0."""
    out = []
    for q in range(_Q_MIN, 0):
        p5 = 5**-q
        z = p5.bit_length()
        if q >= -27:
            c = 2 ** (z + 127) // p5 + 1
        else:
            c = 2 ** (2 * z + 128) // p5 + 1
            while c >= 1 << 128:
                c //= 2
        out.append(c)
    for q in range(0, _Q_MAX + 1):
        p5 = 5**q
        while p5 < 1 << 127:
            p5 *= 2
        while p5 >= 1 << 128:
            p5 //= 2
        out.append(p5)
    hi = np.array([c >> 64 for c in out], np.uint64)
    lo = np.array([c & ((1 << 64) - 1) for c in out], np.uint64)
    return hi, lo


_P5_HI, _P5_LO = _powers_of_five()


# A string's bytes by class: 0 ordinary, 1 the closing quote, 2 not the scanner's (a
# backslash, a control character, non-ASCII).
_SCLASS = np.array(
    [2 if (c == 92 or c < 32 or c >= 128) else 1 if c == 34 else 0 for c in range(256)], np.uint8
)
# JSON whitespace: space, tab, line feed, carriage return.
_SPACE = np.array([c in (32, 9, 10, 13) for c in range(256)], np.bool_)


@njit(**NJIT_INLINE)
def _number(buf, p, end, out, i, j):  # pragma: no cover - compiled
    """Scan the JSON number at ``p``; if ``j >= 0`` store its exact value in
    ``out[i, j]``. Returns the position after it, -1 if it is not a number, -2 if it
    is one the fast path does not convert exactly.

    Why one function: the grammar walk gathers the significand, its digit count and
    the decimal exponent that the conversion needs; split, they would travel as a
    tuple through every return.
    """
    neg = False
    if p < end and buf[p] == 45:
        neg = True
        p += 1
    if p >= end or buf[p] < 48 or buf[p] > 57:
        return -1
    man = np.uint64(0)
    nd = 0
    e10 = 0
    exact = True
    is_int = True
    if buf[p] == 48:
        p += 1
    else:
        while p < end and 48 <= buf[p] <= 57:
            if nd < MAX_DIGITS:
                man = man * _U10 + np.uint64(buf[p] - 48)
            else:
                exact = False
            nd += 1
            p += 1
    if p < end and buf[p] == 46:
        is_int = False
        p += 1
        if p >= end or buf[p] < 48 or buf[p] > 57:
            return -1
        while p < end and 48 <= buf[p] <= 57:
            d = buf[p] - 48
            if nd == 0 and d == 0:
                e10 -= 1  # a leading zero of the fraction
            elif nd < MAX_DIGITS:
                man = man * _U10 + np.uint64(d)
                nd += 1
                e10 -= 1
            else:
                exact = False
                nd += 1
            p += 1
    if p < end and (buf[p] == 101 or buf[p] == 69):
        is_int = False
        p += 1
        eneg = False
        if p < end and (buf[p] == 43 or buf[p] == 45):
            eneg = buf[p] == 45
            p += 1
        if p >= end or buf[p] < 48 or buf[p] > 57:
            return -1
        ex = 0
        while p < end and 48 <= buf[p] <= 57:
            if ex < 100000:
                ex = ex * 10 + (buf[p] - 48)
            p += 1
        e10 += -ex if eneg else ex
    # Readable by orjson as a plain int or a finite float, whether the field is read
    # or not (beyond this, orjson's and the standard library's paths part ways).
    if nd > 18 or e10 > 300 or e10 < -300:
        return -2
    if j < 0:
        return p
    # orjson reads an integer beyond 18 digits as a float or not at all: not ours.
    if not exact or (is_int and nd > 18):
        return -2
    if man == 0:
        # orjson reads "-0" as the integer 0 and "-0.0" as the float -0.0.
        out[i, j] = -0.0 if (neg and not is_int) else 0.0
        return p
    if nd <= 15 and -22 <= e10 <= 22:
        # Clinger: both operands exact, one rounding.
        v = np.float64(np.int64(man))
        if e10 >= 0:
            v = v * _POW10[e10]
        else:
            v = v / _POW10[-e10]
    else:
        v = _eisel_lemire(man, e10)
        if v < 0:
            return -2
    out[i, j] = -v if neg else v
    return p


@njit(**NJIT)
def _mul128(a, b):  # pragma: no cover - compiled
    """(high, low) 64-bit halves of the 128-bit product of two uint64."""
    a_lo = a & _M32
    a_hi = a >> _S32
    b_lo = b & _M32
    b_hi = b >> _S32
    p0 = a_lo * b_lo
    p1 = a_lo * b_hi
    p2 = a_hi * b_lo
    p3 = a_hi * b_hi
    mid = (p0 >> _S32) + (p1 & _M32) + (p2 & _M32)
    lo = (p0 & _M32) | (mid << _S32)
    hi = p3 + (p1 >> _S32) + (p2 >> _S32) + (mid >> _S32)
    return hi, lo


@njit(**NJIT)
def _eisel_lemire(w, q):  # pragma: no cover - compiled
    """The double nearest ``w * 10**q`` (w: 1..10**18, as uint64), correctly rounded,
    or -1.0 when the fast algorithm cannot decide or the result is subnormal or
    infinite (the caller then leaves the record to the general decoder).

    Eisel-Lemire as in fast_float's ``compute_float`` (Lemire, "Number Parsing at a
    Gigabyte per Second", 2021): a 128-bit truncated power of five, one or two
    64x64 products, 54 bits kept and rounded; more conservative than fast_float
    near rounding boundaries (see below), so the result is the correctly rounded
    double, as orjson's and Python's parsers give, or no result.
    """
    if q < _Q_MIN or q > _Q_MAX:
        return -1.0
    lz = 0
    while w & _TOP == 0:
        w = w << _U1
        lz += 1
    idx = q - _Q_MIN
    hi, lo = _mul128(w, _P5_HI[idx])
    if hi & _PREC_MASK == _PREC_MASK:
        hi2, _ = _mul128(w, _P5_LO[idx])
        lo2 = lo + hi2
        if hi2 > lo2:
            hi = hi + _U1
        lo = lo2
    upper = np.int64(hi >> np.uint64(63))
    shift = np.uint64(upper + 9)
    mant = hi >> shift
    power2 = (((152170 + 65536) * q) >> 16) + 63 + upper - lz + 1023
    if power2 <= 0 or power2 >= 0x7FF - 1:
        return -1.0
    # The product is a truncation (and the table's powers approximations): the true
    # bits below the 54 kept may differ from these by carries, which can only matter
    # when they are all zeros or all ones (at or next to a rounding boundary, an
    # exact tie included). Those cases, ~1 in 2**8, go to the general decoder, so
    # the answer never rests on the last bit of the table.
    below = hi & ((_U1 << shift) - _U1)
    if below == 0 or below == (_U1 << shift) - _U1:
        return -1.0
    mant = mant + (mant & _U1)
    mant = mant >> _U1
    if mant >= (np.uint64(2) << np.uint64(52)):
        mant = np.uint64(1) << np.uint64(52)
        power2 += 1
    if power2 >= 0x7FF:
        return -1.0
    # mant is the 53-bit significand with its leading one: exact as a double, and so
    # is its scaling by a power of two (the result is normal).
    return math.ldexp(np.float64(np.int64(mant)), power2 - 1075)


@njit(**NJIT_INLINE)
def _literal(buf, p, end, word):  # pragma: no cover - compiled
    n = word.shape[0]
    if p + n > end:
        return -1
    for k in range(n):
        if buf[p + k] != word[k]:
            return -1
    return p + n


@njit(**NJIT_INLINE)
def _which(buf, a, e, fbuf, foffs):  # pragma: no cover - compiled
    """Index of the wanted field named ``buf[a:e]``, or -1."""
    for f in range(foffs.shape[0] - 1):
        fa = foffs[f]
        n = foffs[f + 1] - fa
        if n != e - a:
            continue
        same = True
        for k in range(n):
            if buf[a + k] != fbuf[fa + k]:
                same = False
                break
        if same:
            return f
    return -1


_TRUE = np.frombuffer(b"true", np.uint8).copy()
_FALSE = np.frombuffer(b"false", np.uint8).copy()
_NULL = np.frombuffer(b"null", np.uint8).copy()


@njit(**NJIT)
def _scan(buf, starts, ends, fbuf, foffs, fkind, vals, spans, ok):  # pragma: no cover
    """Scan every record ``buf[starts[i]:ends[i]]`` (``ends[i] < starts[i]``: not bytes,
    not mine): ``vals (n, m)`` float64 the number fields (NaN: absent or
    null), ``spans (n, 2)`` int64 start and length of the string field (-1: absent),
    ``ok (n,)`` bool whether the record is one this scanner reads exactly.

    Why one function: the object grammar (members, separators, the closing brace) is one
    loop whose every exit means "not mine" (``break``). The whitespace and string scans
    are written out in it: as inlined helpers taking the buffer, they cost ~40 ns a record
    and ~8 a member more (Numba counts a reference to the buffer at every call).
    """
    m = foffs.shape[0] - 1
    lens = 0  # bit k set: a wanted field name is k bytes long (64 and more: always look)
    for f in range(m):
        k = foffs[f + 1] - foffs[f]
        lens |= (1 << k) if k < 64 else 0
    seen = np.zeros(m, np.bool_)  # field f was read (given twice: the last wins in a dict)
    for i in range(starts.shape[0]):
        for f in range(m):
            vals[i, f] = np.nan
            seen[f] = False
        spans[i, 0] = -1
        spans[i, 1] = -1
        ok[i] = False
        p = starts[i]
        end = ends[i]
        if end < p:
            continue
        while p < end and buf[p] <= 32 and _SPACE[buf[p]]:
            p += 1
        if p >= end or buf[p] != 123:
            continue
        p += 1
        while p < end and buf[p] <= 32 and _SPACE[buf[p]]:
            p += 1
        if p < end and buf[p] == 125:
            p += 1
            while p < end and buf[p] <= 32 and _SPACE[buf[p]]:
                p += 1
            ok[i] = p == end
            continue
        while True:
            # a member's name
            if p >= end or buf[p] != 34:
                break
            q = p + 1
            while q < end and _SCLASS[buf[q]] == 0:
                q += 1
            if q >= end or _SCLASS[buf[q]] != 1:
                break
            q += 1
            n = q - 2 - p
            # Most names are not wanted: a bit per wanted name length sorts most out.
            f = _which(buf, p + 1, q - 1, fbuf, foffs) if n >= 64 or (lens >> n) & 1 else -1
            if f >= 0:
                if seen[f]:
                    break
                seen[f] = True
            p = q
            while p < end and buf[p] <= 32 and _SPACE[buf[p]]:
                p += 1
            if p >= end or buf[p] != 58:
                break
            p += 1
            while p < end and buf[p] <= 32 and _SPACE[buf[p]]:
                p += 1
            if p >= end:
                break
            # its value
            c = buf[p]
            if c == 34:
                if f >= 0 and fkind[f] != STRING:
                    break
                q = p + 1
                while q < end and _SCLASS[buf[q]] == 0:
                    q += 1
                if q >= end or _SCLASS[buf[q]] != 1:
                    break
                if f >= 0:
                    spans[i, 0] = p + 1
                    spans[i, 1] = q - (p + 1)
                q += 1
            elif c == 45 or 48 <= c <= 57:
                if f >= 0 and fkind[f] != NUMBER:
                    break
                q = _number(buf, p, end, vals, i, f)
                if q < 0:
                    break
            elif c == 110:
                q = _literal(buf, p, end, _NULL)
                if q < 0 or (f >= 0 and fkind[f] != NUMBER):
                    break
            elif c == 116 or c == 102:
                q = _literal(buf, p, end, _TRUE if c == 116 else _FALSE)
                if q < 0 or f >= 0:
                    break
            else:
                break  # an object, an array, or not JSON
            # a comma and the next member, or the closing brace and nothing after it
            p = q
            while p < end and buf[p] <= 32 and _SPACE[buf[p]]:
                p += 1
            if p >= end:
                break
            if buf[p] == 44:
                p += 1
                while p < end and buf[p] <= 32 and _SPACE[buf[p]]:
                    p += 1
                continue
            if buf[p] == 125:
                p += 1
                while p < end and buf[p] <= 32 and _SPACE[buf[p]]:
                    p += 1
                ok[i] = p == end
            break


@njit(**NJIT)
def _join_spans(buf, starts, lens):  # pragma: no cover - compiled
    """The bytes ``buf[starts[i]:starts[i] + lens[i]]`` back to back, separated by one 0
    byte (which no string the scanner accepts holds: it leaves control characters to
    the general decoder). One ``split`` of their text then makes every key string in C,
    instead of a slice object and a string per key."""
    n = starts.shape[0]
    total = max(n - 1, 0)
    for i in range(n):
        total += lens[i]
    out = np.empty(total, np.uint8)
    p = 0
    for i in range(n):
        if i > 0:
            out[p] = 0
            p += 1
        a = starts[i]
        for k in range(lens[i]):
            out[p + k] = buf[a + k]
        p += lens[i]
    return out
