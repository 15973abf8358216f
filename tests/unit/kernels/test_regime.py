"""The regime scorer (streamlstm.kernels.regime) through the detector: each kind of
incident opens an alert that stays open while the stream is away and closes when it
returns; quiet streams stay quiet; context features are never scored; the alert names
the feature that moved; scores do not depend on a stream's units."""

from __future__ import annotations

import numpy as np
import pytest

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.errors import ModelError
from streamlstm.examples.synth import FleetSpec, generate_fleet
from streamlstm.kernels import layout as KL
from streamlstm.kernels import regime as KR
from streamlstm.model import load
from streamlstm.model.baselines import last_value_model
from tests.conftest import SEED

FEATS = ["a", "b", "c"]
N = 1500
START, END = 900, 1100  # the incident


def run(x: np.ndarray, model=None, cfg: DetectorConfig | None = None):
    model = model or last_value_model(FEATS, np.zeros(len(FEATS)), np.ones(len(FEATS)))
    det = Detector(model, cfg or DetectorConfig())
    return det.process_many(["s"] * x.shape[0], np.arange(x.shape[0]) * 60.0, x)


def noise(seed: int = SEED) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(N, len(FEATS)))


def opened(res) -> list[int]:
    return [t.index for t in res.transitions if t.kind == "opened"]


def closed(res) -> list[int]:
    return [t.index for t in res.transitions if t.kind == "closed"]


def held(res) -> float:
    return float(res.alert[START:END].mean())


def test_a_quiet_stream_never_alerts():
    res = run(noise())
    assert not res.alert.any() and not res.transitions
    # nothing is scored before the scorer has a first baseline; until the full one
    # its views are widened, so an early quiet stream scores lower than later
    assert (res.score[1 : KR.EARLY_EVENTS] == 0).all() and np.isnan(res.score[0])
    early = res.score[KR.EARLY_EVENTS : KR.BASELINE_EVENTS]
    assert (early > 0).all() and early.max() < 0.5


def test_an_early_spike_is_caught_before_the_full_baseline():
    x = noise()
    x[100, 0] += 40 * x[:100, 0].std()
    res = run(x)
    opened = [t for t in res.transitions if t.kind == "opened"]
    assert [t.index for t in opened] == [100]
    assert opened[0].contributions[0][0] == "a"


def test_a_noise_free_periodic_stream_does_not_page():
    t = np.arange(N)
    x = np.stack([np.sin(2 * np.pi * t / 60), np.cos(2 * np.pi * t / 60), np.ones(N)], axis=1)
    assert not run(x).transitions


@pytest.mark.parametrize(
    "kind",
    ["level", "variance", "stuck", "drift"],
)
def test_each_kind_opens_holds_and_closes(kind):
    x = noise()
    w = slice(START, END)
    if kind == "level":
        x[w, 1] += 3.0
    elif kind == "variance":
        x[w, 1] *= 4.0
    elif kind == "stuck":
        x[w, 1] = x[START - 1, 1]
    elif kind == "drift":
        x[w, 1] += np.linspace(0.0, 6.0, END - START)
        x[END:, 1] = x[END:, 1]  # back at once
    res = run(x)
    ops = opened(res)
    assert ops and START <= ops[0] < START + 120, (kind, ops)
    assert held(res) >= 0.6 if kind == "drift" else held(res) >= 0.9, (kind, held(res))
    # back to normal: the alert closes soon after the incident ends, and stays closed
    assert closed(res) and END <= closed(res)[-1] < END + 60, (kind, closed(res))
    assert not res.alert[END + 60 :].any()
    first = next(t for t in res.transitions if t.kind == "opened")
    assert first.contributions[0][0] == "b", first.contributions


def test_a_large_level_shift_closes_soon_after_it_ends():
    # The short level's steps are clipped at LEVEL_CLIP residual scales (a spike barely
    # moves it), which rate-limited its way back: a shift of 40 noise spreads held its
    # alert 85 events past its end (3 spreads: 25). Once back within its band of the
    # frozen baseline for BACK_RUN values in a row, the level steps back unclipped: 63.
    x = noise()
    x[START:END, 1] += 40.0
    res = run(x)
    assert opened(res) == [START] and held(res) == 1.0
    assert closed(res) and END + KR.EPISODE_CLOSE_RUN <= closed(res)[0] < END + 70, closed(res)


def test_errors_grown_a_little_for_good_are_caught_by_their_accumulated_evidence():
    # A random walk (the last value is its right forecast) whose steps grow 2.2x, 5x
    # the energy: the short energy needs ~7x its typical level, and its distance rose
    # and fell with the noise (9 of 20 such walks seen, after 10-118 events). The
    # energy's accumulated evidence (a CUSUM) sees every one within a few spans, and
    # a walk with its normal steps not at all.
    late = []
    for seed in range(8):
        w = np.cumsum(noise(seed), axis=0)
        steps = np.random.default_rng(1000 + seed).normal(size=N - START) * 2.0
        w[START:, 1] += np.cumsum(steps)
        o = opened(run(w))
        assert o and o[0] >= START, o
        late.append(o[0] - START)
    assert max(late) < 40, late
    assert not opened(run(np.cumsum(noise(), axis=0)))


def test_only_a_value_nearer_the_baseline_than_the_short_level_counts_as_a_return():
    # NAB's machine_temperature rose from a dip (short level 0.5 sd of its band below
    # the frozen baseline) back to its usual ~90 (3 sd above it): within the wide band,
    # so it counted as a return, the short level followed it unclipped and its level
    # held the alert 96 events (21 with the clip). Moving away is not a return.
    sstat = np.zeros((1, KL.n_sstat_rows(1), 1), np.float32)
    sstat[0, KL.SS_B, 0], sstat[0, KL.SS_M, 0], sstat[0, KL.SS_VD, 0] = -6.3, -7.5, 6.6
    sstat[0, KL.ss_bk(1), 0] = 2.0
    assert KR._back_run(sstat, 0, 0, -6.5, 0.0) == 3.0  # toward the baseline, in its band
    assert KR._back_run(sstat, 0, 0, 1.3, 0.0) == 0.0  # in the band, moving away
    assert KR._back_run(sstat, 0, 0, -20.0, 0.0) == 0.0  # beyond the band


def test_a_spike_opens_a_short_alert_naming_its_feature():
    x = noise()
    x[START, 2] += 15.0
    res = run(x)
    assert opened(res) == [START]
    first = res.transitions[0]
    assert first.contributions[0][0] == "c" and first.contributions[0][1] > 0.6
    # the short energy remembers the spike for a few of its spans
    assert closed(res) and closed(res)[0] < START + 40


def test_the_cooldown_holds_back_the_last_incidents_features_not_the_others():
    # One incident opens once: its channel spiking again within EPISODE_COOLDOWN
    # events of its close opens nothing. Another channel breaking then is another
    # incident, and opens (before, the cooldown held back every feature).
    x = noise()
    x[START, 2] += 15.0
    end = closed(run(x))[0]
    again, other = x.copy(), x.copy()
    again[end + 5, 2] += 15.0
    other[end + 5, 1] += 15.0
    assert opened(run(again)) == [START]
    res = run(other)
    assert opened(res) == [START, end + 5]
    second = [t for t in res.transitions if t.kind == "opened"][1]
    assert second.contributions[0][0] == "b"


@pytest.mark.parametrize("level", [0.0, 5.0])
def test_one_outlier_does_not_hold_its_alert_after_the_stream_is_back(level):
    # The hold counts a residual at most HOLD_CLIP scales: a huge outlier's square
    # held the alert ~40 events after a noisy stream was back (here 60 sd: closed 40
    # events on), and a channel constant at 5.0, whose residual floor was below
    # float32's resolution there, held it for good.
    x = noise()
    x[START, 2] += 60.0
    res = run(x)
    assert opened(res) == [START] and closed(res) and closed(res)[0] < START + 30
    x = noise() * 0.01 + level
    x[:, 2] = level
    x[START, 2] = level + 45.0
    res = run(x)
    assert opened(res) == [START] and closed(res) and closed(res)[0] < START + 30
    assert not res.alert[START + 30 :].any()


def test_a_long_incident_does_not_blind_the_stream_to_the_next_one():
    # The energy tail learnt from every event of a 300-event variance change and took
    # ~8,000 events to come back: a second one 1,500 events later was caught in 4 of
    # these 10 seeds (alert open 28% of it). Now the tail learns from an episode's
    # first TAIL_EPISODE events only.
    first, second, n = 2000, 3800, 6000
    caught, share = 0, []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        x = np.zeros(n)
        e = rng.normal(size=n)
        for i in range(1, n):
            x[i] = 0.9 * x[i - 1] + 0.3 * e[i]
        x[first : first + 300] += 1.2 * rng.normal(size=300)
        x[second : second + 60] += 1.2 * rng.normal(size=60)
        res = run_one(x[:, None])
        assert any(first <= i < first + 300 for i in opened(res))
        caught += any(second <= i < second + 60 for i in opened(res))
        share.append(res.alert[second : second + 60].mean())
    assert caught == 10 and np.mean(share) > 0.8, (caught, share)


def test_context_features_are_forecast_but_never_scored(tmp_path):
    x = noise()
    x[START:END, 0] += 50.0  # a command channel switches: not an incident
    base = last_value_model(FEATS, np.zeros(3), np.ones(3))
    model = base.with_context(["a"])
    res = run(x, model)
    assert not res.transitions
    assert run(x, base).transitions  # scored, the same switch would alert
    again = load(model.save(tmp_path / "m.npz"))
    assert again.context == ("a",) and again.scored_mask().tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(ModelError, match="not among the features"):
        base.with_context(["zz"])
    with pytest.raises(ModelError, match="at least one must be scored"):
        base.with_context(FEATS)


def test_units_do_not_change_scores():
    x = noise()
    x[START:END, 1] += 3.0
    y = x * [1000.0, 0.001, 1.0] + [5e4, -3.0, 0.0]
    # each with the normalisation a model trained on it would have
    a = run(x, last_value_model(FEATS, x.mean(0), x.std(0)))
    b = run(y, last_value_model(FEATS, y.mean(0), y.std(0)))
    np.testing.assert_allclose(a.score, b.score, atol=1e-3)
    np.testing.assert_array_equal(a.alert, b.alert)


def test_the_forecast_scorer_is_still_there():
    x = noise()
    x[START, 2] += 15.0
    res = run(x, cfg=DetectorConfig(scorer="forecast"))
    assert START in opened(res)
    np.testing.assert_array_equal(res.hold, res.score)  # it closes on its score
    first = next(t for t in res.transitions if t.kind == "opened")
    assert first.views and set(first.views.values()) == {"forecast"}


def test_scorer_state_is_reset_with_the_stream():
    x = noise()[:400]
    model = last_value_model(FEATS, np.zeros(3), np.ones(3))
    det = Detector(model, DetectorConfig(reset_gap_s=600.0))
    det.process_many(["s"] * 400, np.arange(400) * 60.0, x)
    assert det.stream_state("s")["sstat"][KL.SS_N].tolist() == [400.0] * 3
    det.process_many(["s"], [400 * 60.0 + 3600.0], x[:1])
    assert det.stream_state("s")["sstat"][KL.SS_N].tolist() == [1.0] * 3


def test_config_rejects_an_unknown_scorer():
    with pytest.raises(ValueError, match="scorer is 'x', expected one of forecast, regime"):
        DetectorConfig(scorer="x")


def idle_stream(seed: int = SEED) -> np.ndarray:
    """An event-driven channel: idle at exactly 0 for runs of 1 to ~150 events (about
    half of the time), busy between (requests served); b and c are plain noise."""
    rng = np.random.default_rng(seed)
    a = np.zeros(N)
    i = int(rng.integers(1, 40))
    while i < N:  # busy for 5-60 events, then idle for ~40 (geometric)
        k = int(rng.integers(5, 60))
        a[i : i + k] = rng.normal(1.0, 0.5, size=len(a[i : i + k]))
        i += k + int(rng.geometric(1 / 40))
    x = noise(seed)
    x[:, 0] = a
    return x


@pytest.mark.parametrize("seed", [SEED, 1, 2])
def test_an_idle_stream_resting_at_its_rest_value_does_not_page(seed):
    # Before the rest value: every idle stretch held an alert open (the short level at
    # 0 against a busy baseline, a flat line longer than the last one): 95% of the
    # events in alert for seeds 1 and 2, twelve openings for SEED.
    x = idle_stream(seed)
    assert (x[:, 0] == 0).mean() > 0.4
    res = run(x)
    assert res.alert.mean() < 0.01
    assert len(opened(res)) <= 2
    # ... while a spike out of its activity is caught, named, and the alert ends
    x[START, 0] = 20.0
    res = run(x)
    assert START in opened(res)
    t = next(t for t in res.transitions if t.index == START)
    assert t.contributions[0][0] == "a"
    assert not res.alert[START + 40 : START + 60].any()


def test_a_counter_at_rest_most_of_the_time_is_not_held_in_alert_while_it_rests():
    # An idle counter (at 0 ~83% of its events, bursts of 1-5 readings) that gets
    # busier: its baseline, raised by the bursts and frozen by an episode, sat above
    # the rest value, so its level held the alert while the counter rested (78 events
    # here; NAB's rogue_agent_key_updown, five days). Resting where it rests most of
    # the time holds nothing by the level (its flat line and range still hold).
    rng = np.random.default_rng(0)

    def counter(n: int, idle: float) -> np.ndarray:
        a = np.zeros(n)
        i = int(rng.integers(1, 40))
        while i < n:
            k = int(rng.integers(1, 6))
            a[i : i + k] = np.round(rng.gamma(1.5, 2.0, size=len(a[i : i + k])), 1) + 0.1
            i += k + int(rng.geometric(1 / idle))
        return a

    a = np.r_[counter(3000, 60), counter(3000, 15)]
    model = last_value_model(["v"], np.array([a[:900].mean()]), np.array([a[:900].std()]))
    res = Detector(model).process_many(["s"] * len(a), np.arange(len(a)) * 300.0, a[:, None])
    on = res.alert.astype(int)
    starts = np.flatnonzero(np.diff(np.r_[0, on]) == 1)
    ends = np.flatnonzero(np.diff(np.r_[on, 0]) == -1)
    assert (ends - starts + 1).max() <= 10


def test_a_stream_flat_for_its_first_events_learns_its_spread_later():
    # A channel constant at start-up (a counter at 0) kept a spread of 0 for ever once
    # the warm-up's deviations were clipped: its first movement opened an alert that
    # never closed. Coming alive may open one (a channel that was stuck); the stream is
    # settled once it has shown its normal for a warm-up's length.
    x = noise()
    x[:100, 2] = 0.0
    res = run(x)
    assert not res.alert[400:].any()


def test_a_continuous_stream_stuck_at_its_most_common_value_still_pages():
    # a stuck continuous signal has no rest value: its flat line opens an alert
    x = noise()
    x[START:END, 1] = x[START - 1, 1]
    res = run(x)
    assert opened(res) and opened(res)[0] - START < 5
    assert held(res) > 0.9


def coupled(seed: int = SEED, loads=(1.0, 0.8, 0.6)) -> np.ndarray:
    """Three channels driven by one daily swing (amplitude 4) and a slow load, each with
    its own loading and noise (0.25): coupled, not identical."""
    rng = np.random.default_rng(seed)
    t = np.arange(N)
    load = np.cumsum(rng.normal(size=N)) * 0.05
    driver = 4 * np.sin(2 * np.pi * t / 300) + load
    return np.stack([g * driver + 0.25 * rng.normal(size=N) for g in loads], axis=1)


def test_coupled_channels_swinging_together_do_not_page():
    res = run(coupled())
    assert not res.alert[KR.BASELINE_EVENTS :].any()


def test_a_channel_drifting_away_from_its_coupled_channels_is_caught_and_named():
    # b drifts by 3 over 60 events and stays there: inside its own daily swing
    # (amplitude 3.2), twelve times its noise, and away from what a and c say it should be
    x = coupled()
    x[START:END, 1] += np.minimum(np.arange(END - START) / 60, 1) * 3.0
    res = run(x)
    assert [i for i in opened(res) if START <= i < END][:1] == opened(res)[:1]
    t = res.transitions[0]
    assert START < t.index < START + 60 and t.contributions[0][0] == "b"
    assert res.alert[START + 60 : END].mean() > 0.8


def fleet_stream(seed: int, key: str):
    """One stream of a synthetic fleet (streamlstm.examples.synth, rate 3: incidents
    of every kind), standardised, with its incidents as event indices."""
    feats = ("temp", "pressure", "flow", "vibration")
    spec = FleetSpec(n_streams=8, n_steps=3000, anomaly_rate=3.0, seed=seed, features=feats)
    fl = generate_fleet(spec)
    v = fl.values[fl.keys.index(key)]
    v = (v - v.mean(0)) / v.std(0)
    at = [
        (a.kind, a.features, *(int(np.searchsorted(fl.times, t)) for t in (a.start, a.end)))
        for a in fl.anomalies
        if a.key == key
    ]
    model = last_value_model(list(feats), np.zeros(4), np.ones(4))
    return Detector(model, DetectorConfig()).process_many(["s"] * len(v), fl.times, v), at


def test_one_channel_drifting_inside_a_shared_daily_cycle_is_caught_by_its_regression():
    # A synthetic fleet stream (streamlstm.examples.synth: four channels on one daily
    # cycle, a slow and a fast shared part, loadings of both signs): temp ramps by ~4
    # of its sds over 51 events, inside its own swing. The mean of the others moves with
    # the cycle too loosely to see it (missed before the regression); temp's regression
    # on the other three channels does, within the ramp, and the alert names temp.
    res, at = fleet_stream(4, "sensor-0007")
    _, _, lo, hi = next(a for a in at if a[0] == "drift" and a[1] == ("temp",))
    inside = [t for t in res.transitions if t.kind == "opened" and lo <= t.index <= hi]
    assert inside and inside[0].contributions[0][0] == "temp"


def test_a_channel_drifting_off_its_relation_is_held_while_its_regression_climbs():
    # pressure alone ramps for 55 events of a synthetic fleet stream. Its regression on
    # the other channels opens the alert 9 events in and climbs to ~5 times its bar; no
    # other view of pressure reaches 1. Before the regression held, the alert closed
    # three events after each opening and the cooldown then kept it shut: open 16% of
    # the ramp. Held while near its peak, it stays open to the ramp's end.
    res, at = fleet_stream(6, "sensor-0000")
    _, _, lo, hi = next(a for a in at if a[0] == "drift" and a[1] == ("pressure",))
    inside = [t for t in res.transitions if lo <= t.index <= hi]
    assert [t.kind for t in inside] == ["opened"]
    assert inside[0].contributions[0][0] == "pressure"
    assert res.alert[inside[0].index : hi + 1].all()
    assert res.alert[lo : hi + 1].mean() > 0.8
    # and it lets go once the channel is back (the ramp ends abruptly), before the
    # stream's next incident
    nxt = min(a[2] for a in at if a[2] > hi)
    assert not res.alert[hi + 20 : nxt].any()


def test_a_broken_channel_back_in_its_relation_no_longer_holds_by_its_frozen_level():
    # pressure decouples for 16 events; its baseline is frozen meanwhile, and the
    # stream's daily swing then carries its level away from it: the level view held
    # the alert 322 events past the break, over a variance change on the other
    # channels. Back where its regression on temp and flow puts it, the level holds
    # no more; the alert closes and the variance change opens its own.
    res, at = fleet_stream(3, "sensor-0004")
    brk = next(a for a in at if a[0] == "correlation_break")
    var = next(a for a in at if a[0] == "variance_change")
    assert var[2] > brk[3] + 150
    opens = [t.index for t in res.transitions if t.kind == "opened"]
    closes = [t.index for t in res.transitions if t.kind == "closed"]
    assert [i for i in opens if brk[2] <= i <= brk[3]]
    assert [i for i in closes if brk[3] < i < brk[3] + 100]
    assert [i for i in opens if var[2] <= i <= var[3]]


def test_the_relation_is_each_channels_regression_on_the_others():
    # The weights in the state are the ridge regression of each z on the other z's,
    # solved from the covariance the state learnt (refreshed on this event: 16 k + 1)
    model = last_value_model(FEATS, np.zeros(3), np.ones(3))
    det = Detector(model, DetectorConfig())
    x = coupled(loads=(1.0, 0.8, -0.9))[: 16 * 50 + 1]
    det.process_many(["s"] * len(x), np.arange(len(x)) * 60.0, x)
    st = det.stream_state("s")["sstat"]
    f = len(FEATS)
    cov = st[KL.N_SSTAT : KL.N_SSTAT + f].astype(np.float64)
    w = st[KL.N_SSTAT + f : KL.N_SSTAT + 2 * f]
    assert st.shape[0] == KL.n_sstat_rows(f)
    prec = np.linalg.inv(cov + KR.REL_RIDGE * np.eye(f))
    want = -prec / np.diag(prec)[None, :]
    np.fill_diagonal(want, 0.0)
    np.testing.assert_allclose(w, want, rtol=1e-4, atol=1e-5)
    # b is predicted by a (with it) and c (against it)
    assert w[0, 1] > 0.1 and w[2, 1] < -0.1


def test_a_stream_whose_relation_state_is_new_relearns_it_quietly():
    # A checkpoint of a version before the regression has no rows for it (they restore
    # as zeros): the regression then learns again from its first event and does not
    # judge before EARLY_EVENTS of it, so a restored coupled stream does not page.
    model = last_value_model(FEATS, np.zeros(3), np.ones(3))
    det = Detector(model, DetectorConfig())
    x = coupled(loads=(1.0, 0.8, -0.9))
    t = np.arange(N) * 60.0
    det.process_many(["s"] * 600, t[:600], x[:600])
    det.table.arrays["sstat"][:, KL.SS_RN :] = 0.0
    res = det.process_many(["s"] * (N - 600), t[600:], x[600:])
    assert not res.transitions


def test_a_held_incident_ranks_once_at_its_opening():
    # A threshold sweep (NAB's, `evaluate`'s) counts every row at or above the threshold:
    # the events of a held level shift rank below its opening, so the shift is one
    # detection, not 200 (the alert itself holds: test_each_kind_opens_holds_and_closes).
    x = noise()
    x[START:END, 1] += 3.0
    res = run(x)
    top = np.flatnonzero(res.score[START:END] >= 0.5) + START
    assert opened(res)[0] in top and len(top) <= 2, top
    assert held(res) >= 0.9


def test_min_run_still_opens_on_a_held_incident():
    # the episode's first min_run scores are not capped: two in a row can open
    x = noise()
    x[START:END, 1] += 3.0
    res = run(x, cfg=DetectorConfig(min_run=2))
    assert opened(res) and START < opened(res)[0] <= START + 8
    assert held(res) >= 0.9


def test_a_growing_incident_still_pages_above_the_default_threshold():
    # A slow ramp opens its episode while still weak (score ~0.6); at an open threshold of
    # 0.7 it must still page once it has grown: an escalation ranks again.
    x = noise()
    x[START:END, 1] += np.linspace(0.0, 12.0, END - START)
    weak = run(x)
    first = weak.transitions[0].index
    assert weak.score[first] < 0.7
    res = run(x, cfg=DetectorConfig(open_threshold=0.7))
    assert opened(res) and first < opened(res)[0] < END


def daily(n: int = 3000, period: int = 96, seed: int = SEED) -> np.ndarray:
    """One channel with a daily cycle (amplitude 4) and a little noise (0.25): its short
    level swings by the cycle, so the level view's band is wide."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (4 * np.sin(2 * np.pi * t / period) + 0.25 * rng.normal(size=n))[:, None]


def run_one(x: np.ndarray):
    return run(x, model=last_value_model(["a"], np.zeros(1), np.ones(1)))


def test_a_daily_cycle_does_not_page():
    res = run_one(daily())
    assert not res.alert[KR.BASELINE_EVENTS :].any(), opened(res)


@pytest.mark.parametrize("kind", ["surge", "low"])
def test_a_day_beyond_the_streams_range_is_caught_by_the_range_view(kind):
    # One day whose cycle is twice as high (a surge), or sags by up to 4 (a cooler
    # failing for a day, smoothly: no step for the spike view): inside the level view's
    # band, which the cycle makes wide (the short level swings by ~2.3 spreads), and
    # beyond the range of levels the stream goes to every day (the range is mature: the
    # level has crossed its baseline twice a day for 25 days). Without the range view
    # neither opens anything.
    x = daily()
    day = slice(2496, 2592)
    sag = 4.0 * np.sin(np.pi * np.arange(96) / 96) ** 2
    x[day, 0] = 2.0 * x[day, 0] if kind == "surge" else x[day, 0] - sag
    res = run_one(x)
    assert [i for i in opened(res) if 2496 <= i < 2592], opened(res)
    assert not [i for i in opened(res) if KR.BASELINE_EVENTS <= i < 2496]


def test_a_range_seen_over_few_swings_judges_nothing():
    # A slow swing (period 600 events: four swings in the test) reaching 30% further than
    # before: with so few swings the range may well be passed next time; not an incident.
    rng = np.random.default_rng(SEED)
    t = np.arange(2700)
    x = (4 * np.sin(2 * np.pi * t / 600) * np.where(t > 2100, 1.3, 1.0))[:, None]
    x = x + 0.25 * rng.normal(size=x.shape)
    res = run_one(x)
    assert not res.alert[KR.BASELINE_EVENTS :].any(), opened(res)


def test_weeks_of_a_clean_seasonal_fleet_stay_quiet():
    # 28 days of one event a minute with daily, 12-hour and weekly seasonality and slow
    # AR(1) swings, no anomaly (benchmarks/quality_quiet.py on four streams): the range
    # view judges after a few days, and must remember last week's extremes (forgotten
    # over 8k events, it paged each week's new high: 14 false openings on two of these
    # streams); the spread view's slow excursions past its 1-in-256 level must not page
    # (at SPREAD_GAMMA 1.3, as the energy view: 6 false openings here).
    from streamlstm.examples.synth import FleetSpec, generate_fleet

    spec = FleetSpec(n_streams=4, n_steps=40000, anomaly_rate=0.0, seed=12)
    fleet = generate_fleet(spec)
    v = fleet.values
    fleet.values = ((v - v.mean(1, keepdims=True)) / v.std(1, keepdims=True)).astype(np.float32)
    k, t, x, _ = fleet.events()
    n = len(spec.features)
    model = last_value_model(list(spec.features), np.zeros(n), np.ones(n))
    res = Detector(model, DetectorConfig()).process_many(list(k), t, x.astype(np.float64))
    assert len(opened(res)) <= 1, opened(res)


def test_bursts_of_a_quantised_channel_are_not_a_new_level():
    # A channel of a few quantised values (SKAB's pressure), every 300 events two high
    # readings in a row: the short level passes the range for a few events. The range
    # judges a level that stays (RNG_PERSIST events); judged at once, this opened 4 alerts.
    rng = np.random.default_rng(SEED)
    x = rng.choice([-1.0, 0.0, 1.0, 2.0], size=4000, p=[0.2, 0.58, 0.2, 0.02])
    for start in range(600, 3990, 300):
        x[start : start + 2] = 2.0
    res = run_one(x[:, None])
    assert len(opened(res)) <= 1, opened(res)


def bursty(n: int = 9000, seed: int = SEED) -> np.ndarray:
    """A machine's CPU: a quiet floor (noise 0.3) with a burst every 12 events, one to
    three events long, whose height changes every 1,500 events (between 3 and 12): each
    change of height moves its short level by several of the level view's spreads."""
    rng = np.random.default_rng(seed)
    x = 0.3 * rng.normal(size=n)
    heights = rng.choice([3.0, 6.0, 9.0, 12.0], size=n // 1500 + 1)
    for t0 in range(0, n, 12):
        x[t0 : t0 + rng.integers(1, 4)] += heights[t0 // 1500] * (1 + 0.1 * rng.normal())
    return x[:, None]


def test_a_stream_that_sits_still_between_jumps_learns_its_jumps_tail():
    # Piecewise-constant, a jump every 50 events: 98% of its residuals are 0, so the
    # spike view's 1-in-256 level of all events sat inside the jumps' own spread and
    # 1.3x it was passed by about one jump in fifteen (9 openings after the first 3,000
    # events of these four streams). Learnt from the values that move, it is the jumps'
    # own 1-in-256 level. (3 here until the time-of-day memory stopped learning the jumps
    # that land on one of the stream's modes, which are no excursion of their hour: 5.)
    late = 0
    for seed in range(4):
        rng = np.random.default_rng(seed)
        x = np.repeat(rng.normal(size=201) * 5.0, 50)[:10_000, None]
        model = last_value_model(["v"], np.zeros(1), np.full(1, 5.0))
        res = Detector(model).process_many(["s"] * len(x), np.arange(len(x)) * 60.0, x)
        late += sum(1 for t in res.transitions if t.kind == "opened" and t.index >= 3000)
    assert late <= 5


def commanded(seed: int, n: int = 8_000) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A spacecraft-like channel (``benchmarks/command_channel.py``): eight modes at levels
    in [-1, 1], a command to a random one with probability 1% an event, noise sd 0.01; an
    offset of 0.3 (events 2000-2099), noise sd 0.1 (4000-4149), the value stuck (6000-6199)."""
    rng = np.random.default_rng(seed)
    levels = rng.uniform(-1, 1, 8)
    fire = rng.random(n) < 0.01
    to = rng.integers(0, 8, n)
    mode = np.zeros(n, int)
    for i in range(1, n):
        mode[i] = to[i] if fire[i] else mode[i - 1]
    v = levels[mode] + rng.normal(0, 0.01, n)
    v[2000:2100] += 0.3
    v[4000:4150] += rng.normal(0, 0.1, 150)
    v[6000:6200] = v[6000]
    return v, [(2000, 2100), (4000, 4150), (6000, 6200)]


def commanded_runs(seconds_apart: float) -> tuple[int, int]:
    """False openings and incidents caught over four ``commanded`` streams through the
    default detector (last-value model), one event every ``seconds_apart``."""
    false = caught = 0
    for seed in range(4):
        v, incidents = commanded(seed)
        model = last_value_model(["v"], np.zeros(1), np.ones(1))
        times = np.arange(len(v)) * seconds_apart
        res = Detector(model).process_many(["s"] * len(v), times, v[:, None])
        opens = [t.index for t in res.transitions if t.kind == "opened"]
        false += sum(1 for i in opens if not any(a <= i < b for a, b in incidents))
        caught += sum(1 for a, b in incidents if any(a <= i < b for i in opens))
    return false, caught


def test_a_channel_moving_between_its_modes_pages_only_what_is_new():
    # Every move between the modes is ~100x the noise, so the spike view paged most of
    # them, for ever (its 1-in-256 level lies inside the moves' own spread and learns 5%
    # per exceedance: ~70 moves from the noise to the moves): 154 false openings in these
    # four streams before the modes (12 of the 12 incidents caught), 19 now (12 caught). A
    # jump onto a level the stream jumped to and stayed at before is a move between its
    # modes, and there its level opens nothing (28 openings and 9 incidents without that:
    # the short level, at the mode at once, paged by its distance from the baseline).
    # (One a second: no time of day recurs; at one a minute, the next test.)
    false, caught = commanded_runs(1.0)
    assert false <= 30 and caught >= 11, (false, caught)


def test_moves_between_modes_at_random_hours_do_not_teach_the_time_of_day():
    # The same channels at one event a minute, so the time-of-day memory sees each hour
    # on many days. The moves come at random times, ~1 an hour, so every hour had one; while
    # the memory learnt the moves' distances (taken before a move onto a mode is muted),
    # every hour's "usual excursion" was a move, and an incident had to beat 1.3x it: the
    # noise of sd 0.1 (10x the channel's) reached distance 0.07 and was missed in 3 of the
    # 4 streams (9 of 12 caught, 18 false openings). A move between modes is no excursion
    # of its hour: 12 of 12, the same 18.
    false, caught = commanded_runs(60.0)
    assert caught == 12 and false <= 30, (false, caught)


def test_a_bursty_stream_whose_bursts_change_height_does_not_page():
    # The level view's Gaussian band: opening at 4 spreads it paged a change of height
    # that no other view calls an incident (LEVEL_OPEN 1: a second opening, at 6266);
    # it opens at LEVEL_OPEN times that. The spike view opens on the first burst of
    # the tallest height yet (at 3000).
    res = run_one(bursty())
    assert len(opened(res)) <= 1, opened(res)


def test_the_level_view_holds_what_another_view_opened():
    # A step on two coupled channels: the spike view opens it, the level holds it until
    # it ends (the level joins the episode's mask) and the alert closes after it.
    x = noise()
    x[START:END, 0:2] += 3.0
    res = run(x)
    assert opened(res) and START <= opened(res)[0] <= START + 4
    assert held(res) >= 0.9 and closed(res) and END <= closed(res)[0] <= END + 40


@pytest.mark.parametrize("min_run", [1, 2])
@pytest.mark.parametrize(
    ("kind", "views"),
    [("spike", {"spike"}), ("stuck", {"flat_line"}), ("step", {"range", "level"})],
)
def test_the_alert_names_the_view_that_saw_it(kind, views, min_run):
    # An operator reads why as well as where: the opening names, for its top feature,
    # the plainest view at distance 1 (a spike moves the energy and spread views too).
    # With min_run 2 the alert opens on the run's second event, where a spike of two
    # readings has no error left to forecast: it names what started the run (it named
    # the level the spike left).
    x = noise()
    if kind == "spike":
        x[START : START + 2, 1] += 12.0
    elif kind == "stuck":
        x[START:END, 1] = x[START - 1, 1]
    else:
        x[START:END, 1] += 3.0
    res = run(x, cfg=DetectorConfig(min_run=min_run))
    first = next(t for t in res.transitions if t.kind == "opened")
    assert START + min_run - 1 <= first.index <= START + 8
    assert first.contributions[0][0] == "b"
    assert first.views["b"] in views, first.views
    assert set(first.views) <= set(FEATS)
    # the alert record carries it beside each top feature's share
    from streamlstm.kafka.sink import alert_record

    top = alert_record("p", "in", 0, first.ref, first)["top_features"]
    assert top[0]["feature"] == "b" and top[0]["view"] == first.views["b"]


DAY = 1440  # events a day at one a minute (run's clock)


def daily_square(days: int = 14, seed: int = SEED) -> np.ndarray:
    """Channel a switches between 20 and 80 twice a day at the same minutes (a machine on
    a schedule; NAB's artificial daily series); b and c are noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    x = rng.normal(size=(len(t), 3))
    x[:, 0] = np.where(t % DAY < DAY // 2, 20.0, 80.0) + rng.normal(0, 0.5, len(t))
    return x


def test_a_jump_the_stream_makes_every_day_at_this_hour_pages_only_on_its_first_days():
    # Before the time-of-day memory every jump of the square wave opened an alert
    # (by the spike view: its running level learns a jump 5% at a time)
    res = run(daily_square())
    on_a = [t.index for t in res.transitions if t.kind == "opened" and t.contributions[0][0] == "a"]
    assert on_a and max(on_a) < 3 * DAY, on_a


def test_a_day_without_the_jump_pages_once_and_does_not_make_the_next_days_jumps_news():
    x = daily_square()
    d10 = 10 * DAY
    x[d10 + DAY // 2 : d10 + DAY, 0] -= 60.0  # day 10 stays low
    res = run(x)
    got = [t for t in res.transitions if t.kind == "opened" and t.contributions[0][0] == "a"]
    late = [(t.index, t.views["a"]) for t in got if t.index >= 3 * DAY]
    # the jump that did not come, once: its schedule (every 12 hours, seen four times)
    # expected it; missed REC_LATE of 12 hours (15 minutes) and a minute after it was due
    assert len(late) == 1 and late[0][1] == "schedule", late
    assert d10 + DAY // 2 < late[0][0] <= d10 + DAY // 2 + 17, late


@pytest.mark.parametrize("where", ["twice_as_high", "another_hour"])
def test_what_the_stream_does_not_do_at_this_hour_still_pages(where):
    x = daily_square()
    d10 = 10 * DAY
    if where == "twice_as_high":  # the usual jump, at its usual minute, twice as far
        x[d10 + DAY // 2 : d10 + DAY // 2 + 120, 0] += 60.0
        at = d10 + DAY // 2
    else:  # the same jump at an hour it never happens, for two hours
        x[d10 + 300 : d10 + 420, 0] += 60.0
        at = d10 + 300
    res = run(x)
    got = [t for t in res.transitions if t.kind == "opened" and t.index >= 3 * DAY]
    got = [t.index for t in got if t.contributions[0][0] == "a"]
    assert [i for i in got if at <= i <= at + 3], got


def schedule(n: int = 3000, period: int = 97, seed: int = SEED) -> np.ndarray:
    """Channel a switches between 20 and 80 every ``period`` events (a job on a schedule
    that is not daily, or a daily one whose clock is not in seconds); b and c are noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x[:, 0] = np.where((np.arange(n) // period) % 2 == 0, 20.0, 80.0) + rng.normal(0, 0.5, n)
    return x


def run_at(x: np.ndarray, dt: float):
    det = Detector(last_value_model(FEATS, np.zeros(len(FEATS)), np.ones(len(FEATS))))
    return det.process_many(["s"] * x.shape[0], np.arange(x.shape[0]) * dt, x)


def opened_on_a(res) -> list[int]:
    return [t.index for t in res.transitions if t.kind == "opened" and t.contributions[0][0] == "a"]


@pytest.mark.parametrize("dt", [0.3, 60.0])
def test_a_jump_on_a_schedule_pages_only_its_first_times_whatever_the_clock(dt):
    # 0.3: NAB's five minutes as pandas 3 and `astype("int64") / 1e9` give them (the
    # time-of-day memory never sees a day); 60: a job every 97 minutes, not daily. Before
    # the recurrence memory every jump opened an alert in both.
    res = run_at(schedule(), dt)
    on_a = opened_on_a(res)
    assert on_a and max(on_a) < 4 * 97, on_a


@pytest.mark.parametrize("where", ["twice_as_far", "off_schedule"])
def test_what_the_schedule_does_not_do_still_pages(where):
    x = schedule()
    at = 21 * 97  # a jump of the schedule from 20 up to 80
    if where == "twice_as_far":
        x[at : at + 97, 0] += 60.0
    else:  # the same jump 40 events into a low stretch
        at = 20 * 97 + 40
        x[at : at + 20, 0] += 60.0
    on_a = opened_on_a(run_at(x, 0.3))
    assert [i for i in on_a if at <= i <= at + 3], on_a


def glitches(n: int, every: int, jitter: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise on a, b, c with 12 glitches of 10 on a, one in each of 12 random slots of
    ``every`` events (from ``every`` on), ``jitter`` events into it at random."""
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(n, 3)) * 0.1
    at = np.sort(rng.choice(np.arange(every, n - every, every), 12, replace=False))
    at += rng.integers(0, jitter, 12)
    x[at, 0] += 10.0
    return x, at


def test_glitches_at_random_times_each_page():
    # 12 glitches of one size at random times: each opens its alert (none is taken for
    # the next term of a schedule by the others). One a second: at one a minute, three a
    # day fall near each other's time of day, which the time-of-day memory learns
    x, at = glitches(6000, 400, 300)
    on_a = opened_on_a(run_at(x, 1.0))
    assert on_a == at.tolist(), (on_a, at.tolist())


def test_an_excursion_after_an_outage_is_not_taken_for_a_schedule():
    # Glitches at random times, then the stream is silent for 3 hours; the first event
    # after the outage is a glitch of the same size. A tolerance of one gap (3 hours)
    # would let almost any two earlier glitches form a "schedule" with it.
    x, _ = glitches(2900, 150, 100)
    x = np.r_[x, np.random.default_rng(SEED + 1).normal(size=(100, 3)) * 0.1]
    x[2900, 0] += 10.0
    t = np.arange(3000) * 1.0
    t[2900:] += 3 * 3600.0
    det = Detector(last_value_model(FEATS, np.zeros(len(FEATS)), np.ones(len(FEATS))))
    res = det.process_many(["s"] * 3000, t, x)
    assert 2900 in opened_on_a(res), opened_on_a(res)


@pytest.mark.parametrize(("drop", "late"), [(60.0, 5), (30.0, 0)])
def test_a_scheduled_jump_that_does_not_come_or_comes_at_half_its_size_pages(drop, late):
    # the schedule's jump up at 21 x 97 does not come (the level stays at 20) or goes to
    # 50 instead of 80: an alert opens a few events after it was due, or at it, named by
    # the schedule view (0d80463 and da983af: neither; 93b9767: only the missing one).
    # Events 0.3 "seconds" apart: no clock of days needed.
    x = schedule()
    at = 21 * 97
    x[at : at + 97, 0] -= drop
    res = run_at(x, 0.3)
    got = [(t.index, t.views["a"]) for t in res.transitions if t.kind == "opened"]
    sched = [i for i, v in got if v == "schedule"]
    assert sched and at <= sched[0] <= at + late, got


def smooth(seed: int = SEED) -> np.ndarray:
    """Three slow AR(1) channels (phi 0.98) with a little white noise: a smooth sensor."""
    rng = np.random.default_rng(seed)
    x = np.zeros((N, len(FEATS)))
    for f in range(len(FEATS)):
        e = rng.normal(size=N) * 0.1
        for t in range(1, N):
            x[t, f] = 0.98 * x[t - 1, f] + e[t]
    return x + 0.05 * rng.normal(size=x.shape)


@pytest.mark.parametrize("period", [16, 20])
def test_a_new_oscillation_within_the_streams_swing_is_caught_by_the_rhythm_view(period):
    # A vibration that starts on a smooth channel, about its normal swing (sd 0.5): the
    # forecast errors grow by ~1.5x (the energy view's band is 7x) and the short spread
    # stays within the spread's, but the errors now follow each other (their lag-1
    # correlation goes from ~-0.2 to ~+0.6): the forecast no longer explains the stream.
    # Before the rhythm view nothing opened.
    x = smooth()
    assert not run(x).transitions
    w = slice(START, START + 80)
    x[w, 1] += np.sin(2 * np.pi * np.arange(80) / period)
    res = run(x)
    first = next(t for t in res.transitions if t.kind == "opened")
    assert START <= first.index < START + 20, first.index
    assert first.contributions[0][0] == "b" and first.views["b"] == "rhythm", first.views
    assert res.alert[w].mean() >= 0.8


def test_a_stream_whose_rhythm_state_is_new_relearns_it_quietly():
    # A checkpoint of a version before the rhythm view restores its rows as zeros: its
    # band then learns again from its first event and judges nothing before
    # BASELINE_EVENTS of it. A smooth swing's errors are correlated ~+0.95 all the time:
    # judged against a zero band, every event was a new rhythm.
    t = np.arange(N)
    rng = np.random.default_rng(SEED)
    x = np.sin(2 * np.pi * t / 60)[:, None] * np.ones(len(FEATS)) + 0.002 * rng.normal(
        size=(N, len(FEATS))
    )
    assert not run(x).transitions
    model = last_value_model(FEATS, np.zeros(3), np.ones(3))
    det = Detector(model, DetectorConfig())
    det.process_many(["s"] * 600, t[:600] * 60.0, x[:600])
    det.table.arrays["sstat"][:, KL.ss_ac(len(FEATS)) :] = 0.0
    res = det.process_many(["s"] * (N - 600), t[600:] * 60.0, x[600:])
    assert not res.transitions


@pytest.mark.parametrize(("seed", "key"), [(4, "sensor-0003"), (2, "sensor-0001")])
def test_an_incident_on_every_channel_does_not_hold_its_alert_long_after_it_ends(seed, key):
    # A level shift on every channel of a stream (sensor-0001: three, the fourth pulled
    # in by its relation): every baseline is frozen while the episode lasts, no unbroken
    # channel's regression can end the level hold, and the stream's daily swing keeps
    # each short level ~0.7-1 band widths from its frozen baseline: the alert stayed
    # open 551 and 462 events after the shift ended. A feature held only weakly (below
    # distance 1) after the episode's first THAW_AFTER events lets its baseline follow
    # again, so the hold ends once the stream is back.
    res, at = fleet_stream(seed, key)
    _, _, lo, hi = next(a for a in at if a[0] == "level_shift")
    assert res.alert[lo + 2 : hi + 1].mean() > 0.9  # held while the shift lasts
    closes = [t.index for t in res.transitions if t.kind == "closed" and t.index > hi]
    assert closes and closes[0] < hi + 100, (hi, closes[:2])
