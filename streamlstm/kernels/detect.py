"""The one kernel entry per micro-batch: score, advance, forecast, alert.

For every event ``e`` (in waves of distinct slots, so events of one stream are
applied in their batch order):

1. validate: non-finite time or feature, absurd magnitude, all features
   missing, event older than the stream's last one -> rejected with an outcome
   code, no state touched;
2. score ``x_e`` against the forecast stored at the stream's previous event:
   ``r_f = (x_f - x̂_f) / resid_scale_f`` over present features,
   ``e = mean_f r_f²``, smoothed by an EWMA (span ``smooth``) into ``v``.
   With ``stream_scale`` (the default) the score says how unusual the error
   is *for this stream* (SCORING.md): ``u = v / M`` where ``M`` is the
   stream's decaying maximum of its recent normal ``v`` (time constant
   ``scale_window`` events; it learns from events with ``u < learn_ratio``,
   so an incident does not teach it, and during warm-up grows by at most
   ``learn_ratio`` per event whatever the error), and ``score = u / (1 + u)``:
   0.5 = as large as the largest recent normal error. Without it, ``v`` is
   taken as ``χ²_k / k`` of calibrated residuals and mapped with the Wilson-Hilferty approximation:
   ``score = Φ((v^{1/3} - (1 - 2/9k)) / sqrt(2/9k))``. Nothing the scorer
   learns depends on the alert thresholds;
3. alert state machine: ``min_run`` consecutive scores ``>= open`` open an
   alert (not during warm-up nor before the cooldown ends); ``close_run``
   consecutive scores ``< close`` close it;
4. missing features are replaced by their forecast (they do not count in the
   score), long gaps decay or reset the state, then the cell advances the
   state and the head stores the next forecast.

With per-stream normalisation (``P_STREAM_NORM``, :mod:`streamlstm.kernels.norm`)
an accepted event first teaches the stream's statistics (``nstat``) its present
features, and ``x_f`` above is then ``z'_f``, the model-normalised value
re-standardised with them, in the score and the cell input. The stored
forecast ``fc`` is in the units of the statistics its input was normalised
with; before the event teaches them it is turned into model-normalised units
with them (``out_fc``), and scored and imputed re-standardised with the
statistics after it. So a change of the statistics between two events is not
an error of the forecast (while they were still being learnt it was, and the
last-value forecaster lost NAB windows to it). A feature that had not varied
yet has no scale: its forecast is read in the units of the event's
statistics. The standard deviations each event was normalised with go to
``out_sd``. A gap reset forgets the statistics too: the stream starts over as
a new one.

Per-slot scalar state lives in two arrays, columns named below.

Length: the per-batch kernel is one Numba function by design (see _detect_batch); its
layout tables moved to layout.py, its cells to cells.py, its scorer to regime.py.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

from streamlstm.kernels.alerts import _alert_step
from streamlstm.kernels.cells import (
    TILE_ROWS,
    _gru_wave,
    _head_rows,
    _lstm_wave,
    _phi,
    _prefetch,
    _prefetch_row,
)
from streamlstm.kernels.config import NJIT, NJIT_INLINE
from streamlstm.kernels.layout import (  # noqa: F401 (re-exported: K.<name>)
    CELL_GRU,
    CELL_LSTM,
    CLOSED,
    DELTA_CLIP,
    EV_OPEN_REF,
    EV_REF,
    EV_SLOT,
    F_COOLDOWN_UNTIL,
    F_LAST_T,
    F_PEAK,
    F_SCALE,
    F_SMOOTH,
    I_ALERTS,
    I_BELOW,
    I_EP_BELOW,
    I_EP_COOL,
    I_EP_HELD,
    I_EPISODE,
    I_EVENTS,
    I_HAS_FC,
    I_IN_ALERT,
    I_OPEN_REF,
    I_RUN,
    I_SCALE_N,
    I_SCORED,
    I_SEEN,
    I_TOP_MASK,
    IMPUTED,
    MISSING,
    N_EV,
    N_FSTAT,
    N_ISTAT,
    N_OCODE,
    N_PARAMS,
    N_PFEAT,
    N_SSTAT,
    N_WLAYOUT,
    NON_FINITE,
    NONE,
    OC_ALERT,
    OC_OUTCOME,
    OC_TRANS,
    OK,
    OPENED,
    OUT_OF_RANGE,
    OUTCOME_NAMES,
    P_CLOSE,
    P_CLOSE_RUN,
    P_COOLDOWN,
    P_DECAY_TAU,
    P_DELTA,
    P_DT_MEAN,
    P_DT_STD,
    P_LEARN_RATIO,
    P_MAX_ABS,
    P_MIN_RUN,
    P_MIN_SCALE,
    P_NORM_WINDOW,
    P_OPEN,
    P_RESET_GAP,
    P_SCALE_WINDOW,
    P_SCORER,
    P_SMOOTH_ALPHA,
    P_STREAM_NORM,
    P_STREAM_SCALE,
    P_TIME_INPUT,
    P_WARMUP,
    PF_MEAN,
    PF_RESID,
    PF_SCORED,
    PF_STD,
    PK_PART,
    PK_VIEW,
    SCORER_FORECAST,
    SCORER_NAMES,
    SCORER_REGIME,
    SS_B,
    SS_ES,
    SS_LE,
    SS_LV,
    SS_LX,
    SS_LXV,
    SS_M,
    SS_MASK,
    SS_MU,
    SS_MXRUN,
    SS_N,
    SS_PREP,
    SS_QLE,
    SS_QLX,
    SS_QSP,
    SS_RUN,
    SS_SR,
    SS_VAR,
    SS_VD,
    SS_XPREV,
    SS_XS,
    TOD_BINS,
    TOD_DAYS,
    TOO_OLD,
    TRANSITION_NAMES,
    WEIGHT_ALIGN,
    WL_B_HEAD,
    WL_B_HH,
    WL_B_IH,
    WL_CELL,
    WL_FEATURES,
    WL_GATES,
    WL_HIDDEN,
    WL_K,
    WL_LAYERS,
    WL_W_HEAD,
    WL_W_HH,
    WL_W_IH,
    n_sstat_rows,
    ss_pk,
)
from streamlstm.kernels.norm import (
    MODE_OFF,
    NS_MEAN,
    _norm_apply,
    _norm_learn,
    _norm_scale,
    _norm_sd,
)
from streamlstm.kernels.regime import (
    N_DIST,
    VIEW_FORECAST,
    _regime_reset,
    _regime_step,
    _ss_ac,
    _ss_pk,
    _ss_tod,
    tod_stretch,
)

# Events per chunk of a wave. A wave's rows are independent, so cutting it
# changes no result; a chunk's state rows and scratch stay in L1/L2 from the
# scoring pass through the cell to the write-back, where a whole 1024-event
# wave of 100k random streams had left L2 and came back from memory (~25% of
# the kernel's time at H = 64).
CHUNK = 128
# Events ahead whose state rows the scoring pass prefetches: ~8 x 70 ns of
# scoring covers a main-memory round trip on random slots.
PREFETCH_AHEAD = 8


@njit(**NJIT)
def _reset_slot(s, h, c, fc, fstat, istat, sstat):  # pragma: no cover - compiled
    """Forget the recurrent state and the scorer's learning of slot ``s``.

    The alert state is kept so an open alert still closes normally.
    """
    h[s, :, :] = 0.0
    if c.shape[2] > 0:
        c[s, :, :] = 0.0
    fc[s, :] = 0.0
    fstat[s, F_SCALE] = 0.0
    fstat[s, F_SMOOTH] = 0.0
    istat[s, I_EVENTS] = 0
    istat[s, I_SCALE_N] = 0
    istat[s, I_HAS_FC] = 0
    istat[s, I_SCORED] = 0
    _regime_reset(s, sstat, fstat, istat)


@njit(**NJIT)
def _norm_out(nstat, s, out_fc, out_sd, e):  # pragma: no cover - compiled
    """Turn event ``e``'s reported forecast into model-normalised units with slot
    ``s``'s statistics; record the standard deviations used."""
    for f in range(out_fc.shape[1]):
        sd = _norm_sd(nstat, s, f)
        out_sd[e, f] = np.float32(sd)
        v = out_fc[e, f]
        if not math.isnan(v):
            out_fc[e, f] = np.float32(np.float64(v) * sd + nstat[s, NS_MEAN, f])


@njit(**NJIT)
def _prefetch_slot(
    s, t, h, c, fc, fstat, istat, nstat, sstat, norm_mode
):  # pragma: no cover - compiled
    """Prefetch every state row of slot ``s`` the batch will touch (nstat only when used;
    of the scorer's time-of-day memory, the rows of event time ``t``'s stretches)."""
    _prefetch_row(istat, s)
    _prefetch_row(fstat, s)
    _prefetch_row(fc, s)
    _prefetch_row(h, s)
    _prefetch_row(c, s)
    _prefetch_sstat(sstat, s, t)
    if norm_mode != MODE_OFF:
        _prefetch_row(nstat, s)


@njit(**NJIT_INLINE)
def _prefetch_sstat(sstat, s, t):  # pragma: no cover - compiled
    """Prefetch the scorer's rows of slot ``s`` up to its time-of-day memory; of that the
    rows event time ``t`` reads (its stretch and the two beside it) and the visit under way;
    the recurrence memory's last two rows (its schedule and excursion under way, read every
    event; its other rows only at an excursion's onset or a schedule's due time); and the
    rhythm view's rows and the slot's last ones after them (the pending run's, the
    return's, the accumulated evidence's and the modes'). The two memories are 39% of the
    slot's rows at 8 features; an event reads 9 of them."""
    row = sstat.strides[0] // sstat.itemsize
    rs = sstat.strides[1] // sstat.itemsize
    base = s * row
    i_td = _ss_tod(sstat.shape[2])
    for off in range(0, i_td * rs, 64 // sstat.itemsize):
        _prefetch(sstat, base + off)
    if math.isfinite(t):
        b = tod_stretch(t)
        for k in range(TOD_BINS - 1, TOD_BINS + 2):
            i = i_td + TOD_DAYS * ((b + k) % TOD_BINS)
            _prefetch(sstat, base + i * rs)
            _prefetch(sstat, base + (i + TOD_DAYS) * rs - 1)
    i_cur = i_td + TOD_DAYS * TOD_BINS  # the visit under way
    _prefetch(sstat, base + i_cur * rs)
    _prefetch(sstat, base + (i_cur + 1) * rs - 1)
    # the recurrence memory's schedule step and excursion under way (its last two rows)
    i_ac = _ss_ac(sstat.shape[2])
    _prefetch(sstat, base + (i_ac - 2) * rs)
    _prefetch(sstat, base + i_ac * rs - 1)
    # the rhythm view's rows and the slot's last ones: the pending alert's run's, the
    # return's, the accumulated evidence's and the modes' (read every event)
    for off in range(i_ac * rs, row, 64 // sstat.itemsize):
        _prefetch(sstat, base + off)
    _prefetch(sstat, base + row - 1)


@njit(**NJIT_INLINE)
def _run_names(s, e, trans, istat, sstat, contrib, why):  # pragma: no cover - compiled
    """With ``min_run`` > 1 (after the alert step): the alert that a run of scores opens
    names what started the run, each feature's part in the score and the view that gave
    it on the run's first event, not on the event that completes the run (a spike of two
    readings is seen on its first; the second, which opened the alert, has no error left to
    forecast and named the level or energy the spike left). Rows from ``ss_pk``, written
    on a run's first event; the opening event's ``contrib`` and ``why`` are rewritten
    (zeros, from an older checkpoint or a gap reset within the run: its own are kept)."""
    if trans == OPENED:
        i_pk = _ss_pk(sstat.shape[2])
        for f in range(contrib.shape[1]):
            if sstat[s, i_pk + PK_PART, f] > 0.0:
                contrib[e, f] = sstat[s, i_pk + PK_PART, f]
                why[e, f] = sstat[s, i_pk + PK_VIEW, f]
    elif istat[s, I_RUN] == 1:
        i_pk = _ss_pk(sstat.shape[2])
        for f in range(contrib.shape[1]):
            sstat[s, i_pk + PK_PART, f] = contrib[e, f]
            sstat[s, i_pk + PK_VIEW, f] = why[e, f]


@njit(**NJIT)
def _norm_forecast(nstat, s, out_fc, out_sd, e, nscr):  # pragma: no cover - compiled
    """Event ``e``'s forecast (still in the units of the statistics ``nscr`` held
    before the event: mean row 0, scale row 1, 0 = none yet) into model units."""
    for f in range(out_fc.shape[1]):
        sd = _norm_sd(nstat, s, f)
        out_sd[e, f] = np.float32(sd)
        v = out_fc[e, f]
        if not math.isnan(v):
            sc = nscr[1, f] if nscr[1, f] > 0.0 else sd
            out_fc[e, f] = np.float32(np.float64(v) * sc + nscr[0, f])


@njit(**NJIT)
def _norm_restate(nstat, s, f, v, nscr):  # pragma: no cover - compiled
    """float32 forecast ``v`` of feature ``f``, made in the units ``nscr`` holds (the
    statistics before this event), in the units of slot ``s``'s statistics now.
    In float64 throughout: a stream far from the model's mean spans few float32
    steps in model units."""
    sd = _norm_sd(nstat, s, f)
    sc = nscr[1, f] if nscr[1, f] > 0.0 else sd
    return np.float32((np.float64(v) * sc + nscr[0, f] - nstat[s, NS_MEAN, f]) / sd)


def pack_weights(
    cell: int,
    w_ih: np.ndarray,
    w_hh: np.ndarray,
    b_ih: np.ndarray,
    b_hh: np.ndarray,
    w_head: np.ndarray,
    b_head: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The six weight arrays (layout of :mod:`streamlstm.kernels.cells`) in one buffer.

    Returns ``(weights, layout)``: ``weights`` a C-contiguous float32 vector
    starting on a 64-byte boundary, ``layout`` (N_WLAYOUT,) int64 (``WL_*``)
    with the shapes and each array's offset. Built once per model: the kernel
    takes views (:func:`_weight_views`), so a call unboxes two arrays, not six
    (Numba's dispatch costs ~95 ns per array argument).
    """
    arrays = [np.ascontiguousarray(a, np.float32) for a in (w_ih, w_hh, b_ih, b_hh, w_head, b_head)]
    offsets = []
    total = 0
    for a in arrays:
        offsets.append(total)
        total += -(-a.size // WEIGHT_ALIGN) * WEIGHT_ALIGN
    raw = np.zeros(total + WEIGHT_ALIGN, np.float32)
    lead = (-raw.ctypes.data // raw.itemsize) % WEIGHT_ALIGN
    weights = raw[lead : lead + total]
    for a, off in zip(arrays, offsets, strict=True):
        weights[off : off + a.size] = a.ravel()
    n_layers, k_w, n_gate = arrays[0].shape
    layout = np.array(
        [cell, n_layers, k_w, n_gate, arrays[1].shape[1], arrays[5].shape[0], *offsets], np.int64
    )
    assert layout.shape == (N_WLAYOUT,)
    return weights, layout


@intrinsic
def _view(typingctx, buf, off, shape):
    """C-contiguous view of ``buf[off : off + prod(shape)]`` with ``shape`` (a tuple).

    ``buf`` is a 1-D C-contiguous array; the caller keeps the range inside it
    (not checked). What ``buf[a:b].reshape(shape)`` gives, without Numba's
    reshape helper call (~15-30 ns each; the kernel takes ten views per call).
    """
    if not (
        isinstance(buf, types.Array)
        and buf.ndim == 1
        and buf.layout == "C"
        and isinstance(off, types.Integer)
        and isinstance(shape, types.UniTuple)
        and isinstance(shape.dtype, types.Integer)
    ):
        return None
    sig = types.Array(buf.dtype, shape.count, "C")(buf, off, shape)

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        dst = context.make_array(sig.return_type)(context, builder)
        intp = context.get_value_type(types.intp)
        dims = [builder.sext(d, intp) if d.type.width < intp.width else d
                for d in cgutils.unpack_tuple(builder, args[2])]  # fmt: skip
        item = context.get_abi_sizeof(context.get_data_type(sig.return_type.dtype))
        itemsize = context.get_constant(types.intp, item)
        strides = []
        acc = itemsize
        for d in reversed(dims):
            strides.insert(0, acc)
            acc = builder.mul(acc, d)
        off = args[1]
        if off.type.width < intp.width:
            off = builder.sext(off, intp)
        data = builder.gep(src.data, [off])
        populate_array(
            dst, data=data, shape=dims, strides=strides, itemsize=itemsize,
            meminfo=src.meminfo, parent=src.parent,
        )  # fmt: skip
        return impl_ret_borrowed(context, builder, sig.return_type, dst._getvalue())

    return sig, codegen


@njit(**NJIT)
def _weight_views(weights, layout):  # pragma: no cover - compiled
    """(w_ih, w_hh, b_ih, b_hh, w_head, b_head) as views of the packed buffer."""
    n_layers = layout[WL_LAYERS]
    k_w = layout[WL_K]
    n_gate = layout[WL_GATES]
    hid = layout[WL_HIDDEN]
    n_feat = layout[WL_FEATURES]
    w_ih = _view(weights, layout[WL_W_IH], (n_layers, k_w, n_gate))
    w_hh = _view(weights, layout[WL_W_HH], (n_layers, hid, n_gate))
    b_ih = _view(weights, layout[WL_B_IH], (n_layers, n_gate))
    b_hh = _view(weights, layout[WL_B_HH], (n_layers, n_gate))
    w_head = _view(weights, layout[WL_W_HEAD], (hid, n_feat))
    o = layout[WL_B_HEAD]
    b_head = weights[o : o + n_feat]
    return w_ih, w_hh, b_ih, b_hh, w_head, b_head


def out_val_size(n: int, n_feat: int) -> int:
    """Length of ``_detect_batch``'s ``out_val`` for n events of n_feat features."""
    return n * (2 + 5 * n_feat)


def split_out_val(
    out_val: np.ndarray, n: int, n_feat: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Views (score (n,), fc (n, F), sd (n, F), forecast (n, F)) of ``out_val``
    (:func:`split_out_extra` has the rest)."""
    nf = n * n_feat
    return (
        out_val[:n],
        out_val[n : n + nf].reshape(n, n_feat),
        out_val[n + nf : n + 2 * nf].reshape(n, n_feat),
        out_val[n + 2 * nf : n + 3 * nf].reshape(n, n_feat),
    )


def split_out_extra(
    out_val: np.ndarray, n: int, n_feat: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views (hold (n,), contributions (n, F), why (n, F)) of ``out_val``: the hold score
    the alert machine closes on, each feature's part in the score (the regime scorer's
    distances; the forecast scorer's squared normalised errors), and the view behind it
    (an index in ``regime.VIEW_NAMES``; NaN where the feature was not judged)."""
    o = n + 3 * n * n_feat
    nf = n * n_feat
    return (
        out_val[o : o + n],
        out_val[o + n : o + n + nf].reshape(n, n_feat),
        out_val[o + n + nf : o + n + 2 * nf].reshape(n, n_feat),
    )


@njit(**NJIT)
def _detect_batch(
    ev, times, x, h, c, fc, fstat, istat, nstat, sstat, weights, layout, params, out_code, out_val
):  # pragma: no cover - compiled
    """Process one micro-batch in place; returns the number of alert transitions.

    Why one function of ~330 lines: it is the daemon's hot loop, compiled by Numba,
    and the state rows of a wave's slots must stay in registers and L1 across the
    steps (validate, normalise, score, advance, forecast, alert) of one event.
    Numba passes arrays to a called kernel as full structs, and the cells, the
    scorer and the alert machine already are such calls (cells.py, regime.py,
    alerts.py); what stays here is the per-event bookkeeping between them.

    Inputs. ev : (N_EV, n) int64, row EV_SLOT the slot of each event, row
    EV_REF the caller's id of each event (e.g. Kafka offset; -1 means "the
    stream's own event number", so ids do not depend on interleaving).
    times : (n,) float64 seconds. x : (n, F) float64 raw features, NaN =
    missing; the kernel normalises them as :meth:`Model.normalise` does,
    ``float32((x - mean) / std)``. weights, layout : the packed weights and
    their layout (:func:`pack_weights`). params : (N_PARAMS + N_PFEAT * F,)
    float64, the ``P_*`` scalars then the ``PF_*`` per-feature rows.

    State, updated in place. h : (n_slots, L, H) float32, c : (n_slots, L,
    H or 0) float32, fc : (n_slots, F) float32 pending normalised forecast,
    fstat : (n_slots, N_FSTAT) float64, istat : (n_slots, N_ISTAT) int64,
    nstat : (n_slots, N_NSTAT, F) float64 per-stream normalisation statistics
    (read only when ``P_STREAM_NORM`` is on; any such array otherwise).

    Outputs. ev row EV_OPEN_REF : the ref of the event that opened the alert
    a transition belongs to (written for transitions only). out_code :
    (N_OCODE, n) int8, rows OC_OUTCOME, OC_ALERT (alert state after the
    event), OC_TRANS. out_val : (n * (1 + 3F),) float32 (see
    :func:`split_out_val`): score (n,) (NaN when not scored), then (n, F)
    each: the normalised forecast each event was compared with (NaN when
    none), the per-stream standard deviations each event was normalised with
    (written only when ``P_STREAM_NORM`` is on), and that forecast in raw
    units (:meth:`Model.denormalise`).

    Events are applied in waves (:func:`_wave_order`): no slot repeats inside
    a wave and the k-th event of a slot is in wave k.
    """
    n = ev.shape[1]
    slots = ev[EV_SLOT]
    refs = ev[EV_REF]
    out_ref = ev[EV_OPEN_REF]
    out_outcome = out_code[OC_OUTCOME]
    out_alert = out_code[OC_ALERT]
    out_trans = out_code[OC_TRANS]
    n_feat = x.shape[1]
    nf = n * n_feat
    out_score = out_val[:n]
    out_fc = _view(out_val, n, (n, n_feat))
    out_sd = _view(out_val, n + nf, (n, n_feat))
    out_raw = _view(out_val, n + 2 * nf, (n, n_feat))
    out_hold = out_val[n + 3 * nf : n + 3 * nf + n]
    out_contrib = _view(out_val, 2 * n + 3 * nf, (n, n_feat))
    out_why = _view(out_val, 2 * n + 4 * nf, (n, n_feat))
    pf = N_PARAMS
    resid_scale = params[pf + PF_RESID * n_feat : pf + (PF_RESID + 1) * n_feat]
    scored = params[pf + PF_SCORED * n_feat : pf + (PF_SCORED + 1) * n_feat] > 0.5
    regime = np.int64(params[P_SCORER]) == SCORER_REGIME
    delta = params[P_DELTA] > 0.5
    r_x = np.empty(n_feat, np.float64)  # the regime scorer's inputs
    r_fc = np.empty(n_feat, np.float64)
    dist = np.empty((N_DIST, n_feat), np.float64)
    norm_mean = params[pf + PF_MEAN * n_feat : pf + (PF_MEAN + 1) * n_feat]
    norm_std = params[pf + PF_STD * n_feat : pf + (PF_STD + 1) * n_feat]
    cell = layout[WL_CELL]
    w_ih, w_hh, b_ih, b_hh, w_head, b_head = _weight_views(weights, layout)
    order, wave_bounds = _wave_order(slots)
    hid = h.shape[2]
    k_w = w_ih.shape[1]
    n_gate = w_ih.shape[2]
    time_input = params[P_TIME_INPUT] > 0.5
    in_size = n_feat + (1 if time_input else 0)
    open_thr = params[P_OPEN]
    close_thr = params[P_CLOSE]
    min_run = np.int64(params[P_MIN_RUN])
    close_run = np.int64(params[P_CLOSE_RUN])
    cooldown = params[P_COOLDOWN]
    warmup = np.int64(params[P_WARMUP])
    stream_scale = params[P_STREAM_SCALE] > 0.5
    scale_window = params[P_SCALE_WINDOW]
    smooth_a = params[P_SMOOTH_ALPHA]
    max_abs = params[P_MAX_ABS]
    decay_tau = params[P_DECAY_TAU]
    reset_gap = params[P_RESET_GAP]
    dt_mean = params[P_DT_MEAN]
    dt_std = params[P_DT_STD]
    min_scale = params[P_MIN_SCALE]
    scale_decay = math.exp(-1.0 / scale_window)
    learn_ratio = params[P_LEARN_RATIO]
    norm_mode = np.int64(params[P_STREAM_NORM])
    norm_window = params[P_NORM_WINDOW]
    # The statistics before an event (per-stream normalisation only).
    nscr = np.empty((2, n_feat), np.float64)
    n_trans = 0

    n_waves = wave_bounds.shape[0] - 1
    n_chunks = 0
    max_m = 0
    for w in range(n_waves):
        size = wave_bounds[w + 1] - wave_bounds[w]
        n_chunks += (size + CHUNK - 1) // CHUNK
        max_m = max(max_m, min(size, CHUNK))
    # All other scratch is carved out of one int64 and one float32 block: as
    # eleven arrays, malloc and free took ~0.4 us of a one-event call.
    iscr = np.empty(n_chunks + 1 + max_m, np.int64)
    bounds = iscr[: n_chunks + 1]
    rows_slot = iscr[n_chunks + 1 :]
    bounds[0] = 0
    j = 0
    for w in range(n_waves):
        p = wave_bounds[w]
        while p < wave_bounds[w + 1]:
            end = min(p + CHUNK, wave_bounds[w + 1])
            j += 1
            bounds[j] = end
            p = end
    width = max(k_w, hid)
    n_rows = max_m * width
    fscr = np.empty(2 * n_rows + 2 * TILE_ROWS * n_gate + (max_m + 1) * n_feat, np.float32)
    x_rows = _view(fscr, 0, (max_m, width))
    hbuf = _view(fscr, n_rows, (max_m, width))
    fscr[: 2 * n_rows] = 0.0
    o = 2 * n_rows
    # The cells use gi / gh as per-block scratch only.
    gi = _view(fscr, o, (TILE_ROWS, n_gate))
    o += TILE_ROWS * n_gate
    gh = _view(fscr, o, (TILE_ROWS, n_gate))
    o += TILE_ROWS * n_gate
    fcb = _view(fscr, o, (max_m, n_feat))
    o += max_m * n_feat
    xe = fscr[o : o + n_feat]  # the event's normalised features
    nan32 = np.float32(np.nan)
    n_order = order.shape[0]
    for p in range(min(PREFETCH_AHEAD, n_order)):
        _prefetch_slot(
            slots[order[p]], times[order[p]], h, c, fc, fstat, istat, nstat, sstat, norm_mode
        )

    for w in range(n_chunks):
        m = 0
        for p in range(bounds[w], bounds[w + 1]):
            if p + PREFETCH_AHEAD < n_order:
                q = order[p + PREFETCH_AHEAD]
                _prefetch_slot(slots[q], times[q], h, c, fc, fstat, istat, nstat, sstat, norm_mode)
            e = order[p]
            s = slots[e]
            t = times[e]
            for f in range(n_feat):
                xe[f] = np.float32((x[e, f] - norm_mean[f]) / norm_std[f])
            n_events = istat[s, I_EVENTS]
            outcome = OK
            n_missing = 0
            if not math.isfinite(t):
                outcome = NON_FINITE
            for f in range(n_feat):
                v = xe[f]
                if math.isnan(v):
                    n_missing += 1
                elif math.isinf(v):
                    outcome = NON_FINITE
                elif abs(v) > max_abs and outcome == OK:
                    outcome = OUT_OF_RANGE
            if outcome == OK and n_missing == n_feat:
                outcome = MISSING
            if outcome == OK and n_events > 0 and t < fstat[s, F_LAST_T]:
                outcome = TOO_OLD
            has_fc = istat[s, I_HAS_FC] == 1
            for f in range(n_feat):
                out_fc[e, f] = fc[s, f] if has_fc else nan32
            out_trans[e] = NONE
            if outcome != OK:
                if norm_mode != MODE_OFF:
                    _norm_out(nstat, s, out_fc, out_sd, e)
                out_outcome[e] = outcome
                out_score[e] = nan32
                out_hold[e] = nan32
                for f in range(n_feat):
                    out_contrib[e, f] = 0.0
                    out_why[e, f] = nan32
                out_alert[e] = istat[s, I_IN_ALERT]
                continue
            out_outcome[e] = IMPUTED if n_missing > 0 else OK

            dt = t - fstat[s, F_LAST_T] if n_events > 0 else 0.0
            if n_events > 0 and reset_gap > 0.0 and dt > reset_gap:
                _reset_slot(s, h, c, fc, fstat, istat, sstat)
                if norm_mode != MODE_OFF:
                    nstat[s, :, :] = 0.0
                has_fc = False
                n_events = 0
                for f in range(n_feat):
                    out_fc[e, f] = nan32
            elif n_events > 0 and decay_tau > 0.0 and dt > 0.0:
                factor = np.float32(math.exp(-dt / decay_tau))
                for layer in range(h.shape[1]):
                    for q in range(hid):
                        h[s, layer, q] *= factor
                        if c.shape[2] > 0:
                            c[s, layer, q] *= factor

            if norm_mode != MODE_OFF:
                for f in range(n_feat):
                    nscr[0, f] = nstat[s, NS_MEAN, f]
                    nscr[1, f] = _norm_scale(nstat, s, f)
                    v = xe[f]
                    if not math.isnan(v):
                        _norm_learn(nstat, s, f, np.float64(v), norm_mode, norm_window)
                _norm_forecast(nstat, s, out_fc, out_sd, e, nscr)

            # -- score against the pending forecast --------------------------
            score = math.nan
            hold = math.nan
            if regime:
                for f in range(n_feat):
                    v = xe[f]
                    fvv = fc[s, f] if has_fc else nan32
                    if norm_mode != MODE_OFF:
                        if not math.isnan(v):
                            v = _norm_apply(nstat, s, f, v)
                        if has_fc:
                            fvv = _norm_restate(nstat, s, f, fvv, nscr)
                    r_x[f] = np.float64(v)
                    r_fc[f] = np.float64(fvv)
                score, hold = _regime_step(
                    s, r_x, r_fc, n_events, t, scored, sstat, fstat, istat, dist,
                    out_contrib, out_why, e, min_run,
                )  # fmt: skip
            elif has_fc:
                e_sum = 0.0
                k = 0
                for f in range(n_feat):
                    v = xe[f]
                    if not math.isnan(v):
                        fv = fc[s, f]
                        if norm_mode != MODE_OFF:
                            v = _norm_apply(nstat, s, f, v)
                            fv = _norm_restate(nstat, s, f, fv, nscr)
                        r = (np.float64(v) - np.float64(fv)) / resid_scale[f]
                        out_contrib[e, f] = np.float32(r * r)
                        out_why[e, f] = np.float32(VIEW_FORECAST)
                        e_sum += r * r
                        k += 1
                    else:
                        out_contrib[e, f] = 0.0
                        out_why[e, f] = nan32
                e_val = e_sum / k
                if istat[s, I_SCORED] == 0:
                    fstat[s, F_SMOOTH] = e_val
                else:
                    fstat[s, F_SMOOTH] += smooth_a * (e_val - fstat[s, F_SMOOTH])
                istat[s, I_SCORED] += 1
                v_s = fstat[s, F_SMOOTH]
                if stream_scale:
                    # How unusual is this error for this stream: its ratio u to the
                    # decaying maximum of the stream's recent normal errors, mapped
                    # to u / (1 + u). What the maximum learns depends on u only, never
                    # on the thresholds, so one replay serves every threshold.
                    if istat[s, I_SCALE_N] == 0:
                        fstat[s, F_SCALE] = max(v_s, min_scale)
                    u = v_s / fstat[s, F_SCALE]
                    score = u / (1.0 + u)
                    decayed = max(fstat[s, F_SCALE] * scale_decay, min_scale)
                    if u < learn_ratio:
                        fstat[s, F_SCALE] = max(decayed, v_s)
                        istat[s, I_SCALE_N] += 1
                    elif n_events < warmup:
                        # Warm-up learns from everything, but grows the maximum by at
                        # most learn_ratio per event: a lucky tiny first error must not
                        # leave a maximum that turns all that follows into alerts, and
                        # an incident during warm-up must not mask the next ones.
                        fstat[s, F_SCALE] = max(decayed, fstat[s, F_SCALE] * learn_ratio)
                        istat[s, I_SCALE_N] += 1
                    else:
                        fstat[s, F_SCALE] = decayed
                else:
                    q9 = 2.0 / (9.0 * k)
                    score = _phi((v_s ** (1.0 / 3.0) - (1.0 - q9)) / math.sqrt(q9))
                hold = score
            else:
                for f in range(n_feat):
                    out_contrib[e, f] = 0.0
                    out_why[e, f] = nan32
            out_score[e] = np.float32(score)
            out_hold[e] = np.float32(hold)

            # -- alert state machine -----------------------------------------
            # The machine sees the float32 score the caller sees, so a replay of
            # recorded scores (threshold sweeps) reproduces it exactly.
            if not math.isnan(score):
                out_trans[e] = _alert_step(
                    s,
                    t,
                    np.float64(np.float32(score)),
                    np.float64(np.float32(hold)),
                    n_events,
                    refs[e],
                    fstat,
                    istat,
                    open_thr,
                    close_thr,
                    min_run,
                    close_run,
                    cooldown,
                    warmup,
                )
                if min_run > 1:
                    _run_names(s, e, out_trans[e], istat, sstat, out_contrib, out_why)
                if out_trans[e] != NONE:
                    out_ref[e] = istat[s, I_OPEN_REF]
                    n_trans += 1
            out_alert[e] = istat[s, I_IN_ALERT]

            # -- build the cell input: impute missing with the forecast --------
            for f in range(n_feat):
                v = xe[f]
                if math.isnan(v):
                    if not has_fc:
                        x_rows[m, f] = np.float32(0.0)
                    elif norm_mode != MODE_OFF:
                        x_rows[m, f] = _norm_restate(nstat, s, f, fc[s, f], nscr)
                    else:
                        x_rows[m, f] = fc[s, f]
                elif norm_mode != MODE_OFF:
                    x_rows[m, f] = _norm_apply(nstat, s, f, v)
                else:
                    x_rows[m, f] = v
                if delta:
                    # the cell reads the change since the stream's last value (none at
                    # its first event: 0), clipped; the value replaces the last one (read
                    # by nothing else), and the forecast adds it back
                    z = x_rows[m, f]
                    dz = z - fc[s, n_feat + f] if has_fc else np.float32(0.0)
                    fc[s, n_feat + f] = z
                    x_rows[m, f] = min(max(dz, np.float32(-DELTA_CLIP)), np.float32(DELTA_CLIP))
            if time_input:
                x_rows[m, n_feat] = np.float32((math.log1p(dt) - dt_mean) / dt_std)
            rows_slot[m] = s
            fstat[s, F_LAST_T] = t
            istat[s, I_EVENTS] = n_events + 1
            istat[s, I_SEEN] += 1
            m += 1

        if m == 0:
            continue
        if cell == CELL_LSTM:
            _lstm_wave(x_rows, m, in_size, rows_slot, h, c, w_ih, w_hh, b_ih, b_hh, hbuf, gi, gh)
        else:
            _gru_wave(x_rows, m, in_size, rows_slot, h, w_ih, w_hh, b_ih, b_hh, hbuf, gi, gh)
        _head_rows(hbuf, m, hid, w_head, b_head, fcb)
        for r in range(m):
            s = rows_slot[r]
            if delta:
                for f in range(n_feat):
                    fc[s, f] = fcb[r, f] + fc[s, n_feat + f]
            else:
                for f in range(n_feat):
                    fc[s, f] = fcb[r, f]
            istat[s, I_HAS_FC] = 1

    for e in range(n):
        for f in range(n_feat):
            out_raw[e, f] = np.float32(np.float64(out_fc[e, f]) * norm_std[f] + norm_mean[f])
    return n_trans


@njit(**NJIT)
def _wave_order(slots):  # pragma: no cover - compiled
    """Group event indices into waves: the k-th event of each slot goes in wave k.

    slots : (n,) int64. Returns ``(order, wave_bounds)``, int64 (n,) event
    indices grouped by wave and (n_waves + 1,) offsets into it; inside a wave
    events keep their batch order. The occurrence rank of each event, then a
    counting sort; one event takes a shortcut (the numpy version, argsort,
    lexsort, bincount, ``np.r_``, cost ~25 us per call).
    """
    n = slots.shape[0]
    if n <= 1:
        return np.zeros(n, np.int64), np.arange(n + 1)
    # Sorting the distinct keys slot * n + i orders events by slot and, within a
    # slot, by batch position, like a stable argsort but ~2x faster.
    keys = slots * n + np.arange(n)
    keys.sort()
    occ = np.empty(n, np.int64)
    n_waves = 0
    run = 0
    for j in range(n):
        if j > 0 and keys[j] // n == keys[j - 1] // n:
            run += 1
        else:
            run = 0
        occ[keys[j] % n] = run
        n_waves = max(n_waves, run + 1)
    bounds = np.zeros(n_waves + 1, np.int64)
    for i in range(n):
        bounds[occ[i] + 1] += 1
    for w in range(n_waves):
        bounds[w + 1] += bounds[w]
    fill = bounds[:-1].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        order[fill[occ[i]]] = i
        fill[occ[i]] += 1
    return order, bounds
