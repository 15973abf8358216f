"""Every number the kernels share, in one table: codes, state columns, parameter slots.

The detector kernel (:mod:`~streamlstm.kernels.detect`), the alert machine
(:mod:`~streamlstm.kernels.alerts`), the trainer's kernels
(:mod:`~streamlstm.kernels.train`) and the Python side (the detector's
parameter pack, checkpoints, dead-letter reasons) all import these names
from here; nothing re-types a column number. ``tests/unit/kernels/test_layout.py``
checks that every table is dense (0..N-1, no repeats) and that the arrays
the kernels allocate have the widths named here.
"""

from __future__ import annotations

# Transition codes (one byte per event).
NONE = 0
OPENED = 1
CLOSED = 2
TRANSITION_NAMES = ("none", "opened", "closed")

# Outcome codes (one byte per event).
OK = 0
IMPUTED = 1  # accepted; some (not all) features were missing and were imputed
TOO_OLD = 2
MISSING = 3  # every feature missing
NON_FINITE = 4  # +-Inf feature or non-finite event time
OUT_OF_RANGE = 5  # |normalised value| above max_abs
OUTCOME_NAMES = ("ok", "imputed", "too_old", "missing", "non_finite", "out_of_range")

# Transition codes: NONE, OPENED, CLOSED (from streamlstm.kernels.alerts).

# fstat columns (float64).
F_SCALE = 0  # decaying maximum of the stream's recent normal (smoothed) errors
F_SMOOTH = 1  # smoothed error e (EWMA)
F_COOLDOWN_UNTIL = 2  # event time before which no new alert may open
F_LAST_T = 3  # event time of the last accepted event
F_PEAK = 4  # highest score of the open alert
F_EPEAK = 5  # regime scorer: the open episode's ranked peak distance
F_EREF = 6  # regime scorer: the reference (recent maximum) when the episode opened
N_FSTAT = 7

# istat columns (int64).
I_EVENTS = 0  # accepted events since the stream appeared (or was reset)
I_IN_ALERT = 1
I_RUN = 2  # consecutive scores >= open threshold while closed
I_BELOW = 3  # consecutive scores < close threshold while open
I_OPEN_REF = 4  # ref (e.g. Kafka offset) of the event that opened the alert
I_ALERTS = 5  # alerts opened
I_SCALE_N = 6  # events the recent maximum has learnt from
I_HAS_FC = 7  # 1 when fc holds a forecast for the next event
I_SCORED = 8  # events scored (smoothing starts at the first)
I_SEEN = 9  # accepted events over the stream's life (never reset): default event ref
I_TOP_MASK = 10  # bit f set: feature f drove the open alert (set by the detector, not the kernel)
# The regime scorer's incident episode (streamlstm.kernels.regime), independent of
# the alert thresholds so that threshold sweeps stay exact.
I_EPISODE = 11  # 1 while the stream is away from its learnt normal
I_EP_BELOW = 12  # consecutive events of the episode back near normal
I_EP_HELD = 13  # events the episode has lasted
I_EP_COOL = 14  # events before a new episode may start
N_ISTAT = 15

# params (float64 vector) indices.
P_OPEN = 0
P_CLOSE = 1
P_MIN_RUN = 2
P_CLOSE_RUN = 3
P_COOLDOWN = 4
P_WARMUP = 5
P_STREAM_SCALE = 6
P_SCALE_WINDOW = 7
P_SMOOTH_ALPHA = 8
P_MAX_ABS = 9
P_DECAY_TAU = 10
P_RESET_GAP = 11
P_TIME_INPUT = 12
P_DT_MEAN = 13
P_DT_STD = 14
P_MIN_SCALE = 15
P_LEARN_RATIO = 16
P_STREAM_NORM = 17  # streamlstm.kernels.norm.MODE_*
P_NORM_WINDOW = 18
P_SCORER = 19  # SCORER_* below
P_DELTA = 20  # 1: the cell reads changes and the forecast adds the last value (Model.delta)
N_PARAMS = 21
# A model of changes (Model.delta) reads each change at most this many normalised units
# (the model's training spreads) either way: a reset or a first value far off
# does not saturate every gate
DELTA_CLIP = 8.0
# After the N_PARAMS scalars, params holds N_PFEAT rows of F per-feature values
# (float64), row k at params[N_PARAMS + k * F:]: the residual scale and the
# model's normalisation mean and standard deviation.
PF_RESID = 0
PF_MEAN = 1
PF_STD = 2
PF_SCORED = 3  # 1: the feature is scored; 0: a context input only (forecast, never scored)
N_PFEAT = 4

# Scorers (P_SCORER).
SCORER_FORECAST = 0  # the one-step forecast error against the stream's recent maximum
SCORER_REGIME = 1  # spike, level, energy and flat-line views against a learnt normal
SCORER_NAMES = ("forecast", "regime")

# sstat rows (float32, (N_SSTAT, F) per slot): the regime scorer's per-feature state.
SS_N = 0  # values learnt from
SS_MU = 1  # level of the warm-up (in scoring units)
SS_VAR = 2  # variance of the warm-up
SS_SR = 3  # residual scale: mean |x - forecast| of normal events
SS_LE = 4  # normal mean of ln(short energy): the typical short energy, not the mean one
SS_ES = 5  # short residual energy (EWMA, span SHORT_SPAN)
SS_M = 6  # short level (EWMA, span SHORT_SPAN)
SS_B = 7  # slow baseline level (time constant BASE_TAU), frozen while the feature is broken
SS_VD = 8  # normal (short level - baseline)^2
SS_RUN = 9  # consecutive repeats of the same value
SS_PREP = 10  # normal probability of a repeat
SS_QSP = 11  # running 1-in-SPIKE_TAIL spike size (|r| / (1.25 s)) of the values that move
SS_XPREV = 12  # previous value (valid once SS_N > 0)
SS_MASK = 13  # 1: the feature is part of the open episode (it broke); -1: of the last one
SS_LV = 14  # normal variance of ln(short energy)
SS_MXRUN = 15  # decaying maximum of the normal runs of one value (ended, not in an episode)
SS_QLE = 16  # running 1-in-SPIKE_TAIL level of ln(short energy), learnt from every event
SS_XS = 17  # short mean square of x about its short level
SS_LX = 18  # normal mean of ln(SS_XS)
SS_LXV = 19  # normal variance of ln(SS_XS)
SS_QLX = 20  # running 1-in-SPIKE_TAIL level of ln(SS_XS), learnt from every event
SS_R0 = 21  # the stream's rest value: a value it keeps coming back to and staying at
SS_R0F = 22  # share of events at SS_R0 (EWMA; 1/n over the warm-up)
SS_CZM = 23  # relation: normal mean of z_f * m_f (m_f the mean z of the other features)
SS_CMM = 24  # relation: normal mean of m_f ** 2
SS_RE = 25  # relation: short level of e_f = z_f - beta_f m_f
SS_REM = 26  # relation: normal mean of SS_RE
SS_REV = 27  # relation: normal variance of SS_RE
SS_HI = 28  # range: the highest normal short level (decaying toward the baseline)
SS_LO = 29  # range: the lowest normal short level
SS_XC = 30  # range: signed count of the short level's crossings of its baseline
SS_HIP = 31  # range: peak of the short level's excursion above SS_HI under way
SS_LOP = 32  # range: trough of the excursion below SS_LO under way
SS_QD = 33  # range: decaying maximum depth of the normal excursions beyond it (widths)
SS_RGN = 34  # range: consecutive events the short level has been past the range's margin
SS_ESC = 35  # SS_ES from residuals clipped at HOLD_CLIP scales: the hold's upward energy
SS_XSC = 36  # SS_XS from deviations clipped the same way: the hold's spread
SS_RN = 37  # regression: events it learnt from (its warm-up; 0 in older checkpoints)
SS_QE = 38  # regression: short level of q_f = z_f - (z_f's regression on the other z)
SS_QM = 39  # regression: normal mean of SS_QE
SS_QV = 40  # regression: normal variance of SS_QE
N_SSTAT = 41  # rows of fixed meaning; then 2 F rows of the regression on the others:
# rows SS_COV + g (SS_COV = N_SSTAT): the normal covariance of z_g and z_f (column f),
# rows N_SSTAT + F + g: the weight of z_g in the regression of z_f on the others;
# then N_TOD rows from ss_tod(F): each two-hour stretch's largest opening distance at its
# last three visits (rows + 3 b, + 3 b + 1, + 3 b + 2, newest first) and the largest of
# the visit under way (row + 3 TOD_BINS); then N_REC rows from ss_rec(F), the recurrence
# memory: the times from the latest excursion's onset back to each of the last REC_K onsets
# (rows + k), their sizes (rows + REC_K + k), the latest onset's time as two float32 (its
# value, the remainder), the step of the schedule the next onset is due on (0: none), and
# the recurrence factor of the excursion under way (0: none); then N_AC rows from ss_ac(F),
# the residuals' autocorrelation (the rhythm view): rows + AC_PREV ... + AC_TAIL below; then
# N_PK rows from ss_pk(F), the pending alert's run (PK_PART, PK_VIEW below); then the N_BK row
# from ss_bk(F), an episode's features' return to their baseline; then the N_CU rows from
# ss_cu(F), the energy view's accumulated evidence (CU_SUM, CU_TAIL below)


TOD_BINS = 12  # the regime scorer's two-hour stretches of the day (its time-of-day memory)
TOD_DAYS = 3  # visits it remembers of each stretch
N_TOD = TOD_DAYS * TOD_BINS + 1  # its rows: those visits of each stretch, the visit under way
REC_K = 8  # excursion onsets the recurrence memory keeps
N_REC = 2 * REC_K + 4  # its rows (see above)
# The rhythm view's rows, from ss_ac(F): the previous residual (0 if an outlier), the mean of
# r_t r_(t-1) and of r_t^2, and the lag-1 autocorrelation's normal mean, variance and running
# 1-in-256 level (in units of 1/10 of a correlation), and the errors it has seen (its own
# count: a checkpoint from before restores zeros, and the view learns again from there)
AC_PREV = 0
AC_CROSS = 1
AC_SQ = 2
AC_MEAN = 3
AC_VAR = 4
AC_TAIL = 5
AC_N = 6
N_AC = 7
# The rows from ss_pk(F), either scorer, with min_run > 1: each feature's part in the score
# and the view that gave it (VIEW_NAMES' index; NaN: none) on the first event of the run of
# scores under way, so the alert that the run opens names what started it (a spike of two
# readings on its first event, not the level it left on the second). Zeros (an older
# checkpoint): the opening event's own.
PK_PART = 0
PK_VIEW = 1
N_PK = 2
# The row from ss_bk(F): values in a row, while the feature is part of the open episode, back
# within its level band of its frozen baseline and nearer it than its short level (reset when
# it joins an episode; a checkpoint from before restores zeros)
N_BK = 1
# The rows from ss_cu(F): the energy view's accumulated evidence (a CUSUM of the residuals'
# squared size; 0 while the feature has been part of the open episode over TAIL_EPISODE
# events) and its running 1-in-256 level (a checkpoint from before restores zeros: the sum
# starts again, the level at its floor)
CU_SUM = 0
CU_TAIL = 1
N_CU = 2
# The rows from ss_md(F): the levels a stream jumps to and stays at (a telemetry channel's
# commanded modes): MODE_K centres, MODE_K counts of the stays there that a jump began, then
# the stay under way (its mean, its length, 1 when a jump began it). A checkpoint from
# before restores zeros: no mode is known, and the stream learns them again.
MODE_K = 8
MD_C = 0
MD_N = MODE_K
MD_A = 2 * MODE_K
MD_L = 2 * MODE_K + 1
MD_J = 2 * MODE_K + 2
N_MD = 2 * MODE_K + 3
# The row from ss_qp(F): the regression view's largest distance since it last came to distance
# 1 (0 below it, in or out of an episode; a checkpoint from before restores zeros)
N_QP = 1


# The row functions below are closed forms of the tables above (no calls between them), so
# the kernels compile the same functions (streamlstm.kernels.regime) instead of re-typing them.


def n_sstat_rows(n_features: int) -> int:
    """sstat rows of a model with ``n_features`` features."""
    return N_SSTAT + 2 * n_features + N_TOD + N_REC + N_AC + N_PK + N_BK + N_CU + N_MD + N_QP


def ss_tod(n_features: int) -> int:
    """First row of the regime scorer's time-of-day memory: after the regression's rows
    (appended, so a checkpoint from before it restores zeros there)."""
    return N_SSTAT + 2 * n_features


def ss_rec(n_features: int) -> int:
    """First row of the regime scorer's recurrence memory: after the time-of-day memory's
    (appended, so a checkpoint from before it restores zeros there)."""
    return N_SSTAT + 2 * n_features + N_TOD


def ss_ac(n_features: int) -> int:
    """First row of the rhythm view's state: after the recurrence memory's rows (appended,
    so a checkpoint from before it restores zeros there)."""
    return N_SSTAT + 2 * n_features + N_TOD + N_REC


def ss_pk(n_features: int) -> int:
    """First row of the pending alert's run (min_run > 1): after the rhythm view's (so a
    checkpoint from before restores zeros there)."""
    return N_SSTAT + 2 * n_features + N_TOD + N_REC + N_AC


def ss_bk(n_features: int) -> int:
    """The row of an episode's features' return (values in a row back near the baseline):
    after the pending run's (so a checkpoint from before restores zeros)."""
    return N_SSTAT + 2 * n_features + N_TOD + N_REC + N_AC + N_PK


def ss_cu(n_features: int) -> int:
    """First row of the energy view's accumulated evidence (CU_SUM, CU_TAIL): after the
    return's (so a checkpoint from before restores zeros)."""
    return N_SSTAT + 2 * n_features + N_TOD + N_REC + N_AC + N_PK + N_BK


def ss_md(n_features: int) -> int:
    """First row of the levels the stream jumps to and stays at (MD_C ... MD_J): after the
    accumulated evidence's (so a checkpoint from before restores zeros)."""
    return N_SSTAT + 2 * n_features + N_TOD + N_REC + N_AC + N_PK + N_BK + N_CU


def ss_qp(n_features: int) -> int:
    """The row of the regression view's peak while at distance 1: the slot's last (after
    the modes', so a checkpoint from before restores zeros)."""
    return N_SSTAT + 2 * n_features + N_TOD + N_REC + N_AC + N_PK + N_BK + N_CU + N_MD


# Weight layout (int64 vector) indices: shapes, then the offsets (in float32
# elements, each a multiple of WEIGHT_ALIGN) of the six weight arrays in the
# packed buffer, in the layout of streamlstm.kernels.cells.
WL_CELL = 0  # CELL_LSTM / CELL_GRU
WL_LAYERS = 1
WL_K = 2  # rows of w_ih: max(input size, H)
WL_GATES = 3
WL_HIDDEN = 4
WL_FEATURES = 5
WL_W_IH = 6
WL_W_HH = 7
WL_B_IH = 8
WL_B_HH = 9
WL_W_HEAD = 10
WL_B_HEAD = 11
N_WLAYOUT = 12
# 16 float32 = 64 bytes: every weight array starts on a cache line, as a
# separate numpy array could.
WEIGHT_ALIGN = 16

# ev rows (int64, (N_EV, n)).
EV_SLOT = 0
EV_REF = 1
EV_OPEN_REF = 2  # output
N_EV = 3

# out_code rows (int8, (N_OCODE, n)).
OC_OUTCOME = 0
OC_ALERT = 1
OC_TRANS = 2
N_OCODE = 3

CELL_LSTM = 0
CELL_GRU = 1
