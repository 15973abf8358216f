"""Recurrent cells and the forecast head over a *wave* of stream slots.

A wave is a set of events whose slots are all distinct, so their rows can be
advanced together as one matrix product. Every function here is row
independent: the value computed for row ``r`` depends only on row ``r`` of the
inputs and on the weights, and every output element is accumulated over ``k``
in the same order whatever the number of rows. That is what makes a batch of
1024 events bit-identical to 1024 calls with one event.

Weight layout (kernel side; :mod:`streamlstm.model` converts from PyTorch's):

- ``w_ih : (L, K, G) float32`` input weights, transposed, ``K = max(I, H)``;
  layer 0 uses the first ``I`` rows, layers > 0 the first ``H`` rows.
- ``w_hh : (L, H, G) float32`` recurrent weights, transposed.
- ``b_ih, b_hh : (L, G) float32``.
- ``G = 4H`` for the LSTM (gate order i, f, g, o), ``3H`` for the GRU
  (r, z, n), as in ``torch.nn.LSTM`` / ``torch.nn.GRU``.
- ``w_head : (H, F) float32`` and ``b_head : (F,) float32``: forecast of the
  next event's normalised features from the top layer's h.

Speed, and why it does not cost a bit of batch invariance:

- The products run through register tiles (:func:`_make_tile`): a block of
  4 rows times 64 columns (16 with AVX2) is accumulated in vector registers over the whole
  ``k`` loop, so a weight row is loaded once per 4 events and no partial sum
  goes through memory. Each element is still ``bias + a[0] w[0] + a[1] w[1] +
  ...`` in increasing ``k``, one IEEE multiply and one IEEE add per step (no
  fused multiply-add: fastmath is off, so LLVM may not contract them), which
  is the same value whether it sits in a vector lane, in a 1-row tile or in a
  scalar remainder column.
- A wave is processed 4 rows at a time through all layers, so the gate
  pre-activations of a block stay in L1 instead of making an (m, G) round
  trip through L2.
- ``exp``, ``sigmoid`` and ``tanh`` are our own float32 functions built from
  IEEE add, multiply, fused multiply-add (explicit ``llvm.fma``, in the
  polynomials only, never in the products), divide, floor and an
  exponent-bit construction, so LLVM vectorises the gate loops (libm's
  ``expf`` / ``tanhf`` are opaque scalar calls and cost more than the matrix
  products). They are within ~1e-7 of the exact functions (libm: ~1e-7), and
  being free of libm they give the same bits on every host (a CPU without
  FMA gets the same fused result from a slower software ``fmaf``).

Length: the LSTM and GRU waves share the register-blocked products and float32 helpers
they inline; splitting the cells from their helpers would put the same LLVM concerns in
two files.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import binding as llvm  # type: ignore[import-untyped]
from llvmlite import ir  # type: ignore[import-untyped]
from numba import njit, types
from numba.core import cgutils, config
from numba.extending import intrinsic

from streamlstm.kernels.config import NJIT

# -- register tiles ------------------------------------------------------------------------

# Rows per tile. 4 rows x 64 columns = 16 AVX-512 accumulators (of 32): a weight
# vector load feeds 4 multiply-adds, which keeps the multiply and add pipes
# busy; 8 rows would need all 32 registers and spill inside the k loop.
TILE_ROWS = 4


def _has_avx512() -> bool:
    """Whether Numba compiles for a CPU with AVX-512 (32 vector registers)."""
    feats = getattr(config, "CPU_FEATURES", None)
    if feats is None:
        feats = llvm.get_host_cpu_features().flatten()
    return "+avx512f" in feats


# Columns of the wide tile and its vector shape. With AVX2's 16 registers a
# 4 x 64 tile (32 ymm accumulators) would spill inside the k loop, so there
# the wide tile is 4 x 16 (8 ymm accumulators). Either shape gives the same
# bits: each element's sum is the same sequence of IEEE operations.
if _has_avx512():
    TILE_COLS, _TILE_NVEC, _TILE_WIDTH = 64, 4, 16
else:
    TILE_COLS, _TILE_NVEC, _TILE_WIDTH = 16, 2, 8


def _make_tile(rows: int, n_vec: int, width: int):
    """An intrinsic computing a ``rows x (n_vec * width)`` block of ``bias + a @ w``.

    ``tile(a, a_off, lda, w, w_off, ldw, k_n, b, b_off, o, o_off, ldo)``, all
    arrays float32 with unit inner stride, offsets and leading dimensions in
    elements: ``o[o_off + rr*ldo + j] = b[b_off + j] + sum_k a[a_off + rr*lda + k]
    * w[w_off + k*ldw + j]`` for ``rr < rows``, ``j < n_vec * width``, the sum in
    increasing ``k``. Written in LLVM IR because Numba cannot keep a block of
    accumulators in registers: they live in allocas that mem2reg turns into
    vector registers, and the multiply and add carry no fast-math flags.
    """

    @intrinsic
    def tile(typingctx, a, a_off, lda, w, w_off, ldw, k_n, b, b_off, o, o_off, ldo):
        arrays = (a, w, b, o)
        if not all(isinstance(t, types.Array) and t.dtype == types.float32 for t in arrays):
            return None
        sig = types.void(a, a_off, lda, w, w_off, ldw, k_n, b, b_off, o, o_off, ldo)

        def codegen(context, builder, sig, args):
            a, a_off, lda, w, w_off, ldw, k_n, b, b_off, o, o_off, ldo = args
            i64 = ir.IntType(64)
            i32 = ir.IntType(32)
            f32 = ir.FloatType()
            vt = ir.VectorType(f32, width) if width > 1 else f32

            def base(aty, val, off):
                data = context.make_array(aty)(context, builder, val).data
                return builder.gep(data, [off])

            def at(p, i):
                return builder.gep(p, [i if isinstance(i, ir.Value) else ir.Constant(i64, i)])

            def load(p):
                if width == 1:
                    return builder.load(p, align=4)
                return builder.load(builder.bitcast(p, vt.as_pointer()), align=4)

            def store(v, p):
                if width == 1:
                    builder.store(v, p, align=4)
                else:
                    builder.store(v, builder.bitcast(p, vt.as_pointer()), align=4)

            ta, tw, tb, to = sig.args[0], sig.args[3], sig.args[7], sig.args[9]
            pa = base(ta, a, a_off)
            pw = base(tw, w, w_off)
            pb = base(tb, b, b_off)
            po = base(to, o, o_off)
            acc = []
            for _ in range(rows):
                for v in range(n_vec):
                    slot = cgutils.alloca_once(builder, vt)
                    builder.store(load(at(pb, v * width)), slot)
                    acc.append(slot)
            undef = ir.Constant(vt, ir.Undefined)
            splat_mask = ir.Constant(ir.VectorType(i32, width), [0] * width)
            with cgutils.for_range(builder, k_n) as loop:
                k = loop.index
                wrow = at(pw, builder.mul(k, ldw))
                wv = [load(at(wrow, v * width)) for v in range(n_vec)]
                for rr in range(rows):
                    ak = at(pa, builder.add(builder.mul(ir.Constant(i64, rr), lda), k))
                    av = builder.load(ak, align=4)
                    if width > 1:
                        av = builder.insert_element(undef, av, ir.Constant(i32, 0))
                        av = builder.shuffle_vector(av, undef, splat_mask)
                    for v in range(n_vec):
                        slot = acc[rr * n_vec + v]
                        prod = builder.fmul(av, wv[v])
                        builder.store(builder.fadd(builder.load(slot), prod), slot)
            for rr in range(rows):
                orow = at(po, builder.mul(ir.Constant(i64, rr), ldo))
                for v in range(n_vec):
                    store(builder.load(acc[rr * n_vec + v]), at(orow, v * width))
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile4_wide = _make_tile(TILE_ROWS, _TILE_NVEC, _TILE_WIDTH)
_tile4_16 = _make_tile(TILE_ROWS, 1, 16)
_tile4_8 = _make_tile(TILE_ROWS, 1, 8)
_tile4_1 = _make_tile(TILE_ROWS, 1, 1)
_tile1_wide = _make_tile(1, _TILE_NVEC, _TILE_WIDTH)
_tile1_16 = _make_tile(1, 1, 16)
_tile1_8 = _make_tile(1, 1, 8)
_tile1_1 = _make_tile(1, 1, 1)


@njit(**NJIT)
def _affine4(a, ar, k_in, w, bias, out, orow):  # pragma: no cover - compiled
    """``out[orow + i, :] = bias + a[ar + i, :k_in] @ w[:k_in, :]`` for ``i < 4``."""
    g = w.shape[1]
    lda = a.strides[0] // 4
    ldw = w.strides[0] // 4
    ldo = out.strides[0] // 4
    ao = ar * lda
    oo = orow * ldo
    j = 0
    while j + TILE_COLS <= g:
        _tile4_wide(a, ao, lda, w, j, ldw, k_in, bias, j, out, oo + j, ldo)
        j += TILE_COLS
    while j + 16 <= g:
        _tile4_16(a, ao, lda, w, j, ldw, k_in, bias, j, out, oo + j, ldo)
        j += 16
    while j + 8 <= g:
        _tile4_8(a, ao, lda, w, j, ldw, k_in, bias, j, out, oo + j, ldo)
        j += 8
    while j < g:
        _tile4_1(a, ao, lda, w, j, ldw, k_in, bias, j, out, oo + j, ldo)
        j += 1


@njit(**NJIT)
def _affine1(a, ar, k_in, w, bias, out, orow):  # pragma: no cover - compiled
    """``out[orow, :] = bias + a[ar, :k_in] @ w[:k_in, :]``, same sums as :func:`_affine4`."""
    g = w.shape[1]
    lda = a.strides[0] // 4
    ldw = w.strides[0] // 4
    ldo = out.strides[0] // 4
    ao = ar * lda
    oo = orow * ldo
    j = 0
    while j + TILE_COLS <= g:
        _tile1_wide(a, ao, lda, w, j, ldw, k_in, bias, j, out, oo + j, ldo)
        j += TILE_COLS
    while j + 16 <= g:
        _tile1_16(a, ao, lda, w, j, ldw, k_in, bias, j, out, oo + j, ldo)
        j += 16
    while j + 8 <= g:
        _tile1_8(a, ao, lda, w, j, ldw, k_in, bias, j, out, oo + j, ldo)
        j += 8
    while j < g:
        _tile1_1(a, ao, lda, w, j, ldw, k_in, bias, j, out, oo + j, ldo)
        j += 1


@njit(**NJIT)
def _affine_block(a, ar, rows, k_in, w, bias, out, orow):  # pragma: no cover - compiled
    """Rows ``ar .. ar + rows`` of ``a`` into rows ``orow ..`` of ``out``; rows is 4 or 1."""
    if rows == TILE_ROWS:
        _affine4(a, ar, k_in, w, bias, out, orow)
    else:
        for i in range(rows):
            _affine1(a, ar + i, k_in, w, bias, out, orow + i)


@njit(**NJIT)
def _affine_rows(a, m, k_in, w, bias, out):  # pragma: no cover - compiled
    """``out[r, :] = bias + a[r, :k_in] @ w[:k_in, :]`` for rows ``r < m``.

    a : (>=m, >=k_in) float32, w : (>=k_in, G) float32, bias : (G,) float32,
    out : (>=m, G) float32, each with unit stride along its last axis. Rows
    go through 4-row register tiles, the last ``m % 4`` through 1-row tiles;
    each element is summed over ``k`` in increasing order either way, so the
    blocking never changes a bit.
    """
    r = 0
    while r + TILE_ROWS <= m:
        _affine4(a, r, k_in, w, bias, out, r)
        r += TILE_ROWS
    while r < m:
        _affine1(a, r, k_in, w, bias, out, r)
        r += 1


@intrinsic
def _prefetch(typingctx, arr, off):
    """Hint the CPU to fetch the cache line holding element ``off`` of ``arr`` (flat index)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        ptr = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # rw = 1 (the rows are written back), locality = 3 (keep in all levels), data cache.
        builder.call(fn, [ptr, ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, off), codegen


@njit(**NJIT)
def _prefetch_row(state, s):  # pragma: no cover - compiled
    """Prefetch every cache line of ``state[s]`` (a C-contiguous per-slot row)."""
    row = state.strides[0] // state.itemsize
    base = s * row
    # One prefetch per 64-byte line; the row's last line when it straddles one more.
    step = 64 // state.itemsize
    for off in range(0, row, step):
        _prefetch(state, base + off)
    if row > 0:
        _prefetch(state, base + row - 1)


@njit(**NJIT)
def _prefetch_state(slots, r, n, state):  # pragma: no cover - compiled
    """Prefetch the state rows ``state[slots[r:r + n]]``.

    Slots are random over a table far larger than the caches (100k streams of
    H = 64 are ~50 MB of h and c), so each row would otherwise cost a main
    memory round trip in the middle of a tile; a block ahead is enough lead.
    """
    for i in range(n):
        _prefetch_row(state, slots[r + i])


# -- vectorisable float32 exp, sigmoid, tanh -------------------------------------------------

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_F2 = np.float32(2.0)
_HALF = np.float32(0.5)
# exp: clamped so 2**n stays a normal float (n in [-126, 127]); beyond, the
# sigmoid and tanh built on it are 1 or +-1 in float32, or within 1e-38 of 0.
_EXP_LO = np.float32(-87.0)
_EXP_HI = np.float32(88.0)
_LOG2E = np.float32(1.44269504088896341)
# Cody-Waite split of ln 2 (Cephes expf): n * _LN2_HI is exact for |n| < 2**9.
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_EP0 = np.float32(1.9875691500e-4)
_EP1 = np.float32(1.3981999507e-3)
_EP2 = np.float32(8.3334519073e-3)
_EP3 = np.float32(4.1665795894e-2)
_EP4 = np.float32(1.6666665459e-1)
_EP5 = np.float32(5.0000001201e-1)
# tanh: below this |x| the formula 1 - 2 / (exp(2x) + 1) cancels, so an odd
# polynomial (Cephes tanhf) takes over.
_TANH_SMALL = np.float32(0.625)
_TP0 = np.float32(-5.70498872745e-3)
_TP1 = np.float32(2.06390887954e-2)
_TP2 = np.float32(-5.37397155531e-2)
_TP3 = np.float32(1.33314422036e-1)
_TP4 = np.float32(-3.33332819422e-1)


@intrinsic
def _pow2i(typingctx, n):
    """``2.0 ** n`` for an integral float32 ``n`` in [-126, 127], from its exponent bits."""
    if n != types.float32:
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        e = builder.add(builder.fptosi(args[0], i32), ir.Constant(i32, 127))
        return builder.bitcast(builder.shl(e, ir.Constant(i32, 23)), ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (IEEE fusedMultiplyAdd: the same bits on every host).

    Halves the work of a polynomial step; the gate functions were ~30% of a
    wave at H = 64 and this takes ~8% off the wave.
    """
    if not (a == b == c == types.float32):
        return None

    def codegen(context, builder, sig, args):
        f32 = ir.FloatType()
        fnty = ir.FunctionType(f32, [f32, f32, f32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.fma.f32")
        return builder.call(fn, args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@njit(**NJIT)
def _exp(x):  # pragma: no cover - compiled
    """float32 ``exp`` (Cephes expf; relative error < 1e-7 on [-87, 88])."""
    x = min(max(x, _EXP_LO), _EXP_HI)
    n = np.floor(_fma(x, _LOG2E, _HALF))
    r = _fma(n, -_LN2_HI, x)
    r = _fma(n, -_LN2_LO, r)
    y = _fma(_EP0, r, _EP1)
    y = _fma(y, r, _EP2)
    y = _fma(y, r, _EP3)
    y = _fma(y, r, _EP4)
    y = _fma(y, r, _EP5)
    y = _fma(y, r * r, r + _F1)
    return y * _pow2i(n)


@njit(**NJIT)
def _sigmoid(x):  # pragma: no cover - compiled
    """float32 logistic ``1 / (1 + exp(-x))``."""
    return _F1 / (_F1 + _exp(-x))


@njit(**NJIT)
def _tanh(x):  # pragma: no cover - compiled
    """float32 ``tanh`` (absolute error < 1e-7; both branches computed, then selected)."""
    ax = abs(x)
    big = _F1 - _F2 / (_exp(ax + ax) + _F1)
    big = big if x >= _F0 else -big
    z = x * x
    p = _fma(_TP0, z, _TP1)
    p = _fma(p, z, _TP2)
    p = _fma(p, z, _TP3)
    p = _fma(p, z, _TP4)
    small = _fma(p * z, x, x)
    return small if ax < _TANH_SMALL else big


# -- cells ---------------------------------------------------------------------------------


@njit(**NJIT)
def _lstm_wave(x_rows, m, in_size, slots, h, c, w_ih, w_hh, b_ih, b_hh, hbuf, gi, gh):
    """Advance the LSTM state of ``m`` distinct slots by one event each.

    x_rows : (>=m, K) float32 layer-0 inputs (normalised, no NaN).
    slots : (>=m,) int64 slot of each row. h, c : (n_slots, L, H) float32,
    updated in place. hbuf : (>=m, K) float32 scratch that ends holding the
    top layer's new h; gi, gh : (>=4, 4H) float32 scratch.

    i = σ(W_i x + U_i h + b_i), f = σ(W_f x + U_f h + b_f),
    g = tanh(W_g x + U_g h + b_g), o = σ(W_o x + U_o h + b_o),
    c' = f * c + i * g, h' = o * tanh(c').
    The pre-activation is ``(b_ih + W x) + (b_hh + U h)``, as in PyTorch.
    """
    n_layers = h.shape[1]
    hid = h.shape[2]
    _prefetch_state(slots, 0, min(TILE_ROWS, m), h)
    _prefetch_state(slots, 0, min(TILE_ROWS, m), c)
    r = 0
    while r < m:
        # Blocks of 4 rows go through every layer before the next block, so
        # the block's gates never leave L1; the last m % 4 rows go one by one.
        rows = TILE_ROWS if r + TILE_ROWS <= m else 1
        ahead = min(TILE_ROWS, m - r - rows)
        _prefetch_state(slots, r + rows, ahead, h)
        _prefetch_state(slots, r + rows, ahead, c)
        for layer in range(n_layers):
            if layer == 0:
                _affine_block(x_rows, r, rows, in_size, w_ih[layer], b_ih[layer], gi, 0)
            else:
                _affine_block(hbuf, r, rows, hid, w_ih[layer], b_ih[layer], gi, 0)
            # hbuf's rows are free once the input product has read them: they
            # take h_{t-1} of this layer for the recurrent product.
            for i in range(rows):
                s = slots[r + i]
                for q in range(hid):
                    hbuf[r + i, q] = h[s, layer, q]
            _affine_block(hbuf, r, rows, hid, w_hh[layer], b_hh[layer], gh, 0)
            for i in range(rows):
                s = slots[r + i]
                for q in range(hid):
                    ig = _sigmoid(gi[i, q] + gh[i, q])
                    fg = _sigmoid(gi[i, hid + q] + gh[i, hid + q])
                    gg = _tanh(gi[i, 2 * hid + q] + gh[i, 2 * hid + q])
                    og = _sigmoid(gi[i, 3 * hid + q] + gh[i, 3 * hid + q])
                    cn = fg * c[s, layer, q] + ig * gg
                    c[s, layer, q] = cn
                    h[s, layer, q] = og * _tanh(cn)
                for q in range(hid):
                    hbuf[r + i, q] = h[s, layer, q]
        r += rows


@njit(**NJIT)
def _gru_wave(x_rows, m, in_size, slots, h, w_ih, w_hh, b_ih, b_hh, hbuf, gi, gh):
    """Advance the GRU state of ``m`` distinct slots by one event each.

    Same arrays as :func:`_lstm_wave` without ``c``; gi, gh : (>=4, 3H).

    r = σ(W_r x + b_ir + U_r h + b_hr), z = σ(W_z x + b_iz + U_z h + b_hz),
    n = tanh(W_n x + b_in + r * (U_n h + b_hn)), h' = (1 - z) * n + z * h.
    """
    n_layers = h.shape[1]
    hid = h.shape[2]
    one = np.float32(1.0)
    _prefetch_state(slots, 0, min(TILE_ROWS, m), h)
    r = 0
    while r < m:
        rows = TILE_ROWS if r + TILE_ROWS <= m else 1
        ahead = min(TILE_ROWS, m - r - rows)
        _prefetch_state(slots, r + rows, ahead, h)
        for layer in range(n_layers):
            if layer == 0:
                _affine_block(x_rows, r, rows, in_size, w_ih[layer], b_ih[layer], gi, 0)
            else:
                _affine_block(hbuf, r, rows, hid, w_ih[layer], b_ih[layer], gi, 0)
            for i in range(rows):
                s = slots[r + i]
                for q in range(hid):
                    hbuf[r + i, q] = h[s, layer, q]
            _affine_block(hbuf, r, rows, hid, w_hh[layer], b_hh[layer], gh, 0)
            for i in range(rows):
                s = slots[r + i]
                for q in range(hid):
                    rg = _sigmoid(gi[i, q] + gh[i, q])
                    zg = _sigmoid(gi[i, hid + q] + gh[i, hid + q])
                    ng = _tanh(gi[i, 2 * hid + q] + rg * gh[i, 2 * hid + q])
                    h[s, layer, q] = (one - zg) * ng + zg * h[s, layer, q]
                for q in range(hid):
                    hbuf[r + i, q] = h[s, layer, q]
        r += rows


@njit(**NJIT)
def _head_rows(hbuf, m, hid, w_head, b_head, out):  # pragma: no cover - compiled
    """Forecast ``out[r, :] = b_head + hbuf[r, :H] @ w_head`` for rows ``r < m``."""
    _affine_rows(hbuf, m, hid, w_head, b_head, out)


@njit(**NJIT)
def _phi(z):  # pragma: no cover - compiled
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
