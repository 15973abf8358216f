"""Detection quality on labelled data: replay through the detector, match, sweep.

``streamlstm evaluate`` and the benchmarks use this package:
:mod:`.labels` (windows from JSON or a label column), :mod:`.replay` (events
through the detector, per-stream cold-start models), :mod:`.metrics` (window
and point-wise quality, the threshold sweep) and :mod:`.report` (text table,
HTML/PNG). Everything is re-exported here.

Conventions (NAB's, written down here because every number depends on them)
--------------------------------------------------------------------------
- A *labelled window* ``[start, end]`` (event times, both inclusive) surrounds
  one incident. A per-row 0/1 label column is turned into windows: each run
  of consecutive 1-rows of a stream is one window from its first to its last
  row.
- A window may name its anomaly **kind** (``[start, end, "spike"]`` in JSON,
  or the kind name instead of 1 in a label column, where a change of kind
  also ends a window; see :mod:`.labels`). Per kind the report gives windows,
  caught, share caught, median time to detect and held (the mean share of a
  caught window's judged events the alert was open for). False alerts are
  outside every window, so they have no kind and are counted per stream
  only.
- Only *judged* events count: with ``learn_first`` the first share of every
  stream is for learning and is not judged. A window counts when it ends at
  or after the stream's first judged event.
- An **alert** is an opening of the detector's alert machine (the
  ``opened`` transition). An alert that opens inside a window (on a judged
  event) is a detection; the window is **caught** by its first one, and the
  **time to detect** is that alert's time minus the window's start (so
  earlier in the window is better). An alert that opens outside every window
  is a **false alert**. A window no alert opens in is **missed**. An alert
  already open when a window starts does not catch it: the daemon would not
  page again.
- Window-level precision = caught / (caught + false alerts), recall =
  caught / windows.
- **Point-wise** metrics compare the per-event alert flag (stream in alert
  after the event) with the per-event label (inside a window) over judged
  events: precision, recall, F1, false-alarm rate FAR = FP / (FP + TN),
  missed-alarm rate MAR = FN / (FN + TP) (SKAB's definitions).
- **False alerts per day** = false alerts / judged days, where judged days is
  the sum over streams of (last judged time - first judged time) / 86400.

Threshold sweep
---------------
The scorer learns nothing from the thresholds (see
:mod:`streamlstm.kernels.detect`), so scores recorded once are the scores of
every threshold, and only the cheap alert machine has to run again per
threshold (:func:`streamlstm.kernels.alerts._alert_replay`): exactly what a
full re-run would give (a test checks it), at a few ns per event.
"""

from streamlstm.evaluation.labels import (
    Kind,
    Kinds,
    Window,
    label_points,
    load_labels,
    load_windows,
    match_label_keys,
    parse_label_cells,
    parse_labels,
    parse_time,
    parse_windows,
    windows_from_flags,
    windows_from_labels,
)
from streamlstm.evaluation.metrics import (
    DAY,
    UNNAMED_KIND,
    KindQuality,
    Quality,
    SweepPoint,
    best_point,
    kind_quality,
    quality,
    replay_alerts,
    stream_quality,
    sweep,
    sweep_thresholds,
    window_records,
)
from streamlstm.evaluation.replay import (
    Replay,
    judged_mask,
    learn_first_models,
    merge_replays,
    replay,
    replay_per_stream,
    robust_scale,
)

__all__ = [
    "DAY",
    "UNNAMED_KIND",
    "Kind",
    "KindQuality",
    "Kinds",
    "Quality",
    "Replay",
    "SweepPoint",
    "Window",
    "best_point",
    "judged_mask",
    "kind_quality",
    "label_points",
    "learn_first_models",
    "load_labels",
    "load_windows",
    "match_label_keys",
    "merge_replays",
    "parse_label_cells",
    "parse_labels",
    "parse_time",
    "parse_windows",
    "quality",
    "replay",
    "replay_alerts",
    "replay_per_stream",
    "robust_scale",
    "stream_quality",
    "sweep",
    "sweep_thresholds",
    "window_records",
    "windows_from_flags",
    "windows_from_labels",
]
