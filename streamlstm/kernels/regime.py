"""The regime scorer: how far is the stream, now, from its own learnt normal.

One-step forecast errors mark the onset of an incident and then fall back as
the forecast catches up (SCORING.md's finding, measured again on SKAB: the
forecast scorer closed its alerts while the valve fault lasted). This scorer
keeps, per stream and per scored feature, a handful of running statistics
(``sstat``, rows ``SS_*`` of :mod:`~streamlstm.kernels.layout`) and compares
the present with them through eight views, each a distance where 1 means
"anomalous":

- **spike**: ``|r| / (1.25 s)`` over ``SPIKE_K``, where ``r = x - x̂`` is the
  forecast error and ``s`` the stream's mean ``|r|`` of normal events (floored
  at ``FLOOR_REL`` of the feature's own spread, so a noise-free stream does not
  alert on rounding). Heavy-tailed streams: the threshold rises to
  ``SPIKE_GAMMA`` times ``q``, a running estimate of the stream's
  1-in-``SPIKE_TAIL`` spike size (up ``SPIKE_STEP`` per exceedance, down
  ``SPIKE_STEP / SPIKE_TAIL`` per other event that is not a repeat of the
  last value; learnt in and out of episodes, so a stream that spikes often is
  not paged for each spike, and one spike moves it only by ``SPIKE_STEP``; a
  stream that sits still between jumps gets its jumps' tail, not its
  events'). A Gaussian stream's ``q`` is ~2.9, so its threshold stays
  ``SPIKE_K``.
- **energy**: ``|L - mean_L| / max(sd_L, ENERGY_SD_MIN)`` over ``ENERGY_K``,
  ``L = ln e_short`` the log of the short (span ``SHORT_SPAN``) mean squared
  error and ``mean_L``, ``sd_L`` its own normal mean and spread. Up: a
  variance change, a broken relation between channels, a new oscillation;
  down: the channel went quiet. Against its own distribution, not against
  the long-run mean square: on a bursty stream the short energy is usually
  far below the mean (which the bursts make), and is not "quiet" for that.

  **Its accumulated evidence** (upward; a CUSUM): ``C = max(0, C + CU_A u - CU_B)``
  with ``u = (r / (1.25 s))^2`` (at most ``CU_UCLIP``: 4 scales), the log-likelihood
  ratio of an error from a spread ``sqrt(CU_RATIO)`` times the normal one against the
  normal one, summed while it is positive; ``C`` over the larger of ``CU_H`` and 1.3x
  its running 1-in-``SPIKE_TAIL`` level counts as energy (``C`` stops at distance 1,
  so it opens nothing while the views are widened, before ``BASELINE_EVENTS``: a young
  stream's residual scale is still rough). The short energy needs ~7x its typical
  level (4 of its floored spreads of 0.5 in logs) and a span's worth of events to get
  there, so a random walk whose steps grew 2.2x (5x the energy) was seen in 9 of 20
  runs, after 10-118 events, as the view's distance rose and fell with the noise; a
  synthetic channel leaving its relation, whose wander starts from 0, in its 8th event
  of 10 or its 24th of 36. The sum adds each event's evidence (~3 an event at 10x the
  energy, less than 0 below 2.4x): the same walks are seen in 20 of 20, after a median
  12 events, and a normal stream's sum sits near 0 (a Gaussian stream's is past
  ``CU_H`` on about ``e^-13`` of its events, Wald's bound). It holds an episode for
  its first ``TAIL_EPISODE`` events only (the energy view takes over by then; holding
  by it for the whole episode held NAB's cpu_utilization_asg alert 1,000 rows past its
  window, where the errors stayed a little above their normal), and starts again from
  0 after them.
- **spread** (upward only, with the energy's constants but ``SPREAD_GAMMA``): the
  log of the short mean square of ``x`` about its short level against its own normal
  mean, spread and running 1-in-``SPIKE_TAIL`` level. A fast oscillation or a ramp
  that the forecast follows (so the residuals stay small) shows here.
- **level**: ``|m - b| / sqrt(v_d)`` over ``LEVEL_K``: the short level ``m``
  (its steps clipped at ``LEVEL_CLIP`` residual scales, so a spike, which the
  spike view judges, barely moves it and a new level still reaches it; not
  clipped once a feature of the open episode has been back within this band of
  its frozen baseline, and nearer it than the short level, for ``BACK_RUN``
  values in a row, so the level follows the stream's return at the short span
  instead of ``LEVEL_CLIP`` scales an event)
  against a slow baseline ``b`` (time constant ``BASE_TAU``), in units of
  that difference's own normal spread ``v_d``. A noisy channel gets a tight
  band (its short level barely moves), a slowly trending one (a temperature
  warming up) a wide one, so a step on the first is seen and the trend of the
  second is not an incident. It holds an episode at 1 but opens one only at
  ``LEVEL_OPEN`` times that (the band is Gaussian; a bursty stream's level
  passes it whenever its bursts change height).
- **flat line**: the run of identical values over the longer of
  ``STUCK_K / -ln p`` (``p`` the stream's normal probability of a repeat) and
  ``RUN_GAMMA`` times the longest run it ended normally of late: a stuck
  channel of a continuous signal is seen within two events, a counter that
  often repeats or a stream that idles at one value between bursts only when
  it stays flat longer than it normally does.
- **relation** (streams of two or more scored features): each feature's
  warm-up z-score ``z_f`` against the mean ``m_f`` of the others', through a
  coefficient learnt per stream (``beta_f = E[z_f m_f] / E[m_f^2]``): the short
  level of ``e_f = z_f - beta_f m_f`` against its own normal mean and spread,
  over ``REL_K``. Coupled channels swing together (a daily cycle, a load);
  one that drifts away from the others shows here long before it leaves its
  own swing. Counted in the hold. Naming: when some channels move, the
  others' relation moves too (the movers are in their reference), so the
  alert names features by their own views and the relation counts a quarter.
  At ``REL_K`` 5 it paged SKAB's normal rows (FAR 1.4% -> 14.8%). It is
  loose on purpose: channels that move against each other (loadings of both
  signs) cancel in the mean of the others.

  **The regression** (a second relation residual; opens an episode, never joins
  one, holds only near its peak): ``q_f = z_f - sum_g w_gf z_g``, ``z_f``'s best linear prediction
  from all the other channels, with weights read off the inverse of the stream's
  running covariance of the z's (``C + REL_RIDGE I``; rows ``N_SSTAT ..`` of
  ``sstat``, solved every ``REL_REFRESH`` events, every ``REL_REFRESH_WARM`` in its
  warm-up, by :func:`_learn_relation`); its
  short level against its own normal mean and spread, over ``REL_Q_K``, judged once
  it has learnt from ``EARLY_EVENTS`` events (``SS_RN``: a checkpoint from before
  it restores zeros, and the regression learns again). It sees a channel leave its
  relation whatever the loadings' signs and however the shared parts mix (a
  synthetic channel drifting 4 sds inside the stream's daily cycle: the mean of
  the others did not see it). It learns nothing while an episode is open (every
  residual reads the other channels, so a broken one would teach the rest; the
  covariance learns only from events all its channels learn from, so it stays
  positive definite). Why it holds only near its peak: on SKAB a pump's
  temperature keeps rising through a valve fault and cools for minutes after it,
  so every channel whose regression reads the temperature stays off its relation
  after the fault; holding (or joining the mask) at distance 1 held SKAB's alerts
  past the faults' ends (FAR 7.7% -> 14.8%). A feature of the episode is held by it
  while at distance 1 and at least ``REL_HOLD_PEAK`` of its peak since it last came to
  distance 1 (``ss_qp``, kept across episodes): cooling falls from the peak (the
  temperature from 5.2 to 4.2 by the fault's end), while a channel drifting off its
  relation climbs, and without it
  the alert that the regression opened closed within a few events (the view at 4x
  its bar), the cooldown keeping it shut. The loose relation above holds as well.

  It also **ends a level hold**: a broken feature's baseline is frozen while the
  episode lasts, and the stream's own swing carries its short level away from
  it, so the level view held alerts for hundreds of events after their
  incident. When the feature's regression rests on channels outside the
  episode (weights of at least ``REL_RELEASE`` on them in all) and says it is
  back in its relation, its level view holds no more than the regression's
  distance (a correlation break's alert held 322 events past its end, now
  closes within 60, and the variance change that followed opens its own).

- **range** (counted in the hold, like the level): the short level beyond the
  stream's range of normal short levels, over the larger of ``RNG_K`` of the
  range's width and ``RNG_GAMMA`` times the depth of the stream's recent normal
  excursions beyond it. A daily cycle makes the level view's band wide (its
  short level swings by the cycle's amplitude), yet a holiday's missing peak or
  a failing cooler's new high is a level the stream does not go to; the range
  sees it (once the level has stayed past the margin ``RNG_PERSIST`` events: a
  burst of two or three readings of a quantised channel is not a level). It
  judges once the short level has crossed its baseline
  ``RNG_CROSS`` times (with a hysteresis): maturity counted in independent
  swings, not events, so a range seen over a few slow swings, which the next
  swing may well pass, judges nothing, and a noisy stream, whose range is soft
  (its excursions pass it often), gets a margin as wide as they are deep.
  The range is forgotten over ``RNG_FORGET`` crossings (at least 8k events):
  forgotten over 8k events whatever the stream, a 1-minute stream with a weekly
  cycle paged each week's new extremes (109 false openings in 444 stream-days
  of a clean fleet against 17 without the view, ``benchmarks/quality_quiet.py``;
  now 17). NAB realKnownCause 43.6 -> 63.1 (sweep 42.7 -> 62.8); SKAB valve2's
  false alarm rate 1.4% -> 7.7% (F1 0.948 -> 0.924); the synthetic fleet
  unchanged (85 caught, 9 false).

- **rhythm** (opens an episode, never holds one): the lag-1 correlation of the
  residuals over ``AC_SPAN`` events (one beyond ``CLIP`` scales counts as 0: a
  jump's residual times the next event's noise swung it either way), against its
  own normal mean and spread (in tenths of a correlation, floor 0.05) and 1.3x its
  running 1-in-``SPIKE_TAIL`` level, over ``AC_K``; only a correlation of at least
  ``AC_MIN`` (0.2) is judged: errors that follow each other. A forecast that explains the
  stream leaves errors that do not follow each other; a new oscillation about the
  size of the channel's normal swing (the synthetic fleet's frequency change: its
  seasonal part held, a fast one added) moves the errors' size by less than their
  own spread, so energy and spread stayed at 0.5-0.8 of distance 1 for 55 events,
  while the correlation went from ~-0.2 to ~+0.6 (6-10 spreads). Its band learns
  only from events below ``AC_LEARN`` of distance 1 (a correlation rises slowly,
  and a band learning from the rise widened faster than the view climbed); it does
  not hold, since the correlation of ~32 events outlasts the oscillation by as many.
  Judged once it has seen ``BASELINE_EVENTS`` errors (its own count, ``AC_N``);
  rows from ``layout.ss_ac(F)`` (appended, so a checkpoint from before
  restores zeros, the count too, and the view learns again before it judges: a
  smooth swing's errors, correlated ~+0.95, against a zero band paged every event).

**Modes**: a telemetry channel commanded between levels (a valve's positions, a
heater's settings) jumps by ~100x its noise at every command, and the spike view's running
1-in-256 level, inside the jumps' own spread, let about one jump in four page. A stay that a
jump began and that lasted ``MODE_DWELL`` events makes its level one of the stream's
``MODE_K`` modes; a later jump that lands within ``LAND_TOL`` spike-scales of a mode is a
move between modes: no spike, no error for the energy views, and the short level goes
there at once. At a mode the level view opens nothing (it still holds an open episode:
muted there, it let SKAB's valve faults close, MAR 34%). Not while the recurrence memory
expects a schedule's next onset: a square wave on a clock is judged by its schedule (a
jump at another hour opens).

**Rest value**: event-driven streams (an idle counter at 0, a key-hold time
between presses) spend much of their time at one exact value. A value a
stream spends at least ``REST_MIN`` of its events at is its rest value
(``SS_R0``, its share ``SS_R0F``; learnt from every event, a repeated value
replaces a rest value held less than ``REST_SWITCH`` of the time). Arriving
at or staying at the rest value opens no episode through the level,
flat-line, energy or spread views (they paged every idle stretch); the
spike view still judges the arrival, and an open episode still holds there
(a fault that sits at the rest value), though not by its level when the stream
rests ``REST_HOLD`` of the time or more: there the rest is its most ordinary
value, while its baseline, raised by its bursts, sat above it (NAB's
rogue_agent_key_updown, at rest ~85% of the time, held an alert 1,453 events,
five days, to the end of the series). A continuous signal has no rest
value, so a stuck channel is still seen within two events.

**The hold's energy and spread** count each residual (each deviation from the short
level) at most ``HOLD_CLIP`` residual scales (two more state rows, ``SS_ESC`` and
``SS_XSC``): the square of one outlier, which the spike view judges, no longer
holds the episode for the ~40 events its energy takes to decay after the stream is
back (a glitch on a flat channel held its alert ~150 events; the synthetic fleet's
spikes 35 events past their end, now 17). A rise in energy holds only as far as the
clipped residuals carry it; a fall (the channel went quiet) holds as before.

**An incident teaches the energy and spread tails for its first** ``TAIL_EPISODE``
**events only.** Their running 1-in-``SPIKE_TAIL`` levels learn from every event, so a
stream that bursts often is not paged for each burst; but they rise ``ENERGY_STEP`` per
exceedance and fall ``ENERGY_STEP / SPIKE_TAIL`` per event, so every event of a long
incident raised them and they took days to come back (a 56-event variance change
lifted a synthetic stream's energy tail by 1.6 ln units, ~8,000 events to decay): the
stream was blind to its next incident of the same kind. A masked feature's tails now
learn from an episode's first ``TAIL_EPISODE`` events (a burst is learnt as the
stream's burstiness) and again once it is released (``MAX_HOLD``). The spike level
still learns from every event (NAB's rogue_agent bursts need it).

**The time of day**: a machine on a schedule jumps at the same minutes every day
(NAB's artificial daily series; a batch job, business hours). The spike view's
running level learns a jump 5% at a time, so each such jump opened an alert (a daily
square wave: 26 false openings in 14 days, now 3, all in its first two days). Each
feature keeps, for each of the day's ``TOD_BINS`` two-hour stretches (``TOD_SECONDS``,
of the event time's clock), its largest opening distance at the stretch's last
``TOD_DAYS`` (3) visits (``N_TOD`` rows from ``layout.ss_tod(F)``, appended after the
regression's, so a checkpoint from before restores zeros). An excursion the stream made
at this time on two of its last three days, give or take a stretch, is its daily
normal: the feature opens only at ``TOD_GAMMA`` (1.3) times the median of those days'
largest. The median: a one-off incident does not blind the same hours of the next
day, and one day without the jump (an incident of its own) does not make the next
two days' jumps news. A move onto one of the stream's modes (below) counts 0 there:
a channel commanded at random times moves in most hours, and its moves made every
hour's usual excursion a move's, which hid incidents of any other kind. What it
cannot see is a jump that fails to come or comes smaller (no memory of the level at
each time of day). A stream that does not repeat itself daily (or whose clock is not
wall time) keeps the median below 1/1.3 in every stretch and is judged as before: the
synthetic fleet, NAB, SKAB and the clean 28-day fleet are unchanged; of 20 random
glitches on a constant, one fell two days running near the time of day of a larger
one and is not paged.

**A schedule, whatever the clock**: the time-of-day memory needs the event time in
seconds of wall time; a stream whose times come in another unit (an exporter that
divides nanoseconds by 1e9 when the times are microseconds, which pandas 3 gives: NAB
read that way has five minutes between events of 0.3 "seconds"), or whose schedule is
not daily (a job every 90 minutes, a sawtooth reset every 100 events), jumped as often
as before. Each feature also keeps the onsets (the first event at distance 1 or more
after one below) of its last ``REC_K`` (8) excursions and their sizes (the largest
distance of each; ``N_REC`` rows from ``layout.ss_rec(F)``, appended, so a
checkpoint from before restores zeros). An onset at ``t`` that is the next term of an
arithmetic progression of two of them (at ``t - L`` and ``t - 2 L``, within the gap
since the stream's last event, at most 5% of ``L`` after an outage, plus 0.1% of ``L``)
is on a schedule: the excursion opens only at ``REC_GAMMA`` (1.3) times the smaller of
those two. Two jumps at the same interval are not enough: the third is the first the
memory knows. Times, not event counts, so a stream that skips events keeps its
schedule; the tolerance of about one event's gap, so random excursions rarely line up
(none of the 20 glitches on a constant did; in NAB, two of rogue_agent_key_updown's
bursts did). A jump twice as high, or at another phase of the schedule, still pages.
A schedule seen four times (``t - 3 L`` too) with excursions of alike sizes (the
smallest at least ``REC_ARM`` of the largest and ``REC_ARM_MIN``) expects its next
onset at ``t + L`` (the earliest of the schedules a feature keeps): when none has come
``REC_LATE`` of ``L`` and a gap after (15 minutes of a 12-hour schedule), the feature's
distance is ``REC_ARM_MIN``, once, named by the **schedule** view: the daily jump that
did not come (NAB's art_daily_nojump). One that comes on time at under ``REC_SMALL``
(0.6) of the smallest of its last three, when those three were of one size (within
``REC_SAME``), pages the same way (art_daily_jumpsdown: the day's jump half as high). A
schedule that pauses (a weekday job on Saturday) pages once per pause; one that jumps
between random levels on time pages now and then on a small jump after three alike.

Distance ``D`` = the largest view over the scored features (the spread view
counts with energy, level, range and flat line in the hold ``H``). An **episode**
starts at ``D >= 1`` (after ``BASELINE_EVENTS`` events, and not within
``EPISODE_COOLDOWN`` events of the last one unless a feature that was not in the
last one is at ``D_f >= 1``: one incident opens once, but another channel breaking
soon after is another incident; the last episode's features are marked ``-1`` in
``SS_MASK``); the features at ``D_f >= 1``
or ``H_f >= 1`` while it lasts form its mask. The episode **holds** while ``H``, the largest
level / range / energy / flat-line / relation view of the masked features, stays at or above
``EPISODE_CLOSE``, and ends after ``EPISODE_CLOSE_RUN`` events below. The
masked features learn nothing while it lasts (the incident must not teach the
normal; after ``MAX_HOLD`` events a lasting change becomes the new normal), except
that a masked feature held only weakly (``H_f < 1``) once the episode has lasted
``THAW_AFTER`` events lets its baseline follow again at ``THAW_RATE``: when every
channel of a stream is in the episode, no unbroken channel's regression can end the
level hold, and the stream's own swing kept each short level ~0.7-1 band widths from
its frozen baseline, so alerts stayed open up to 551 events after a level shift ended
(a feature still at distance 1 or more stays frozen);
the other features keep learning, so a temperature that drifts beside a
broken flow neither holds the alert nor is frozen away from its present.

Outputs per event: ``score = u / (1 + u)``, where ``u = max(D / max(P, 1), 1)``
at ``D >= 1`` (``P`` the stream's decaying maximum of recent ``D``: a rise
above the recent past ranks above its plateau) and ``0.999 D`` below, capped
below 0.5 during the episode cooldown and, once an episode has lasted the alert
machine's ``min_run`` events, while it holds (one incident, one opening: a threshold
sweep counts every row at or above its threshold, so a held incident ranked at its
opening level would count once per event; NAB sweep 35.3 -> 42.7), unless the
episode escalates to ``ESCALATION`` times its ranked peak (then ``u`` against the
reference of its opening, so a threshold above 0.5 still pages a growing incident; 3x,
not 2x: the range view's distance on a level shift climbs from 1 to ~8 as the short
level reaches the new level, and at 2x a held shift ranked three times); and
``hold = H / (1 + H)`` (all features' ``H`` outside an episode). So a score
of 0.5 is the default open threshold and a hold of 1/3 the close threshold.
Nothing here reads the alert thresholds: one replay serves every threshold.
``contrib`` gets each feature's ``D_f ** 2`` (squared, like the forecast
scorer's squared errors, so a feature at half the distance of the one that
broke has a fifth of the share and the alert names the features that broke).

Length: the two passes over the features (score, then learn) share every state row
and constant; the module doc above is a third of it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamlstm.kernels.config import NJIT, NJIT_INLINE
from streamlstm.kernels.layout import (
    AC_CROSS,
    AC_MEAN,
    AC_N,
    AC_PREV,
    AC_SQ,
    AC_TAIL,
    AC_VAR,
    CU_SUM,
    CU_TAIL,
    F_EPEAK,
    F_EREF,
    F_LAST_T,
    F_SCALE,
    I_EP_BELOW,
    I_EP_COOL,
    I_EP_HELD,
    I_EPISODE,
    MD_A,
    MD_C,
    MD_J,
    MD_L,
    MD_N,
    MODE_K,
    N_SSTAT,
    REC_K,
    SS_B,
    SS_CMM,
    SS_CZM,
    SS_ES,
    SS_ESC,
    SS_HI,
    SS_HIP,
    SS_LE,
    SS_LO,
    SS_LOP,
    SS_LV,
    SS_LX,
    SS_LXV,
    SS_M,
    SS_MASK,
    SS_MU,
    SS_MXRUN,
    SS_N,
    SS_PREP,
    SS_QD,
    SS_QE,
    SS_QLE,
    SS_QLX,
    SS_QM,
    SS_QSP,
    SS_QV,
    SS_R0,
    SS_R0F,
    SS_RE,
    SS_REM,
    SS_REV,
    SS_RGN,
    SS_RN,
    SS_RUN,
    SS_SR,
    SS_VAR,
    SS_VD,
    SS_XC,
    SS_XPREV,
    SS_XS,
    SS_XSC,
    TOD_BINS,
    TOD_DAYS,
    ss_ac,
    ss_bk,
    ss_cu,
    ss_md,
    ss_pk,
    ss_qp,
    ss_rec,
    ss_tod,
)

# Events a stream learns its normal from (a spread from 256 values is within ~4% of
# the truth; learning rates are 1/n until then). It is scored from EARLY_EVENTS on,
# with views widened until BASELINE_EVENTS.
BASELINE_EVENTS = 256
EARLY_EVENTS = 64
SHORT_SPAN = 16.0  # span of the short level and energy: a step is seen within a few events
BASE_TAU = 256.0  # the slow baseline follows a trend with this lag (events)
RESID_RATE = 1.0 / 256  # after the warm-up, the residual scale and energy learn this slowly
REPEAT_RATE = 1.0 / 1024
FLOOR_REL = 0.05  # residual scale floor: 5% of the feature's own spread (quiet streams)
# ... and never below this share of its level: above float32's resolution (1.2e-7), in
# which the state is kept (at 1e-9 a channel constant at 5.0 held an alert for good
# after one outlier: its short level cannot move by less than an ulp)
FLOOR_LEVEL = 1e-6
CLIP = 4.0  # deviations teach at most CLIP scales (from the 16th value on)
CLIP_AFTER = 16
SPIKE_K = 6.0
SPIKE_GAMMA = 1.3  # a spike must beat the stream's 1-in-SPIKE_TAIL spike by 30%
# ... of its moves: a value that repeats the last (a stream sitting still between jumps, an
# idle counter) leaves that level as it is, so a stream that jumps every 50 events has its
# jumps' 1-in-256, not the one of its events (which was inside the jumps' own spread: a
# piecewise-constant stream paged on its larger jumps; NAB's rogue_agent_key_updown, a
# counter idle at 0 between bursts, 23 -> 18 openings, the same windows). Unchanged for a
# continuous stream (no exact repeats).
SPIKE_TAIL = 256.0
# A jump that lands within LAND_TOL spike-scales of a level the stream jumped to and stayed
# at before (MODE_DWELL events in a row within it) is a move between its modes, not a spike
LAND_TOL = 3.0
MODE_DWELL = 8
SPIKE_STEP = 0.05  # ln q up per exceedance
ENERGY_K = 4.0  # standard deviations of ln(short energy) = distance 1
ENERGY_GAMMA = 1.3  # up: beyond 1.3x the stream's 1-in-SPIKE_TAIL excess of ln energy
# The spread view's: its short level and spread move slowly, so one excursion past its
# 1-in-256 level lasts many events and 1.3x of it was passed once in ~26 days of a clean
# one-minute stream (the 17 false openings of benchmarks/quality_quiet.py's 444
# stream-days were all the spread's); at 1.6x, 3.
SPREAD_GAMMA = 1.6
# The hold's energy and spread count a residual (a deviation) at most HOLD_CLIP residual
# scales (8 scales ~ 8 sd of a Gaussian stream's residual: only outliers are clipped);
# the clipped logs are taken when clipping lowered the short mean square by over 1%.
HOLD_CLIP = 8.0
HOLD_CLIP_SIG = 0.99
# An episode's events teach the energy and spread tails (their 1-in-SPIKE_TAIL levels)
# for this many events: a burst is learnt, a long incident does not blind the stream to
# the next (see the module doc)
TAIL_EPISODE = 16
ENERGY_STEP = 0.05  # ln units per exceedance of that level
ENERGY_SD_MIN = 0.5  # floor of that spread: x7.4 or /7.4 on a Gaussian stream (sd ~0.35)
LEVEL_K = 4.0
# The level view opens an episode only at LEVEL_OPEN times its distance (8 spreads); at
# 1 it holds one and joins its mask. Its band is Gaussian: a bursty stream's short level
# passes 4 spreads whenever its bursts change height (NAB's cpu_utilization: 14 false
# openings, none true on the dev data), while an incident it would open is opened by the
# spike, energy, spread or range view a few events later (the synthetic fleet: none
# lost; SKAB: 20 rows later) and held by the level.
LEVEL_OPEN = 2.0
STUCK_K = 9.2  # -ln(1e-4): a run that normal data repeats once in 10^4
RUN_GAMMA = 1.5  # ... and half as long again as the longest normal run of late
_RUN_DECAY = math.exp(-1.0 / 8192.0)  # per event: "of late" for runs
LEVEL_CLIP = 4.0
# A feature of the open episode back within its level band of its baseline (the value itself
# at the level view's distance below 1, and nearer the baseline than the short level is) for
# this many values in a row: its short level steps back unclipped (the clip had rate-limited
# the return: a level shift's alert stayed open ~40 events after the shift ended). One value
# outside the band restarts the run and the clip (a bursty incident's gaps between bursts).
BACK_RUN = 4.0
REPEAT_P_MIN = 1e-3  # a continuous signal's repeats are never taken as rarer than this
EPISODE_CLOSE = 0.5
EPISODE_CLOSE_RUN = 4
EPISODE_COOLDOWN = 32  # events after an episode before its features may open the next
REST_MIN = 0.2  # a value a stream spends this share of its events at is where it rests
# ... and a stream at rest this share of its events or more holds no episode by its level there
REST_HOLD = 0.5
REST_RATE = 1.0 / 1024  # after the warm-up, the rest share learns this slowly
REST_SWITCH = 0.05  # a repeated value replaces a rest value held less often than this
REL_SD_MIN = 0.05  # floor of the relation residual's spread (z units)
REL_K = 6.0  # relation residual spreads = distance 1 (5 paged SKAB's normal rows)
# the regression holds the episode's feature while at its distance 1 and at least this share
# of its peak since it came to 1 (a channel cooling back toward its relation after a fault,
# SKAB's temperature, falls from its peak and stops holding; a ramp that climbs holds)
REL_HOLD_PEAK = 0.8
# the regression's spreads = distance 1 (the loose relation's REL_K 6 paged SKAB at 5; the
# regression at 5 does not: SKAB unchanged). While it did not hold, 5.5 and 5 opened drifts
# no sooner for long (77% / 75% open); holding, 5 keeps them (twelve fleets: 79% -> 82%)
REL_Q_K = 5.0
REL_RIDGE = 0.05  # ridge of the regression on the others (z units: 5% of a variance)
REL_RELEASE = 0.5  # weight on unmasked channels from which the regression may end a level hold
REL_REFRESH = 16  # events between solves of the regression
REL_REFRESH_WARM = 4  # ... while a feature is in its warm-up (F^3 work a solve)
MAX_HOLD = 2048  # events of an episode after which its features learn again
# The time-of-day memory (see the module doc): a stretch of the clock's largest opening
# distance at its last TOD_DAYS visits (a visit: the events in one stretch, 24 h apart)
TOD_SECONDS = 7200.0  # TOD_BINS stretches a day
TOD_GAMMA = 1.3  # an excursion must beat the one the stream made at this time by 30%
# The recurrence memory (see the module doc): an excursion whose onset is the next term
# of an arithmetic progression of two of the last REC_K onsets is on a schedule
REC_GAMMA = 1.3  # ... and opens only 30% beyond the smaller of those two excursions
REC_TOL_GAP = 1.0  # the progression's tolerance: the gap since the stream's last event
REC_TOL_REL = 0.001  # ... and this share of its step
REC_TOL_CAP = 0.05  # the gap counts at most this share of the step (after an outage)
# A schedule seen four times with excursions of alike sizes expects the next: missed when
# none has come REC_LATE of its step (and a gap) after it was due
REC_ARM = 0.5  # the four excursions' smallest at least this share of their largest
REC_ARM_MIN = 2.0  # ... and at least this distance (a clear excursion, not one at the edge)
REC_LATE = 0.02  # (15 minutes of a 12-hour schedule)
# ... and one that comes on time at under REC_SMALL of the smallest of its last three,
# when those three were within REC_SAME of each other (a schedule of one size), pages too
REC_SMALL = 0.6  # (a jump of half the size: 0.51 of the distance, with the spike level)
REC_SAME = 0.67
ESCALATION = 3.0  # an open episode's distance at this multiple of its peak ranks again
# The range view (see the module doc). Its maturity is counted in crossings of the
# short level over its baseline (with a hysteresis of RNG_HYST of its spread), so a
# slowly swinging stream needs days, a noisy one a few hundred events.
RNG_PERSIST = 3  # events in a row past the margin before the range reaches distance 1
RNG_CROSS = 32  # crossings before the range judges
RNG_HYST = 0.5
RNG_RATE = 1.0 / 64  # per event beyond it, the range follows the level this far
RNG_K = 0.25  # least margin beyond the range, in widths, for distance 1
RNG_GAMMA = 1.2  # ... and this times the depth of the stream's recent normal excursions
RNG_FORGET = 250.0  # crossings over which the range and that depth are forgotten
RNG_FORGET_MIN = 8192.0  # ... and at least these many events (a noisy stream's range)
# The rhythm view (see the module doc): the lag-1 autocorrelation of the residuals
AC_SPAN = 32.0  # span of its short means (a correlation from ~32 events: sd ~0.15)
AC_SCALE = 10.0  # it is judged in tenths of a correlation (the band's floor: 0.05)
AC_K = 5.5  # spreads of that correlation = distance 1
AC_GAMMA = 1.3  # ... and beyond 1.3x the stream's running 1-in-SPIKE_TAIL level
AC_WARM = 48  # its short means are warm from the feature's 48th value
AC_LEARN = 0.5  # its band learns only from events below half its distance 1
# ... and it judges only a correlation of at least this: errors that follow each other.
# White noise forecast by its last value has errors correlated -0.5 and a tight band
# (sd ~0.08), which a jump's error times the next event's noise moved to ~0 for a few
# events: a noisy daily square wave paged at a jump
AC_MIN = 0.2
# A masked feature held only weakly (below distance 1) after the episode's first THAW_AFTER
# events lets its baseline follow again at THAW_RATE an event (see the module doc)
THAW_AFTER = 64
THAW_RATE = 1.0 / 64
# The energy view's accumulated evidence (see the module doc): the log-likelihood ratio
# of errors CU_RATIO times the normal energy, each error counting at most CU_UCLIP (4
# scales, squared), at distance 1 beyond CU_H or CU_GAMMA times its 1-in-256 level
CU_RATIO = 8.0
CU_A = 0.5 * (1.0 - 1.0 / CU_RATIO)
CU_B = 0.5 * math.log(CU_RATIO)
CU_UCLIP = 16.0
CU_H = 13.0
CU_GAMMA = 1.3
N_DIST = 22  # rows of _regime_step's dist scratch (one (N_DIST, F) float64 array)
NOVELTY_TAU = 64.0  # events: decay of the recent maximum of D (the score's reference)
# Which view put each feature where it is (``why``, written every event): the view with
# the largest distance as the feature's naming share counts it. Alert records name it.
VIEW_NAMES = (
    "spike",
    "energy",
    "spread",
    "level",
    "flat_line",
    "range",
    "relation",
    "forecast",
    "schedule",
    "rhythm",
)
VIEW_FORECAST = 7.0  # the forecast scorer's only view: its squared normalised error
_SPIKE_UP = math.exp(SPIKE_STEP)  # compile-time constants
_SPIKE_DOWN = math.exp(-SPIKE_STEP / SPIKE_TAIL)
_NOVELTY_DECAY = math.exp(-1.0 / NOVELTY_TAU)
_A_AC = 2.0 / (AC_SPAN + 1.0)
# layout's first rows of the time-of-day memory, the recurrence memory, the rhythm view and
# the pending alert's run (detect's), compiled (one definition for the kernels and Python)
_ss_tod = njit(**NJIT_INLINE)(ss_tod)
_ss_rec = njit(**NJIT_INLINE)(ss_rec)
_ss_ac = njit(**NJIT_INLINE)(ss_ac)
_ss_pk = njit(**NJIT_INLINE)(ss_pk)
_ss_bk = njit(**NJIT_INLINE)(ss_bk)
_ss_cu = njit(**NJIT_INLINE)(ss_cu)
_ss_md = njit(**NJIT_INLINE)(ss_md)
_ss_qp = njit(**NJIT_INLINE)(ss_qp)


@njit(**NJIT)
def _regime_reset(s, sstat, fstat, istat):  # pragma: no cover - compiled
    """Forget what slot ``s`` learnt (a new stream, or a gap reset)."""
    sstat[s, :, :] = 0.0
    fstat[s, F_SCALE] = 0.0
    istat[s, I_EPISODE] = 0
    istat[s, I_EP_BELOW] = 0
    istat[s, I_EP_HELD] = 0
    istat[s, I_EP_COOL] = 0


@njit(**NJIT)
def _regime_step(
    s, xv, fv, n_events, t, scored, sstat, fstat, istat, dist, contrib, why, e, min_run
):  # pragma: no cover - compiled
    """Score one event of slot ``s`` and learn from it; returns ``(score, hold)``.

    Why one function of ~180 lines: the eight views of every feature come from the
    same state row in one pass, and the episode logic between the distances and
    the learning needs all of them; the learning is the second pass
    (:func:`_regime_learn`).

    xv : (F,) float64 the event's values in scoring units (NaN = missing);
    fv : (F,) float64 the forecast in the same units (NaN = none: the previous
    value stands in). n_events : the stream's accepted events before this one.
    scored : (F,) bool. sstat : (n_slots, N_SSTAT, F) float32; fstat, istat :
    the slot's scalar rows. dist : (N_DIST, F) float64 scratch. contrib : (n, F)
    float32, row ``e`` gets each feature's squared distance ``D_f ** 2``; why : (n, F)
    float32, row ``e`` the index in VIEW_NAMES of each feature's largest view (NaN when
    not judged). min_run : the
    alert machine's events in a row to open (an episode's first ``min_run`` scores are
    never capped). Score is NaN (and nothing is scored) for a stream's first event.
    """
    n_feat = xv.shape[0]
    i_w = N_SSTAT + n_feat  # rows of the relation's regression weights
    i_td = _ss_tod(n_feat)  # the time-of-day memory's rows
    # the stretch of the day's clock (TOD_SECONDS) the event falls in, and the previous
    # event's when this one starts a new visit (another stretch, or the same a day on:
    # stretches are counted from the epoch)
    st = math.floor(t / TOD_SECONDS)
    b_now = tod_stretch(t)
    i_p = -1  # the previous stretch's rows, when its visit is over
    if n_events > 0 and math.floor(fstat[s, F_LAST_T] / TOD_SECONDS) != st:
        i_p = i_td + TOD_DAYS * tod_stretch(fstat[s, F_LAST_T])
    i_cur = i_td + TOD_DAYS * TOD_BINS
    i_lo = i_td + TOD_DAYS * ((b_now + TOD_BINS - 1) % TOD_BINS)
    i_now = i_td + TOD_DAYS * b_now
    i_hi = i_td + TOD_DAYS * ((b_now + 1) % TOD_BINS)
    i_rc = _ss_rec(n_feat)  # the recurrence memory's rows
    i_ac = _ss_ac(n_feat)  # the rhythm view's
    i_cu = _ss_cu(n_feat)  # the energy's accumulated evidence
    i_qp = _ss_qp(n_feat)  # the regression's peak
    a_s = 2.0 / (SHORT_SPAN + 1.0)
    warm = n_events >= EARLY_EVENTS
    # Before BASELINE_EVENTS the statistics come from fewer events: every view is
    # widened by sqrt(BASELINE_EVENTS / n) (x2 at 64 events), so an early stream sees
    # what is plainly anomalous and is not paged on its still-rough baseline.
    widen = 1.0 if n_events >= BASELINE_EVENTS else math.sqrt(BASELINE_EVENTS / max(n_events, 1))
    any_prev = False
    d_max = 0.0
    h_all = 0.0
    # -- the relation between channels: each feature's z against the others' mean ------
    zsum = 0.0
    zn = 0
    for f in range(n_feat):
        dist[6, f] = math.nan
        dist[7, f] = math.nan
        dist[8, f] = math.nan
        if scored[f] and not math.isnan(xv[f]) and sstat[s, SS_N, f] >= 2.0:
            sdz = math.sqrt(sstat[s, SS_VAR, f])
            if sdz > 0.0:
                dist[6, f] = (xv[f] - sstat[s, SS_MU, f]) / sdz
                zsum += dist[6, f]
                zn += 1
    # -- distances, from the state before this event ---------------------------------
    for f in range(n_feat):
        dist[0, f] = 0.0  # D_f
        dist[14, f] = 0.0
        dist[9, f] = 0.0  # D_f for naming: the relation view counts a quarter
        dist[10, f] = math.nan  # which view is largest (VIEW_NAMES), as named
        dist[1, f] = 0.0  # H_f
        dist[2, f] = math.nan  # r (NaN: the feature does not learn from this event)
        dist[3, f] = math.nan  # the short spread of x after this event
        dist[4, f] = math.nan  # L = ln(short energy) after this event
        dist[5, f] = math.nan  # ln(short spread)
        dist[11, f] = math.nan  # the hold's short energy (residuals clipped) after this event
        dist[12, f] = math.nan  # the hold's short spread (deviations clipped)
        dist[16, f] = math.nan  # the residuals' lag-1 autocorrelation (x AC_SCALE)
        dist[17, f] = 0.0  # the rhythm view's distance
        dist[18, f] = 0.0  # values in a row back near the baseline (a feature of the episode)
        dist[19, f] = 0.0  # the energy's accumulated evidence after this event
        dist[20, f] = 0.0  # 1: a jump onto one of the stream's modes
        dist[21, f] = 0.0  # H_f with the regression's hold: what the episode's hold reads
        x = xv[f]
        prev = sstat[s, SS_XPREV, f]
        if not scored[f] or math.isnan(x) or sstat[s, SS_N, f] == 0.0:
            continue
        any_prev = True
        fc = fv[f] if not math.isnan(fv[f]) else prev
        r = x - fc
        dist[2, f] = r
        mu = sstat[s, SS_MU, f]
        sd = math.sqrt(sstat[s, SS_VAR, f])
        fl = FLOOR_REL * sd + FLOOR_LEVEL * (abs(mu) + 1.0)
        s_eff = max(sstat[s, SS_SR, f], fl)
        at_md = _at_mode(sstat, s, f, x, s_eff, n_feat)  # (the level's opening reads it too)
        if at_md and abs(r) >= SPIKE_K * 1.25 * s_eff:
            # a jump onto one of the stream's modes: no error for the views that read them
            dist[20, f] = 1.0
            r = 0.0
        es_n = sstat[s, SS_ES, f] + a_s * (r * r - sstat[s, SS_ES, f])
        f2 = (1.25 * fl) ** 2
        le = math.log(es_n + f2)
        dist[4, f] = le
        dm_ = x - sstat[s, SS_M, f]
        if sstat[s, SS_MASK, f] > 0.5:
            dist[18, f] = _back_run(sstat, s, f, x, fl)
        if sstat[s, SS_N, f] >= CLIP_AFTER and dist[18, f] < BACK_RUN:
            lim_m = LEVEL_CLIP * 1.25 * s_eff
            dm_ = min(max(dm_, -lim_m), lim_m)
        m_n = sstat[s, SS_M, f] + a_s * dm_
        if dist[20, f] > 0.0:  # (its short level is at the mode it jumped to)
            m_n = x
        # spread: the short mean square of x about its short level (an oscillation the
        # forecast follows shows here and not in the residuals), upward only
        dx = x - m_n
        xs_n = sstat[s, SS_XS, f] + a_s * (dx * dx - sstat[s, SS_XS, f])
        dist[3, f] = xs_n
        lx = math.log(xs_n + f2)
        dist[5, f] = lx
        # the hold's energy and spread: an outlier counts at most HOLD_CLIP scales
        lim_h = HOLD_CLIP * 1.25 * s_eff if sstat[s, SS_N, f] >= CLIP_AFTER else math.inf
        rc_h = min(abs(r), lim_h)
        esc_n = sstat[s, SS_ESC, f] + a_s * (rc_h * rc_h - sstat[s, SS_ESC, f])
        dist[11, f] = esc_n
        dxc = min(abs(dx), lim_h)
        xsc_n = sstat[s, SS_XSC, f] + a_s * (dxc * dxc - sstat[s, SS_XSC, f])
        dist[12, f] = xsc_n
        # the rhythm: the residuals' lag-1 autocorrelation over ~AC_SPAN events, its short
        # means kept from every event; an outlier (beyond CLIP scales) counts as 0: a jump's
        # residual times the next event's noise swung the correlation either way
        lim_c = CLIP * 1.25 * s_eff if sstat[s, SS_N, f] >= CLIP_AFTER else math.inf
        r_c = r if abs(r) <= lim_c else 0.0
        ac_x = sstat[s, i_ac + AC_CROSS, f] + _A_AC * (
            r_c * sstat[s, i_ac + AC_PREV, f] - sstat[s, i_ac + AC_CROSS, f]
        )
        ac_q = sstat[s, i_ac + AC_SQ, f] + _A_AC * (r_c * r_c - sstat[s, i_ac + AC_SQ, f])
        sstat[s, i_ac + AC_PREV, f] = r_c
        sstat[s, i_ac + AC_CROSS, f] = ac_x
        sstat[s, i_ac + AC_SQ, f] = ac_q
        n_ac = sstat[s, i_ac + AC_N, f] + 1.0  # the errors it has seen, this one included
        sstat[s, i_ac + AC_N, f] = n_ac
        y_ac = AC_SCALE * ac_x / (ac_q + f2)
        dist[16, f] = y_ac
        # the energy's accumulated evidence: from the 16th value (the residual scale's
        # first clip), 0 once the feature has been part of the episode TAIL_EPISODE events
        c_n = 0.0
        thr_cu = max(CU_H, CU_GAMMA * sstat[s, i_cu + CU_TAIL, f])
        ep_late = sstat[s, SS_MASK, f] > 0.5 and istat[s, I_EP_HELD] > TAIL_EPISODE
        if sstat[s, SS_N, f] >= CLIP_AFTER and not ep_late:
            u = min((r / (1.25 * s_eff)) ** 2, CU_UCLIP)
            c_n = min(max(sstat[s, i_cu + CU_SUM, f] + CU_A * u - CU_B, 0.0), thr_cu)
        dist[19, f] = c_n
        z_f = dist[6, f]
        rel = zn >= 2 and not math.isnan(z_f)
        e_n = 0.0
        q_n = 0.0
        dist[15, f] = math.nan
        if rel:
            mo = (zsum - z_f) / (zn - 1)
            beta = sstat[s, SS_CZM, f] / max(sstat[s, SS_CMM, f], 1e-6)
            e_n = sstat[s, SS_RE, f] + a_s * (z_f - beta * mo - sstat[s, SS_RE, f])
            dist[7, f] = mo
            dist[8, f] = e_n
            # z_f against its regression on the others' z (a missing one counts at its
            # mean, 0)
            pred = 0.0
            for g in range(n_feat):
                if g != f and not math.isnan(dist[6, g]):
                    pred += sstat[s, i_w + g, f] * dist[6, g]
            q_n = sstat[s, SS_QE, f] + a_s * (z_f - pred - sstat[s, SS_QE, f])
            dist[15, f] = q_n
        if not warm:
            # The views judge from EARLY_EVENTS on: before, only what the learning
            # reads (above) is needed, and the distances below are not computed.
            continue
        z_sp = abs(dist[2, f]) / (1.25 * s_eff)  # (r before a jump onto a mode zeroed it)
        z_en = _log_level_distance(sstat, s, f, SS_LE, SS_LV, SS_QLE, le, True, ENERGY_GAMMA)
        z_lv = abs(m_n - sstat[s, SS_B, f]) / math.sqrt(
            sstat[s, SS_VD, f] + (0.25 * fl) ** 2 + 1e-300
        )
        z_x = _log_level_distance(sstat, s, f, SS_LX, SS_LXV, SS_QLX, lx, False, SPREAD_GAMMA)
        run = sstat[s, SS_RUN, f] + 1.0 if _same(x, prev, sd) else 0.0
        z_st = 0.0
        if run > 0.0:
            nl = -math.log(max(sstat[s, SS_PREP, f], REPEAT_P_MIN))
            lim_r = RUN_GAMMA * sstat[s, SS_MXRUN, f]
            if nl > 0.0:
                lim_r = max(lim_r, STUCK_K / nl)
            z_st = run / lim_r if lim_r > 0.0 else 0.0
        z_rel = 0.0
        z_q = 0.0
        if rel:
            z_rel = abs(e_n - sstat[s, SS_REM, f]) / max(math.sqrt(sstat[s, SS_REV, f]), REL_SD_MIN)
            if sstat[s, SS_RN, f] >= EARLY_EVENTS:
                z_q = abs(q_n - sstat[s, SS_QM, f]) / max(math.sqrt(sstat[s, SS_QV, f]), REL_SD_MIN)
        z_rg = 0.0  # range: the short level beyond the stream's range of normal levels
        if sstat[s, SS_N, f] >= BASELINE_EVENTS and abs(sstat[s, SS_XC, f]) >= RNG_CROSS:
            w_rg = sstat[s, SS_HI, f] - sstat[s, SS_LO, f] + fl
            margin = max(RNG_K, RNG_GAMMA * sstat[s, SS_QD, f]) * w_rg
            z_rg = max(m_n - sstat[s, SS_HI, f], sstat[s, SS_LO, f] - m_n) / margin
            # a burst of two or three readings (a quantised channel's) lifts the short
            # level past the range for a few events: the spike view's business
            if z_rg >= 1.0:
                sstat[s, SS_RGN, f] += 1.0
                if sstat[s, SS_RGN, f] < RNG_PERSIST:
                    z_rg = 0.999
            else:
                sstat[s, SS_RGN, f] = 0.0
        z_cu = c_n / thr_cu
        e_n_ = max(z_en / ENERGY_K, z_cu)
        x_n_ = z_x / ENERGY_K
        z_ac = 0.0
        if n_ac >= BASELINE_EVENTS and y_ac >= AC_SCALE * AC_MIN:
            z_ac = _log_level_distance(
                sstat, s, f, i_ac + AC_MEAN, i_ac + AC_VAR, i_ac + AC_TAIL, y_ac, False, AC_GAMMA
            )
            z_ac = z_ac / AC_K
            dist[17, f] = z_ac
        # What holds: more energy or spread only from residuals within HOLD_CLIP scales
        # (a single outlier is the spike view's; its square would hold the episode for
        # ~40 events after the stream is back), less energy as the opening view sees it.
        # The clipped logs are taken only when clipping changed the short mean square.
        e_hold = e_n_
        if esc_n < HOLD_CLIP_SIG * es_n and le > sstat[s, SS_LE, f]:
            lec = math.log(esc_n + f2)
            z_eh = _log_level_distance(sstat, s, f, SS_LE, SS_LV, SS_QLE, lec, False, ENERGY_GAMMA)
            # (without the accumulated evidence: outliers, each counting 4 scales in it,
            # held a counter's alert through its bursts; NAB's rogue_agent_key_updown,
            # 59 -> 153 rows in alert outside its windows)
            e_hold = z_eh / ENERGY_K
        x_hold = x_n_
        if xsc_n < HOLD_CLIP_SIG * xs_n:
            lxc = math.log(xsc_n + f2)
            z_xh = _log_level_distance(sstat, s, f, SS_LX, SS_LXV, SS_QLX, lxc, False, SPREAD_GAMMA)
            x_hold = z_xh / ENERGY_K
        l_n_ = z_lv / LEVEL_K
        z_fr = max(z_st, z_rg)  # flat line, range
        z_lvl = max(l_n_, z_fr)  # ... and level
        z_nrg = max(e_n_, x_n_)
        z_rl = z_rel / REL_K
        z_ql = z_q / REL_Q_K
        # A broken feature's baseline is frozen while the stream's own swing moves on:
        # back where its regression on the unbroken channels puts it, its level no
        # longer holds (when that regression rests on them enough to say so)
        z_lh = z_lvl
        r0 = sstat[s, SS_R0, f]
        at_rest = sstat[s, SS_R0F, f] >= REST_MIN and _same(x, r0, sd)
        if at_rest and sstat[s, SS_R0F, f] >= REST_HOLD:
            # resting where it rests more often than not: its level holds nothing (below)
            z_lh = z_fr
        elif sstat[s, SS_MASK, f] > 0.5 and rel and sstat[s, SS_RN, f] >= EARLY_EVENTS:
            lean_u = 0.0
            for g in range(n_feat):
                if g != f and sstat[s, SS_MASK, g] < 0.5 and not math.isnan(dist[6, g]):
                    lean_u += abs(sstat[s, i_w + g, f])
            if lean_u >= REL_RELEASE:
                z_lh = max(min(l_n_, z_ql), z_fr)
        h = max(max(e_hold, x_hold), max(z_lh, z_rl))
        # The regression opens and never joins a feature to the episode (see the module
        # doc), but it holds a feature of the episode while it stays at distance 1 and near
        # its peak there: a channel drifting away from its relation kept climbing past
        # 4 while the alert it opened closed (no other view of the channel was at 1)
        q_pk = max(sstat[s, i_qp, f], z_ql) if z_ql >= 1.0 else 0.0
        sstat[s, i_qp, f] = q_pk
        h_q = 0.0
        if sstat[s, SS_MASK, f] > 0.5 and z_ql >= 1.0 and z_ql >= REL_HOLD_PEAK * q_pk:
            h_q = z_ql
        h_q = max(h, h_q)
        # at one of its modes, a stream's level opens nothing (it may still hold)
        z_lo = 0.0 if at_md else z_lv
        h_open0 = max(max(z_nrg, z_ac), max(max(z_lo / (LEVEL_K * LEVEL_OPEN), z_fr), z_rl))
        h_open = max(h_open0, z_ql)
        sp = z_sp / max(SPIKE_K, SPIKE_GAMMA * sstat[s, SS_QSP, f])
        # When some channels move, the relation of the others moves too (their
        # reference is the mean of the rest): the alert names by the channels' own
        # views, the relation breaking ties.
        own = max(max(z_nrg, z_lvl), z_ac)
        rel_name = 0.25 * max(z_rl, z_ql)
        # The view named (VIEW_NAMES' order): see _named_view.
        vw = _named_view((sp, e_n_, x_n_, l_n_, z_st, z_rg, rel_name, z_ac), widen)
        if widen != 1.0:  # x / 1.0 is x: divided only while the views are widened
            h = h / widen
            h_q = h_q / widen
            h_open = h_open / widen
            h_open0 = h_open0 / widen
            sp = sp / widen
            own = own / widen
            rel_name = rel_name / widen
        if at_rest:
            # Arriving at or staying at its rest value (an idle counter's 0) opens no
            # level, flat-line, energy or spread episode: those paged every idle stretch
            # of event-driven streams. The spike view still judges the arrival, and an
            # open episode still holds there (a fault that sits at the rest value), by
            # its level only when the stream rests less than REST_HOLD of the time: one
            # at rest more often than not is at its most ordinary value there, and its
            # level (baseline raised by its bursts) held an alert for days
            h_open = 0.0
            h_open0 = 0.0
            own = 0.0
            vw = 6.0 if rel_name > sp else 0.0
        # A jump onto one of the stream's modes is no spike, unless the recurrence memory
        # expects the next onset of a schedule: that judges its jumps (one off the
        # schedule still opens), and it sees every jump, so that one that does not come
        # is missed. The time-of-day memory sees only what the views judged: a channel
        # commanded between its modes at random times has a move in most hours, and
        # while the memory learnt those, every hour's usual excursion was a move and an
        # incident of another kind (noise, an offset) was divided by it and missed
        d_mem = max(sp, h_open)
        if dist[20, f] > 0.0 and sstat[s, _rec_step_row(i_rc), f] == 0.0:
            sp = 0.0
        d = max(sp, h_open)
        d14 = max(sp, h_open0)
        # An excursion the stream made at this time on two of its last three days (give
        # or take two hours) is its daily normal: it opens only 30% beyond it
        if i_p >= 0:  # the visit of the previous stretch is over: remembered
            sstat[s, i_p + 2, f] = sstat[s, i_p + 1, f]
            sstat[s, i_p + 1, f] = sstat[s, i_p, f]
            sstat[s, i_p, f] = sstat[s, i_cur, f]
            sstat[s, i_cur, f] = 0.0
        # day k: this stretch and the next at their k-th last visits, the previous
        # stretch's at its (k+1)-th (its last one is today's)
        m_1 = max(max(sstat[s, i_now, f], sstat[s, i_hi, f]), sstat[s, i_lo + 1, f])
        m_2 = max(max(sstat[s, i_now + 1, f], sstat[s, i_hi + 1, f]), sstat[s, i_lo + 2, f])
        m_3 = max(sstat[s, i_now + 2, f], sstat[s, i_hi + 2, f])
        known = TOD_GAMMA * max(min(m_1, m_2), min(max(m_1, m_2), m_3))  # the median
        sstat[s, i_cur, f] = max(sstat[s, i_cur, f], d)
        k_rc = _recurrence(sstat, s, f, i_rc, d_mem, t, t - fstat[s, F_LAST_T])
        known = max(known, k_rc)
        if known > 1.0:
            d = d / known
            d14 = d14 / known
        if k_rc < 0.0:  # a scheduled excursion that did not come: as far as it would have
            d = max(d, -k_rc)
            d14 = max(d14, -k_rc)
            own = max(own, -k_rc)
            vw = 8.0
        dist[14, f] = d14
        own = max(own, sp)
        dist[9, f] = own + rel_name
        dist[10, f] = vw
        dist[0, f] = d
        dist[1, f] = h
        dist[21, f] = h_q
        d_max = max(d_max, d)
        h_all = max(h_all, h)
    if not any_prev:
        for f in range(n_feat):
            contrib[e, f] = 0.0
            why[e, f] = np.float32(math.nan)
        _regime_learn(s, xv, scored, sstat, istat, dist, a_s, n_events)
        return math.nan, math.nan

    # -- score: a rise above the recent past ranks above its plateau ------------------
    ref = max(fstat[s, F_SCALE], 1.0)
    u = max(d_max / ref, 1.0) if d_max >= 1.0 else 0.999 * d_max
    # The cooldown after an episode holds back its own features, not the others (a
    # feature that was in the last episode is marked -1 in SS_MASK until the next).
    cool = istat[s, I_EP_COOL] > 0 and istat[s, I_EPISODE] == 0
    if cool:
        for f in range(n_feat):
            if dist[0, f] >= 1.0 and sstat[s, SS_MASK, f] > -0.5:
                cool = False
    if cool:
        u = min(u, 0.99)  # one incident, one opening
    if istat[s, I_EPISODE] == 1:
        # An open episode's events rank below its opening (a threshold sweep counts every
        # row above it: a held incident would be paged once per event), except the first
        # min_run (the alert machine may need them) and an escalation to twice the
        # episode's ranked peak (so a threshold above 0.5 still pages a growing incident).
        if d_max >= ESCALATION * fstat[s, F_EPEAK]:
            fstat[s, F_EPEAK] = d_max
            u = max(d_max / max(fstat[s, F_EREF], 1.0), 1.0)
        elif istat[s, I_EP_HELD] >= min_run:
            u = min(u, 0.99)
    fstat[s, F_SCALE] = max(fstat[s, F_SCALE] * _NOVELTY_DECAY, d_max)

    # -- the episode: which features broke, and whether they are still away -----------
    hold_d = h_all
    if istat[s, I_EPISODE] == 0:
        if warm and not cool and d_max >= 1.0:
            istat[s, I_EPISODE] = 1
            istat[s, I_EP_BELOW] = 0
            fstat[s, F_EPEAK] = d_max
            fstat[s, F_EREF] = ref
            istat[s, I_EP_HELD] = 0
            for f in range(n_feat):
                sstat[s, SS_MASK, f] = 1.0 if dist[0, f] >= 1.0 else 0.0
        else:
            istat[s, I_EP_COOL] -= 1
    else:
        # a feature joins the episode when any of its views reaches 1, the level's
        # holding distance included (LEVEL_OPEN)
        for f in range(n_feat):
            if dist[14, f] >= 1.0 or dist[1, f] >= 1.0:
                sstat[s, SS_MASK, f] = 1.0
    if istat[s, I_EPISODE] == 1:
        hold_d = 0.0
        for f in range(n_feat):
            if sstat[s, SS_MASK, f] > 0.5:
                hold_d = max(hold_d, dist[21, f])
        if istat[s, I_EP_HELD] > 0:  # not on the opening event
            if hold_d < EPISODE_CLOSE:
                istat[s, I_EP_BELOW] += 1
            else:
                istat[s, I_EP_BELOW] = 0
        istat[s, I_EP_HELD] += 1
        if istat[s, I_EP_BELOW] >= EPISODE_CLOSE_RUN:
            istat[s, I_EPISODE] = 0
            istat[s, I_EP_HELD] = 0
            istat[s, I_EP_COOL] = EPISODE_COOLDOWN
            for f in range(n_feat):
                sstat[s, SS_MASK, f] = -1.0 if sstat[s, SS_MASK, f] > 0.5 else 0.0
    for f in range(n_feat):
        contrib[e, f] = np.float32(dist[9, f] * dist[9, f])
        why[e, f] = np.float32(dist[10, f])
    _regime_learn(s, xv, scored, sstat, istat, dist, a_s, n_events)
    return u / (1.0 + u), hold_d / (1.0 + hold_d)


@njit(**NJIT_INLINE)
def _recurrence(sstat, s, f, i_rc, d, t, gap):  # pragma: no cover - compiled
    """The recurrence factor of feature ``f``'s opening distance ``d`` at time ``t`` (1 or
    less: none; negative: a scheduled excursion did not come, and minus the factor is the
    distance it gets), and the memory of its excursions' onsets learnt from it.

    An excursion (``d >= 1``) whose onset at ``t`` is the next term of an arithmetic
    progression of two of the stream's last REC_K onsets (at ``t - L`` and ``t - 2 L``,
    give or take the gap since the last event, at most REC_TOL_CAP of ``L``, and
    REC_TOL_REL of ``L``) is on a schedule: its factor is REC_GAMMA times the smaller of
    those two excursions' sizes, and it holds for the excursion's events while ``d``
    stays at 1 or more. When a third one lies at ``t - 3 L`` and the four sizes are
    alike (the smallest at least REC_ARM of the largest, and at least REC_ARM_MIN), the
    next onset is due at ``t + L``: if none has come REC_LATE of ``L`` (and a gap) after,
    the excursion was missed (distance REC_ARM_MIN), once; an onset on time at under
    REC_SMALL of the smallest of three alike ones (within REC_SAME) gets the same."""
    i_sz = i_rc + REC_K
    i_step = _rec_step_row(i_rc)
    i_run = i_step + 1
    if not d >= 1.0:
        if sstat[s, i_run, f] != 0.0:
            sstat[s, i_run, f] = 0.0
        if sstat[s, i_step, f] > 0.0:  # a schedule: is its next onset overdue?
            t_0 = _rec_last_onset(sstat, s, f, i_sz)
            due = np.float64(sstat[s, i_step, f])
            if t - t_0 > due * (1.0 + REC_LATE) + _rec_slack(gap, due):
                sstat[s, i_step, f] = 0.0
                return -REC_ARM_MIN
        return 0.0
    if sstat[s, i_run, f] > 0.0:  # an excursion under way
        sstat[s, i_sz, f] = max(sstat[s, i_sz, f], d)
        return sstat[s, i_run, f]
    kr = 0.0
    age = 0.0
    due = math.inf  # the next onset a schedule expects (of those seen four times)
    small = False
    if sstat[s, i_sz, f] > 0.0:
        t_0 = _rec_last_onset(sstat, s, f, i_sz)
        age = t - t_0
        if sstat[s, i_step, f] > 0.0:  # the one expected: kept unless this is it
            due_0 = t_0 + np.float64(sstat[s, i_step, f])
            step = due_0 - t_0
            if due_0 - t > _rec_slack(gap, step) + REC_TOL_REL * step:
                due = due_0
        for i in range(REC_K):
            a_i = age + sstat[s, i_rc + i, f]
            if sstat[s, i_sz + i, f] <= 0.0 or a_i <= 0.0:
                continue
            tol = _rec_slack(gap, a_i) + REC_TOL_REL * a_i
            for j in range(i + 1, REC_K):
                if sstat[s, i_sz + j, f] > 0.0:
                    a_j = age + sstat[s, i_rc + j, f]
                    if abs(a_j - 2.0 * a_i) <= tol:
                        k_ij = min(sstat[s, i_sz + i, f], sstat[s, i_sz + j, f])
                        kr = max(kr, k_ij)
                        for k in range(j + 1, REC_K):
                            a_k = age + sstat[s, i_rc + k, f]
                            s_k = sstat[s, i_sz + k, f]
                            if s_k > 0.0 and abs(a_k - 3.0 * a_i) <= tol:
                                lo = min(k_ij, s_k)
                                hi = max(max(sstat[s, i_sz + i, f], sstat[s, i_sz + j, f]), s_k)
                                if lo >= REC_ARM_MIN and lo >= REC_ARM * hi:
                                    if d < REC_SMALL * lo and lo >= REC_SAME * hi:
                                        small = True  # on time, at little over half its size
                                    elif d >= REC_ARM * hi:
                                        due = min(due, t + a_i)
    for k in range(REC_K - 1, 0, -1):  # remembered, newest first
        sstat[s, i_rc + k, f] = np.float32(sstat[s, i_rc + k - 1, f] + age)
        sstat[s, i_sz + k, f] = sstat[s, i_sz + k - 1, f]
    sstat[s, i_rc, f] = 0.0
    sstat[s, i_sz, f] = d
    hi_t = np.float32(t)
    sstat[s, i_sz + REC_K, f] = hi_t
    sstat[s, i_sz + REC_K + 1, f] = np.float32(t - np.float64(hi_t))
    sstat[s, i_step, f] = np.float32(due - t) if due < math.inf else 0.0
    kr = max(REC_GAMMA * kr, 1.0)
    if small:
        sstat[s, i_run, f] = 1.0
        return -REC_ARM_MIN
    sstat[s, i_run, f] = kr
    return kr


@njit(**NJIT_INLINE)
def _rec_step_row(i_rc):  # pragma: no cover - compiled
    """The recurrence memory's row of the step its armed schedule expects (0: none): after
    its REC_K onsets, REC_K sizes and the latest onset's time (two rows)."""
    return i_rc + 2 * REC_K + 2


@njit(**NJIT_INLINE)
def _rec_last_onset(sstat, s, f, i_sz):  # pragma: no cover - compiled
    """The time of feature ``f``'s latest excursion onset (kept as two float32 after its
    REC_K sizes from row ``i_sz``: the value and the remainder)."""
    return np.float64(sstat[s, i_sz + REC_K, f]) + np.float64(sstat[s, i_sz + REC_K + 1, f])


@njit(**NJIT_INLINE)
def _rec_slack(gap, step):  # pragma: no cover - compiled
    """How far off a schedule of ``step`` an onset may be for the sampling: the gap since
    the stream's last event, at most REC_TOL_CAP of the step (after an outage)."""
    return min(REC_TOL_GAP * gap, REC_TOL_CAP * step)


@njit(**NJIT_INLINE)
def tod_stretch(t):  # pragma: no cover - compiled
    """Which of the day's TOD_BINS stretches (of TOD_SECONDS, UTC) event time ``t`` is in."""
    st = math.floor(t / TOD_SECONDS)
    return int(st - TOD_BINS * math.floor(st / TOD_BINS))


@njit(**NJIT_INLINE)
def _named_view(v, widen):  # pragma: no cover - compiled
    """Index in VIEW_NAMES of the view to name, from a feature's views ``v`` (in that
    order, as the naming share counts them, not yet widened): of those at distance 1 or
    more the plainest explanation (a spike, a flat line, a level out of its range, a
    level shift, more noise, more swing, a new rhythm, a broken relation: a spike moves the energy
    and spread views too, and is a spike), below 1 the largest (ties: the first).
    Written out, not looped over an order tuple: it runs for every feature-event, and
    the loop cost the scorer ~12%."""
    if v[0] >= widen:
        return 0.0
    if v[4] >= widen:
        return 4.0
    if v[5] >= widen:
        return 5.0
    if v[3] >= widen:
        return 3.0
    if v[1] >= widen:
        return 1.0
    if v[2] >= widen:
        return 2.0
    if v[7] >= widen:
        return 9.0
    if v[6] >= widen:
        return 6.0
    best = 0.0
    vb = v[0]
    if v[1] > vb:
        best = 1.0
        vb = v[1]
    if v[2] > vb:
        best = 2.0
        vb = v[2]
    if v[3] > vb:
        best = 3.0
        vb = v[3]
    if v[4] > vb:
        best = 4.0
        vb = v[4]
    if v[5] > vb:
        best = 5.0
        vb = v[5]
    if v[6] > vb:
        best = 6.0
        vb = v[6]
    if v[7] > vb:
        best = 9.0
    return best


@njit(**NJIT_INLINE)
def _log_level_distance(
    sstat, s, f, i_mean, i_var, i_tail, value, both_ways, gamma
):  # pragma: no cover - compiled
    """How far a log level (ln short energy, ln short spread) is from its normal, in
    spreads: upward beyond the band and beyond ``gamma`` times the stream's running
    1-in-SPIKE_TAIL excess (its usual bursts); downward (``both_ways``) beyond the band."""
    d = value - sstat[s, i_mean, f]
    if d > 0.0:
        sd = max(math.sqrt(sstat[s, i_var, f]), ENERGY_SD_MIN)
        burst = gamma * (sstat[s, i_tail, f] - sstat[s, i_mean, f]) / ENERGY_K
        return d / max(sd, burst)
    if both_ways:
        return -d / max(math.sqrt(sstat[s, i_var, f]), ENERGY_SD_MIN)
    return 0.0


@njit(**NJIT_INLINE)
def _learn_log_level(
    sstat, s, f, i_mean, i_var, i_tail, value, n_le, wu, learn, tail
):  # pragma: no cover - compiled
    """Teach a log-level statistic (ln short energy, ln short spread) of feature ``f``:
    its normal mean and variance (1/n over the warm-up, then slowly; deviations clipped
    at CLIP spreads, so an incident's onset does not widen the band it is judged by;
    only while the feature is not in an episode), and its running 1-in-SPIKE_TAIL
    level (when ``tail``: outside episodes and in their first TAIL_EPISODE events)."""
    if math.isnan(value) or n_le < 0.0:
        return
    if learn or n_le < 1.0:
        a_l = 1.0 / (n_le + 1.0) if wu else RESID_RATE
        m = sstat[s, i_mean, f]
        v = sstat[s, i_var, f]
        dl = value - m
        if n_le >= CLIP_AFTER:
            lim = CLIP * max(math.sqrt(v), ENERGY_SD_MIN)
            dl = min(max(dl, -lim), lim)
        sstat[s, i_mean, f] = m + a_l * dl
        sstat[s, i_var, f] = (1.0 - a_l) * (v + a_l * dl * dl)
    if n_le < 1.0:
        sstat[s, i_tail, f] = value
    elif not tail:
        return
    elif value > sstat[s, i_tail, f]:
        sstat[s, i_tail, f] += ENERGY_STEP
    else:
        sstat[s, i_tail, f] -= ENERGY_STEP / SPIKE_TAIL


@njit(**NJIT_INLINE)
def _regime_learn(s, xv, scored, sstat, istat, dist, a_s, n_events):  # pragma: no cover - compiled
    """After scoring: teach the statistics (see the module doc for what learns when).

    Why one function of ~100 lines: one pass over the features updates every
    statistic of a feature from the same event, in the order the views read them."""
    n_feat = xv.shape[0]
    released = istat[s, I_EP_HELD] > MAX_HOLD
    quiet = istat[s, I_EPISODE] == 0 or released
    a_b = 1.0 / BASE_TAU
    for f in range(n_feat):
        x = xv[f]
        if not scored[f] or math.isnan(x):
            continue
        nf = sstat[s, SS_N, f]
        wu = nf < BASELINE_EVENTS
        aw = 1.0 / (nf + 1.0) if wu else 0.0  # read only in the warm-up
        learn = sstat[s, SS_MASK, f] < 0.5 or released or wu
        tail = learn or istat[s, I_EP_HELD] <= TAIL_EPISODE
        mu = sstat[s, SS_MU, f]
        var = sstat[s, SS_VAR, f]
        sd = math.sqrt(var)
        fl = FLOOR_REL * sd + FLOOR_LEVEL * (abs(mu) + 1.0)
        clip = nf >= CLIP_AFTER
        if wu:  # the level and spread of the warm-up: the floor's reference
            d = x - mu
            # not clipped while the stream has not moved yet: a stream flat for its first
            # events (a counter at 0 at start-up) would otherwise keep a spread of 0 for
            # ever, and every later value would be an incident
            if clip and sd > 1e-9 * (abs(mu) + 1.0):
                lim = CLIP * max(sd, 1e-12)
                d = min(max(d, -lim), lim)
            sstat[s, SS_MU, f] = mu + aw * d
            sstat[s, SS_VAR, f] = (1.0 - aw) * (var + aw * d * d)
        prev = sstat[s, SS_XPREV, f]
        repeat = _same(x, prev, sd)
        r = dist[2, f]
        # the rest value, learnt from every event (a rest is not an incident's doing)
        hit = 1.0 if nf > 0.0 and _same(x, sstat[s, SS_R0, f], sd) else 0.0
        sstat[s, SS_R0F, f] += (aw if wu else REST_RATE) * (hit - sstat[s, SS_R0F, f])
        if nf == 0.0 or (hit == 0.0 and repeat and sstat[s, SS_R0F, f] < REST_SWITCH):
            sstat[s, SS_R0, f] = x
        if nf == 0.0:  # the feature's first value
            sstat[s, SS_QSP, f] = 1.0
            sstat[s, SS_M, f] = x
            sstat[s, SS_B, f] = x
            sstat[s, SS_ES, f] = 0.0
            sstat[s, SS_HI, f] = x
            sstat[s, SS_LO, f] = x
            sstat[s, SS_HIP, f] = x
            sstat[s, SS_LOP, f] = x
        else:
            if math.isnan(r):
                r = 0.0
            s_eff = max(sstat[s, SS_SR, f], fl)
            rc = min(abs(r), CLIP * 1.25 * s_eff) if clip else abs(r)
            r_e = 0.0 if dist[20, f] > 0.0 else r  # (a jump onto a mode: no error)
            es = sstat[s, SS_ES, f]
            sstat[s, SS_ES, f] = es + a_s * (r_e * r_e - es)
            le = dist[4, f]
            n_le = nf - CLIP_AFTER  # the short energy is warm from the 16th value on
            _learn_log_level(sstat, s, f, SS_LE, SS_LV, SS_QLE, le, n_le, wu, learn, tail)
            dm_ = x - sstat[s, SS_M, f]
            if clip and dist[18, f] < BACK_RUN:  # (the scoring pass's return run)
                lim_m = LEVEL_CLIP * 1.25 * s_eff
                dm_ = min(max(dm_, -lim_m), lim_m)
            sstat[s, SS_M, f] += a_s * dm_
            if dist[20, f] > 0.0:
                sstat[s, SS_M, f] = x
            if sstat[s, SS_MASK, f] > 0.5:  # (a feature that has just joined: 0)
                sstat[s, _ss_bk(n_feat), f] = dist[18, f]
            xs_n = dist[3, f]
            if math.isnan(xs_n):
                dx = x - sstat[s, SS_M, f]
                xs_n = sstat[s, SS_XS, f] + a_s * (dx * dx - sstat[s, SS_XS, f])
            sstat[s, SS_XS, f] = xs_n
            if not math.isnan(dist[11, f]):
                sstat[s, SS_ESC, f] = dist[11, f]
                sstat[s, SS_XSC, f] = dist[12, f]
            _learn_log_level(sstat, s, f, SS_LX, SS_LXV, SS_QLX, dist[5, f], n_le, wu, learn, tail)
            i_ac = _ss_ac(n_feat)
            n_ac = sstat[s, i_ac + AC_N, f]  # this event's included (the scoring pass)
            # its band does not learn from a rhythm on its way to distance 1: a correlation
            # is slow (span AC_SPAN), and a band learning from the rise widened faster than
            # the view climbed
            learn_ac = learn and dist[17, f] < AC_LEARN
            i_m, i_v, i_q = i_ac + AC_MEAN, i_ac + AC_VAR, i_ac + AC_TAIL
            wu_ac = n_ac < BASELINE_EVENTS
            n_lac = n_ac - AC_WARM
            _learn_log_level(sstat, s, f, i_m, i_v, i_q, dist[16, f], n_lac, wu_ac, learn_ac, tail)
            e_n = dist[8, f]
            if not math.isnan(e_n):
                if learn:
                    a_c = aw if wu else a_b
                    z_f = dist[6, f]
                    mo = dist[7, f]
                    sstat[s, SS_CZM, f] += a_c * (z_f * mo - sstat[s, SS_CZM, f])
                    sstat[s, SS_CMM, f] += a_c * (mo * mo - sstat[s, SS_CMM, f])
                    _learn_band(sstat, s, f, SS_REM, SS_REV, e_n, a_c, clip)
                sstat[s, SS_RE, f] = e_n
                q_n = dist[15, f]
                # the regression learns nothing while an episode is open: a feature's
                # residual reads the others, so the broken ones would teach the rest
                if learn and (quiet or wu):
                    rn = sstat[s, SS_RN, f]
                    a_q = 1.0 / (rn + 1.0) if rn < BASELINE_EVENTS else a_b
                    _learn_band(sstat, s, f, SS_QM, SS_QV, q_n, a_q, rn >= CLIP_AFTER)
                sstat[s, SS_QE, f] = q_n
            if learn:
                a_r = aw if wu else RESID_RATE
                sstat[s, SS_SR, f] += a_r * (rc - sstat[s, SS_SR, f])
                sstat[s, SS_B, f] += (max(aw, a_b) if wu else a_b) * (x - sstat[s, SS_B, f])
                dd = sstat[s, SS_M, f] - sstat[s, SS_B, f]
                if clip:
                    ddl = CLIP * math.sqrt(sstat[s, SS_VD, f]) + 0.25 * fl
                    dd = min(max(dd, -ddl), ddl)
                sstat[s, SS_VD, f] += (aw if wu else a_b) * (dd * dd - sstat[s, SS_VD, f])
                _learn_range(sstat, s, f, wu, fl, nf)
                rep = 1.0 if repeat else 0.0
                sstat[s, SS_PREP, f] += (aw if wu else REPEAT_RATE) * (rep - sstat[s, SS_PREP, f])
                sstat[s, SS_MXRUN, f] *= _RUN_DECAY
            elif dist[1, f] < 1.0 and istat[s, I_EP_HELD] > THAW_AFTER:
                # held only weakly, late in the episode: the baseline follows again
                sstat[s, SS_B, f] += THAW_RATE * (x - sstat[s, SS_B, f])
            if repeat:
                sstat[s, SS_RUN, f] += 1.0
            else:
                if learn:
                    sstat[s, SS_MXRUN, f] = max(sstat[s, SS_MXRUN, f], sstat[s, SS_RUN, f])
                sstat[s, SS_RUN, f] = 0.0
            # the energy's accumulated evidence and its 1-in-SPIKE_TAIL level (from 1 up:
            # a normal stream's sum sits at 0 most of the time, and CU_H is the floor)
            i_cu = _ss_cu(n_feat)
            c_n = dist[19, f]
            sstat[s, i_cu + CU_SUM, f] = c_n
            if clip and tail:
                q = max(sstat[s, i_cu + CU_TAIL, f], 1.0)
                sstat[s, i_cu + CU_TAIL, f] = q * (_SPIKE_UP if c_n > q else _SPIKE_DOWN)
            _learn_modes(sstat, s, f, x, r, s_eff, n_feat)
            if clip:
                q = sstat[s, SS_QSP, f]
                if abs(r) > q * 1.25 * s_eff:
                    sstat[s, SS_QSP, f] = q * _SPIKE_UP
                elif not repeat:  # the tail of the stream's moves (see SPIKE_TAIL)
                    sstat[s, SS_QSP, f] = q * _SPIKE_DOWN
        sstat[s, SS_XPREV, f] = x
        sstat[s, SS_N, f] = nf + 1.0
    _learn_relation(s, scored, sstat, dist, n_events, quiet)


@njit(**NJIT_INLINE)
def _at_mode(sstat, s, f, x, s_eff, n_feat):  # pragma: no cover - compiled
    """``x`` lies within LAND_TOL spike-scales of one of the stream's modes."""
    i_md = _ss_md(n_feat)
    for j in range(MODE_K):
        if sstat[s, i_md + MD_N + j, f] >= 1.0:
            if abs(x - sstat[s, i_md + MD_C + j, f]) <= LAND_TOL * 1.25 * s_eff:
                return True
    return False


@njit(**NJIT_INLINE)
def _learn_modes(sstat, s, f, x, r, s_eff, n_feat):  # pragma: no cover - compiled
    """The stay under way (values within LAND_TOL spike-scales of its mean) and the modes:
    a stay that a jump began counts, once it has lasted MODE_DWELL events, at the mode
    within LAND_TOL of its mean, or replaces the least counted mode. (Not a stay a jump
    ends: the level a stream sat at before its first spike is not a mode it jumps to, and
    counted so, every spike's return was one: NAB's 71.4 -> 70.0.)"""
    i_md = _ss_md(n_feat)
    tol = LAND_TOL * 1.25 * s_eff
    jump = abs(r) >= SPIKE_K * 1.25 * s_eff
    n_l = sstat[s, i_md + MD_L, f]
    a = sstat[s, i_md + MD_A, f]
    if jump or n_l == 0.0 or abs(x - a) > tol:
        sstat[s, i_md + MD_A, f] = x
        sstat[s, i_md + MD_L, f] = 1.0
        sstat[s, i_md + MD_J, f] = 1.0 if jump else 0.0
        return
    n_l += 1.0
    a += (x - a) / n_l
    sstat[s, i_md + MD_A, f] = a
    sstat[s, i_md + MD_L, f] = min(n_l, 1e6)
    if n_l != MODE_DWELL or sstat[s, i_md + MD_J, f] < 0.5:
        return
    k = -1
    for j in range(MODE_K):
        if sstat[s, i_md + MD_N + j, f] >= 1.0:
            if abs(a - sstat[s, i_md + MD_C + j, f]) <= tol:
                k = j
                break
    if k < 0:
        k = 0
        for j in range(1, MODE_K):
            if sstat[s, i_md + MD_N + j, f] < sstat[s, i_md + MD_N + k, f]:
                k = j
        sstat[s, i_md + MD_C + k, f] = a
        sstat[s, i_md + MD_N + k, f] = 1.0
    else:
        c = sstat[s, i_md + MD_N + k, f]
        sstat[s, i_md + MD_C + k, f] += (a - sstat[s, i_md + MD_C + k, f]) / (c + 1.0)
        sstat[s, i_md + MD_N + k, f] = min(c + 1.0, 1e6)


@njit(**NJIT_INLINE)
def _same(x, y, sd):  # pragma: no cover - compiled
    """``x`` repeats ``y`` (a flat line's run, a rest value): equal to within float32's
    rounding of the value and of the feature's spread ``sd``."""
    return abs(x - y) <= 1e-7 * (abs(x) + sd + 1e-12)


@njit(**NJIT_INLINE)
def _back_run(sstat, s, f, x, fl):  # pragma: no cover - compiled
    """Values in a row, ``x`` included, that feature ``f`` of the open episode has been back
    within its level band of its frozen baseline: ``x`` itself at the level view's
    distance below 1 and nearer the baseline than the short level is (0 when it is not:
    a value that leaves the baseline within a wide band is not a return)."""
    band = LEVEL_K * math.sqrt(sstat[s, SS_VD, f] + (0.25 * fl) ** 2)
    dx = abs(x - sstat[s, SS_B, f])
    if dx > band or dx >= abs(sstat[s, SS_M, f] - sstat[s, SS_B, f]):
        return 0.0
    return sstat[s, _ss_bk(sstat.shape[2]), f] + 1.0


@njit(**NJIT_INLINE)
def _learn_range(sstat, s, f, wu, fl, nf):  # pragma: no cover - compiled
    """Teach the range view of feature ``f`` from its short level (normal events only).

    The range is the warm-up's extremes of the short level; after it, a level beyond
    moves the range toward itself by RNG_RATE per event (a slow trend is absorbed, an
    incident's onset is not: it outruns the range), and both ends are forgotten toward
    the baseline over RNG_FORGET crossings (the stream's events per crossing so far
    times RNG_FORGET, at least RNG_FORGET_MIN events). When an excursion beyond the
    range is over, its depth in widths feeds a decaying maximum (SS_QD) that widens the
    margin: a noisy stream, whose range is soft, is judged with a wide one, a smooth
    daily cycle, which comes back to the same extremes each day, with RNG_K. The
    crossings of the baseline (with a hysteresis) count the independent swings the range
    has seen: its maturity."""
    bb = sstat[s, SS_B, f]
    mm = sstat[s, SS_M, f]
    xc = sstat[s, SS_XC, f]
    # forgotten over RNG_FORGET crossings (at least RNG_FORGET_MIN events): a week's
    # extremes are remembered by a stream that swings once a day
    dec = 1.0 - min(abs(xc) / (RNG_FORGET * max(nf, 1.0)), 1.0 / RNG_FORGET_MIN)
    hi = bb + (sstat[s, SS_HI, f] - bb) * dec
    lo = bb + (sstat[s, SS_LO, f] - bb) * dec
    w_o = hi - lo + fl
    # Each state cell read once and written once; after the warm-up the depths are
    # divided whether or not they count, so the data-dependent end of an excursion
    # selects a value instead of branching around a division.
    hip = sstat[s, SS_HIP, f]
    lop = sstat[s, SS_LOP, f]
    qd = sstat[s, SS_QD, f]
    above = mm > hi
    below = mm < lo
    if not wu:  # the depths of excursions count after the warm-up
        q_hi = (hip - hi) / w_o
        q_lo = (lo - lop) / w_o
        if not above and hip > hi:
            qd = np.float32(max(qd, q_hi))
        if not below and lop < lo:
            qd = np.float32(max(qd, q_lo))
    sstat[s, SS_HIP, f] = max(hip, mm) if above else hi
    sstat[s, SS_LOP, f] = min(lop, mm) if below else lo
    sstat[s, SS_QD, f] = qd * dec
    a_g = 1.0 if wu else RNG_RATE
    sstat[s, SS_HI, f] = hi + a_g * max(mm - hi, 0.0)
    sstat[s, SS_LO, f] = lo + a_g * min(mm - lo, 0.0)
    hy = RNG_HYST * math.sqrt(sstat[s, SS_VD, f])
    if mm - bb > hy and xc <= 0.0:
        sstat[s, SS_XC, f] = -xc + 1.0
    elif mm - bb < -hy and xc >= 0.0:
        sstat[s, SS_XC, f] = -(xc + 1.0)


@njit(**NJIT_INLINE)
def _learn_band(sstat, s, f, i_mean, i_var, value, a, clip):  # pragma: no cover - compiled
    """Teach a relation residual's normal mean and variance (rows ``i_mean``,
    ``i_var``) at rate ``a``; with ``clip`` a deviation teaches at most CLIP spreads."""
    d = value - sstat[s, i_mean, f]
    if clip:
        lim = CLIP * max(math.sqrt(sstat[s, i_var, f]), REL_SD_MIN)
        d = min(max(d, -lim), lim)
    sstat[s, i_mean, f] += a * d
    sstat[s, i_var, f] = (1.0 - a) * (sstat[s, i_var, f] + a * d * d)


@njit(**NJIT_INLINE)
def _learn_relation(s, scored, sstat, dist, n_events, quiet):  # pragma: no cover - compiled
    """Teach the relation's regression of each scored feature's z on the others'.

    The covariance of the warm-up z-scores (rows ``N_SSTAT + g``) learns from the
    pairs of features that both learn from this event (not in an episode; 1/n over a
    feature's first BASELINE_EVENTS relation events, then 1/BASE_TAU). Every
    REL_REFRESH events (every REL_REFRESH_WARM while a feature is in its warm-up) the covariance
    plus REL_RIDGE is inverted (Gauss-Jordan, in place in the weight rows) and each
    feature's weights read off the precision matrix ``P``: ``w_gf = -P_gf / P_ff``, the
    coefficients of the best linear prediction of z_f from all the other z. A feature
    with no relation to the others gets weights near 0 (its residual is its own z)."""
    n_feat = dist.shape[1]
    i_c = N_SSTAT
    i_w = N_SSTAT + n_feat
    zn = 0
    for f in range(n_feat):
        # dist[13]: 1 where feature f learns the relation from this event
        ok = scored[f] and not math.isnan(dist[6, f])
        if ok:
            zn += 1
        dist[13, f] = 0.0
        if ok and (quiet or sstat[s, SS_N, f] <= BASELINE_EVENTS):
            dist[13, f] = 1.0
    if zn < 2:
        return
    warm_up = False
    for f in range(n_feat):
        if dist[13, f] == 0.0:
            continue
        rf = sstat[s, SS_RN, f]
        for g in range(f, n_feat):
            if dist[13, g] == 0.0:
                continue
            rn = min(rf, sstat[s, SS_RN, g])
            a = 1.0 / (rn + 1.0) if rn < BASELINE_EVENTS else 1.0 / BASE_TAU
            c = sstat[s, i_c + g, f] + a * (dist[6, f] * dist[6, g] - sstat[s, i_c + g, f])
            sstat[s, i_c + g, f] = c
            sstat[s, i_c + f, g] = c
    for f in range(n_feat):
        if dist[13, f] == 1.0:
            sstat[s, SS_RN, f] += 1.0
            if sstat[s, SS_RN, f] <= BASELINE_EVENTS:
                warm_up = True
    if n_events % (REL_REFRESH_WARM if warm_up else REL_REFRESH) != 0:
        return
    # P = (C + ridge I)^-1 in the weight rows, then w_gf = -P_gf / P_ff column by column
    for f in range(n_feat):
        for g in range(n_feat):
            sstat[s, i_w + g, f] = sstat[s, i_c + g, f] + (REL_RIDGE if g == f else 0.0)
    for k in range(n_feat):
        p = sstat[s, i_w + k, k]
        if not p > 1e-6:  # not positive definite (missing values learnt apart): no relation
            for f in range(n_feat):
                for g in range(n_feat):
                    sstat[s, i_w + g, f] = 0.0
            return
        sstat[s, i_w + k, k] = 1.0
        for j in range(n_feat):
            sstat[s, i_w + k, j] /= p
        for i in range(n_feat):
            if i != k:
                q = sstat[s, i_w + i, k]
                sstat[s, i_w + i, k] = 0.0
                for j in range(n_feat):
                    sstat[s, i_w + i, j] -= q * sstat[s, i_w + k, j]
    for f in range(n_feat):
        d = sstat[s, i_w + f, f]
        for g in range(n_feat):
            sstat[s, i_w + g, f] = -sstat[s, i_w + g, f] / d if g != f else 0.0
