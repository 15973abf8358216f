"""The alert state machine, one implementation for the detector and for threshold sweeps.

:func:`_alert_step` is what :func:`streamlstm.kernels.detect._detect_batch` runs
for every scored event. :func:`_alert_replay` runs the same step over scores
recorded by one replay, for another open/close threshold: because the scores
(and everything the scorer learns) do not depend on the thresholds, this gives
exactly what a full re-run of the detector at that threshold would give, at a
tiny fraction of the cost (no recurrent cell, no scorer). ``evaluate`` uses it
for its threshold sweep.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from streamlstm.kernels.config import NJIT
from streamlstm.kernels.layout import (
    CLOSED,
    F_COOLDOWN_UNTIL,
    F_PEAK,
    I_ALERTS,
    I_BELOW,
    I_IN_ALERT,
    I_OPEN_REF,
    I_RUN,
    I_SEEN,
    N_FSTAT,
    N_ISTAT,
    NONE,
    OPENED,
)


@njit(**NJIT)
def _alert_step(
    s,
    t,
    score,
    hold,
    n_events,
    ref,
    fstat,
    istat,
    open_thr,
    close_thr,
    min_run,
    close_run,
    cooldown,
    warmup,
):  # pragma: no cover - compiled
    """Advance slot ``s``'s alert machine by one scored event; return the transition code.

    ``min_run`` consecutive scores ``>= open_thr`` open an alert (not while the
    stream has seen fewer than ``warmup`` events, nor before the cooldown that
    follows a close has passed); ``close_run`` consecutive hold scores
    ``< close_thr`` close it (the regime scorer's hold says whether the stream is
    still away from its normal; the forecast scorer's hold is its score).
    ``ref`` < 0 means "the stream's own event number".
    """
    trans = NONE
    if istat[s, I_IN_ALERT] == 0:
        if n_events >= warmup and score >= open_thr:
            istat[s, I_RUN] += 1
        else:
            istat[s, I_RUN] = 0
        if istat[s, I_RUN] >= min_run and t >= fstat[s, F_COOLDOWN_UNTIL]:
            istat[s, I_IN_ALERT] = 1
            istat[s, I_RUN] = 0
            istat[s, I_BELOW] = 0
            istat[s, I_OPEN_REF] = ref if ref >= 0 else istat[s, I_SEEN]
            istat[s, I_ALERTS] += 1
            fstat[s, F_PEAK] = score
            trans = OPENED
    else:
        if score > fstat[s, F_PEAK]:
            fstat[s, F_PEAK] = score
        if hold < close_thr:
            istat[s, I_BELOW] += 1
        else:
            istat[s, I_BELOW] = 0
        if istat[s, I_BELOW] >= close_run:
            istat[s, I_IN_ALERT] = 0
            istat[s, I_BELOW] = 0
            fstat[s, F_COOLDOWN_UNTIL] = t + cooldown
            trans = CLOSED
    return trans


@njit(**NJIT)
def _alert_replay(
    slots,
    times,
    score,
    hold,
    accepted,
    n_slots,
    open_thr,
    close_thr,
    min_run,
    close_run,
    cooldown,
    warmup,
    reset_gap,
    out_alert,
    out_trans,
):  # pragma: no cover - compiled
    """Re-run the alert machine of every slot over recorded scores.

    slots : (n,) int64 in [0, n_slots); times : (n,) float64; score : (n,)
    float32, NaN where the detector did not score (first event, rejected); hold : (n,)
    float32, the hold scores the machine closes on;
    accepted : (n,) bool, the detector accepted the event (it counts for
    warm-up and gaps). Events of one slot must be in the order the detector
    saw them. Writes out_alert (n,) int8 and out_trans (n,) int8.
    """
    n = slots.shape[0]
    fstat = np.zeros((n_slots, N_FSTAT), np.float64)
    istat = np.zeros((n_slots, N_ISTAT), np.int64)
    n_ev = np.zeros(n_slots, np.int64)
    last_t = np.zeros(n_slots, np.float64)
    for e in range(n):
        s = slots[e]
        out_trans[e] = NONE
        if accepted[e]:
            t = times[e]
            if n_ev[s] > 0 and reset_gap > 0.0 and t - last_t[s] > reset_gap:
                n_ev[s] = 0
            sc = score[e]
            if not np.isnan(sc):
                out_trans[e] = _alert_step(
                    s,
                    t,
                    np.float64(sc),
                    np.float64(hold[e]),
                    n_ev[s],
                    -1,
                    fstat,
                    istat,
                    open_thr,
                    close_thr,
                    min_run,
                    close_run,
                    cooldown,
                    warmup,
                )
            n_ev[s] += 1
            istat[s, I_SEEN] += 1
            last_t[s] = t
        out_alert[e] = istat[s, I_IN_ALERT]
