"""Model files: weights + everything needed to score with them, without pickle.

A model file is a NumPy ``.npz`` archive (loaded with ``allow_pickle=False``)
holding the weights in PyTorch's layout and one ``meta`` entry, a UTF-8 JSON
document with the format name and version, cell type, sizes, feature names,
per-feature normalisation, residual calibration, provenance and a SHA-256 of
the weights. Loading checks all of it and says what is wrong.

Weights (PyTorch ``nn.LSTM`` / ``nn.GRU`` + ``nn.Linear`` naming and shapes):

- ``weight_ih_l{k}`` : (G, I_k), ``weight_hh_l{k}`` : (G, H),
  ``bias_ih_l{k}``, ``bias_hh_l{k}`` : (G,), with G = 4H (LSTM, gates i, f,
  g, o) or 3H (GRU, gates r, z, n); I_0 = number of inputs, I_k = H after.
- ``head.weight`` : (F, H), ``head.bias`` : (F,): forecast of the next
  event's normalised features.

Inputs are the model's features, normalised as ``(x - mean) / std`` (then,
when ``stream_norm`` is not "off", re-standardised per stream with statistics
learnt from the stream's own events, :mod:`streamlstm.kernels.norm`), plus,
when ``time_input`` is set, ``(log1p(dt) - dt_mean) / dt_std`` where ``dt`` is
the time since the stream's previous event in seconds.

Length: the file format is one contract: the dataclass, its save, its load and every
refusal of a bad file must change together.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from streamlstm import __version__
from streamlstm.errors import ModelError

FORMAT = "streamlstm-model"
FORMAT_VERSION = 1
CARRY_PREFIX = "carry."  # the file's entries of Model.carried
CELLS = {"lstm": 4, "gru": 3}
STREAM_NORMS = ("off", "warmup", "ewm")  # streamlstm.kernels.norm.MODES
MAX_LAYERS = 4


class KernelWeights(NamedTuple):
    """Weights in the kernels' layout (see :mod:`streamlstm.kernels.cells`)."""

    cell: int
    w_ih: np.ndarray  # (L, K, G)
    w_hh: np.ndarray  # (L, H, G)
    b_ih: np.ndarray  # (L, G)
    b_hh: np.ndarray  # (L, G)
    w_head: np.ndarray  # (H, F)
    b_head: np.ndarray  # (F,)


@dataclass(frozen=True, eq=False)
class Model:
    """A recurrent forecaster with its preprocessing and calibration.

    ``resid_scale`` (F,) is the typical size of a normalised one-step residual
    per feature, measured on held-out data (1.0 when not calibrated);
    ``threshold`` is the calibrated default open threshold for scores, or None.
    ``stream_norm`` ("off", "warmup" or "ewm") and ``norm_window`` (events) say
    which per-stream normalisation the model was trained with
    (:mod:`streamlstm.kernels.norm`); the detector uses it unless told otherwise.
    Files without it are "off". ``context`` names the features that are inputs
    only (commands, calendar, categories): forecast like the others, never
    scored nor named by an alert. Files without it score every feature.
    ``delta``: the cell reads each feature's change since the stream's previous event
    (normalised, clipped at ``layout.DELTA_CLIP``) instead of its level, and the
    forecast is the previous value plus the head's output, so the model forecasts a
    stream at a level or operating point it never saw in training as well as one it
    did (a model of levels fed values 40 training spreads away forecast garbage:
    SKAB's test runs). Files without it read levels.
    """

    cell: str
    features: tuple[str, ...]
    hidden: int
    weight_ih: tuple[np.ndarray, ...]
    weight_hh: tuple[np.ndarray, ...]
    bias_ih: tuple[np.ndarray, ...]
    bias_hh: tuple[np.ndarray, ...]
    head_weight: np.ndarray
    head_bias: np.ndarray
    norm_mean: np.ndarray
    norm_std: np.ndarray
    resid_scale: np.ndarray
    threshold: float | None = None
    time_input: bool = False
    dt_mean: float = 0.0
    dt_std: float = 1.0
    calibration: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    stream_norm: str = "off"
    norm_window: int = 0
    context: tuple[str, ...] = ()
    delta: bool = False
    # Each training stream's detector state at the end of its history (a state table
    # snapshot, ``StreamTable.snapshot``'s arrays) and how it was made (``carried_meta``:
    # the detector settings that shape the state): a stream scored later under the same
    # key, from a later event on, continues it instead of starting cold. Not part of the
    # weights' digest. Files without it carry nothing.
    carried: Mapping[str, np.ndarray] | None = None
    carried_meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    # -- sizes ------------------------------------------------------------------
    @property
    def layers(self) -> int:
        return len(self.weight_ih)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def input_size(self) -> int:
        return self.n_features + (1 if self.time_input else 0)

    @property
    def gates(self) -> int:
        return CELLS[self.cell] * self.hidden

    def describe(self) -> str:
        return (
            f"{self.cell.upper()} layers={self.layers} hidden={self.hidden} "
            f"features={','.join(self.features)}"
            + (" +dt" if self.time_input else "")
            + (f" context={','.join(self.context)}" if self.context else "")
            + (" inputs=changes" if self.delta else "")
            + (
                f" stream_norm={self.stream_norm}/{self.norm_window}"
                if self.stream_norm != "off"
                else ""
            )
        )

    # -- construction -----------------------------------------------------------
    @classmethod
    def random(
        cls,
        features: Sequence[str],
        hidden: int = 32,
        layers: int = 1,
        cell: str = "lstm",
        seed: int = 0,
        time_input: bool = False,
    ) -> Model:
        """A model with PyTorch's default initialisation U(-1/sqrt(H), 1/sqrt(H))."""
        rng = np.random.default_rng(seed)
        n_feat = len(features)
        g = CELLS[cell] * hidden
        bound = 1.0 / np.sqrt(hidden)
        in0 = n_feat + (1 if time_input else 0)

        def u(*shape: int) -> np.ndarray:
            return rng.uniform(-bound, bound, size=shape).astype(np.float32)

        return cls(
            cell=cell,
            features=tuple(features),
            hidden=hidden,
            weight_ih=tuple(u(g, in0 if k == 0 else hidden) for k in range(layers)),
            weight_hh=tuple(u(g, hidden) for _ in range(layers)),
            bias_ih=tuple(u(g) for _ in range(layers)),
            bias_hh=tuple(u(g) for _ in range(layers)),
            head_weight=u(n_feat, hidden),
            head_bias=u(n_feat),
            norm_mean=np.zeros(n_feat, np.float32),
            norm_std=np.ones(n_feat, np.float32),
            resid_scale=np.ones(n_feat, np.float32),
            time_input=time_input,
            provenance={"source": "random", "seed": seed},
        )

    def with_normalisation(self, mean: np.ndarray, std: np.ndarray) -> Model:
        return replace(
            self,
            norm_mean=np.asarray(mean, np.float32).copy(),
            norm_std=np.asarray(std, np.float32).copy(),
        )

    def with_carried(
        self, snapshot: Mapping[str, np.ndarray] | None, meta: Mapping[str, Any] | None = None
    ) -> Model:
        """The model carrying these streams' end states (None: none)."""
        if snapshot is None:
            return replace(self, carried=None, carried_meta={})
        return replace(self, carried=dict(snapshot), carried_meta=dict(meta or {}))

    @property
    def n_carried(self) -> int:
        return 0 if self.carried is None else int(self.carried["key_len"].shape[0])

    def with_context(self, names: Sequence[str]) -> Model:
        """The same model with ``names`` as context inputs only (see the class doc)."""
        return replace(self, context=tuple(names))

    def scored_mask(self) -> np.ndarray:
        """(F,) float64: 1 for a scored feature, 0 for a context input."""
        return np.array([0.0 if f in self.context else 1.0 for f in self.features])

    def with_stream_norm(self, mode: str, window: int) -> Model:
        """The same model, marked as expecting per-stream normalisation ``mode``."""
        return replace(self, stream_norm=mode, norm_window=int(window) if mode != "off" else 0)

    def with_calibration(
        self,
        resid_scale: np.ndarray,
        threshold: float | None,
        info: Mapping[str, Any] | None = None,
    ) -> Model:
        return replace(
            self,
            resid_scale=np.asarray(resid_scale, np.float32).copy(),
            threshold=threshold,
            calibration=dict(info or {}),
        )

    # -- kernels ----------------------------------------------------------------
    def kernel_weights(self) -> KernelWeights:
        """Transpose and pad the weights into the kernels' contiguous layout."""
        n_layers, hid, g = self.layers, self.hidden, self.gates
        k_w = max(self.input_size, hid)
        w_ih = np.zeros((n_layers, k_w, g), np.float32)
        w_hh = np.zeros((n_layers, hid, g), np.float32)
        for k in range(n_layers):
            w = self.weight_ih[k]
            w_ih[k, : w.shape[1], :] = w.T
            w_hh[k] = self.weight_hh[k].T
        return KernelWeights(
            cell=0 if self.cell == "lstm" else 1,
            w_ih=w_ih,
            w_hh=w_hh,
            b_ih=np.ascontiguousarray(np.stack(self.bias_ih), np.float32),
            b_hh=np.ascontiguousarray(np.stack(self.bias_hh), np.float32),
            w_head=np.ascontiguousarray(self.head_weight.T, np.float32),
            b_head=np.ascontiguousarray(self.head_bias, np.float32),
        )

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """(n, F) raw features -> float32 normalised (NaN stays NaN)."""
        with np.errstate(invalid="ignore", over="ignore"):
            return ((np.asarray(x, np.float64) - self.norm_mean) / self.norm_std).astype(np.float32)

    def stream_inputs(self, x: np.ndarray) -> np.ndarray:
        """(n, F) raw events of one stream, from its first, in time order -> the float32
        inputs the detector scores and feeds the model: :meth:`normalise`, then the
        model's per-stream normalisation (for residual scales, baselines, tests)."""
        z = self.normalise(x)
        if self.stream_norm == "off":
            return z
        from streamlstm.kernels.norm import normalise_series

        return normalise_series(z, self.stream_norm, self.norm_window)

    def denormalise(self, xn: np.ndarray) -> np.ndarray:
        return (np.asarray(xn, np.float64) * self.norm_std + self.norm_mean).astype(np.float32)

    def same_shape(self, other: Model) -> bool:
        """True when per-stream state of one model fits the other."""
        return (
            self.cell == other.cell
            and self.hidden == other.hidden
            and self.layers == other.layers
            and self.features == other.features
            and self.delta == other.delta
        )

    # -- files ------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for k in range(self.layers):
            out[f"weight_ih_l{k}"] = self.weight_ih[k]
            out[f"weight_hh_l{k}"] = self.weight_hh[k]
            out[f"bias_ih_l{k}"] = self.bias_ih[k]
            out[f"bias_hh_l{k}"] = self.bias_hh[k]
        out["head.weight"] = self.head_weight
        out["head.bias"] = self.head_bias
        return out

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "cell": self.cell,
            "layers": self.layers,
            "hidden": self.hidden,
            "input_size": self.input_size,
            "features": list(self.features),
            "time_input": self.time_input,
            "dt_mean": self.dt_mean,
            "dt_std": self.dt_std,
            "norm_mean": [float(v) for v in self.norm_mean],
            "norm_std": [float(v) for v in self.norm_std],
            "resid_scale": [float(v) for v in self.resid_scale],
            "threshold": self.threshold,
            "calibration": dict(self.calibration),
            "provenance": dict(self.provenance),
            "stream_norm": {"mode": self.stream_norm, "window": self.norm_window},
            "context": list(self.context),
            "delta": self.delta,
            "weights_sha256": weights_sha256(self.arrays()),
            **({"carried": dict(self.carried_meta)} if self.carried is not None else {}),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file, fsync, rename). Returns the path."""
        path = Path(path)
        prov = dict(self.provenance)
        prov.setdefault("created", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
        prov.setdefault("streamlstm_version", __version__)
        model = replace(self, provenance=prov)
        meta = json.dumps(model.meta(), sort_keys=True).encode()
        arrays = model.arrays()
        arrays["meta"] = np.frombuffer(meta, np.uint8)
        for name, arr in (model.carried or {}).items():
            arrays[CARRY_PREFIX + name] = arr
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy stubs read **kw as allow_pickle
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def load(path: str | os.PathLike[str]) -> Model:
    """Read and validate a model file; every failure is a :class:`ModelError`."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (
        zipfile.BadZipFile, EOFError, OSError, ValueError,
        # Damaged zip metadata: an unknown compression method or zip version
        # (NotImplementedError), a set encryption flag (RuntimeError), a bad deflate
        # stream (zlib.error): a bad file like any other, never a crash (SIGHUP included).
        NotImplementedError, RuntimeError, zlib.error, struct.error, KeyError, IndexError,
    ) as exc:  # fmt: skip
        raise ModelError(
            f"{path}: not a readable streamlstm model file (a .npz archive): {exc}; "
            "the file may be truncated or of another kind"
        ) from exc
    if "meta" not in arrays:
        raise ModelError(f"{path}: no 'meta' entry; not a streamlstm model file")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: 'meta' entry is not valid JSON: {exc}") from exc
    return from_meta(meta, arrays, where=str(path))


def from_meta(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], where: str) -> Model:
    carried = {k[len(CARRY_PREFIX) :]: v for k, v in arrays.items() if k.startswith(CARRY_PREFIX)}
    arrays = {k: v for k, v in arrays.items() if not k.startswith(CARRY_PREFIX)}
    if meta.get("format") != FORMAT:
        raise ModelError(f"{where}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(
            f"{where}: format_version {version!r} is not supported by streamlstm "
            f"{__version__} (reads version {FORMAT_VERSION}); upgrade streamlstm or re-export"
        )
    try:
        n_layers = int(meta["layers"])
        names = [f"weight_ih_l{k}" for k in range(n_layers)]
        missing = [
            n
            for n in names
            + [f"weight_hh_l{k}" for k in range(n_layers)]
            + [f"bias_ih_l{k}" for k in range(n_layers)]
            + [f"bias_hh_l{k}" for k in range(n_layers)]
            + ["head.weight", "head.bias"]
            if n not in arrays
        ]
        if missing:
            raise ModelError(f"{where}: missing weight arrays {missing}")
        sn = meta.get("stream_norm") or {}  # absent before per-stream normalisation: "off"
        if not isinstance(sn, Mapping):
            raise ModelError(f"{where}: 'stream_norm' is {sn!r}, expected {{mode, window}}")
        expect = meta.get("weights_sha256")
        if expect is not None and weights_sha256(arrays) != expect:
            raise ModelError(f"{where}: weights do not match their checksum; the file is corrupt")
        model = Model(
            cell=str(meta["cell"]),
            features=tuple(str(f) for f in meta["features"]),
            hidden=int(meta["hidden"]),
            weight_ih=tuple(arrays[f"weight_ih_l{k}"] for k in range(n_layers)),
            weight_hh=tuple(arrays[f"weight_hh_l{k}"] for k in range(n_layers)),
            bias_ih=tuple(arrays[f"bias_ih_l{k}"] for k in range(n_layers)),
            bias_hh=tuple(arrays[f"bias_hh_l{k}"] for k in range(n_layers)),
            head_weight=arrays["head.weight"],
            head_bias=arrays["head.bias"],
            norm_mean=np.asarray(meta["norm_mean"], np.float32),
            norm_std=np.asarray(meta["norm_std"], np.float32),
            resid_scale=np.asarray(meta["resid_scale"], np.float32),
            threshold=None if meta.get("threshold") is None else float(meta["threshold"]),
            time_input=bool(meta.get("time_input", False)),
            dt_mean=float(meta.get("dt_mean", 0.0)),
            dt_std=float(meta.get("dt_std", 1.0)),
            calibration=dict(meta.get("calibration") or {}),
            provenance=dict(meta.get("provenance") or {}),
            stream_norm=str(sn.get("mode", "off")),
            norm_window=int(sn.get("window", 0)),
            context=tuple(str(f) for f in meta.get("context") or ()),
            delta=bool(meta.get("delta", False)),
            carried=carried or None,
            carried_meta=dict(meta.get("carried") or {}) if carried else {},
        )
    except KeyError as exc:
        raise ModelError(f"{where}: 'meta' lacks the field {exc.args[0]!r}") from exc
    except ModelError as exc:
        if str(exc).startswith(where):
            raise
        raise ModelError(f"{where}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{where}: malformed 'meta': {exc}") from exc
    if int(meta.get("input_size", model.input_size)) != model.input_size:
        raise ModelError(
            f"{where}: input_size {meta.get('input_size')} does not match "
            f"{model.n_features} features{' + dt' if model.time_input else ''}"
        )
    return model


def weights_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """The model's one digest: sha256 over its weight arrays (sorted names, dtypes, shapes,
    bytes). Stored in the file as ``weights_sha256``, exported as the ``sha256`` label of
    ``streamlstm_model_info`` and written into checkpoints."""
    h = hashlib.sha256()
    for name in sorted(k for k in arrays if k != "meta"):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ModelError(msg)


def _validate(m: Model) -> None:
    _check(m.cell in CELLS, f"cell is {m.cell!r}, expected one of {sorted(CELLS)}")
    _check(1 <= m.layers <= MAX_LAYERS, f"layers is {m.layers}, expected 1..{MAX_LAYERS}")
    _check(m.hidden >= 1, f"hidden is {m.hidden}, expected >= 1")
    _check(m.n_features >= 1, "a model needs at least one feature")
    _check(len(set(m.features)) == m.n_features, f"duplicate feature names in {m.features}")
    _check(
        len(m.weight_hh) == len(m.bias_ih) == len(m.bias_hh) == m.layers,
        "every layer needs weight_ih, weight_hh, bias_ih and bias_hh",
    )
    g, hid, n_feat = m.gates, m.hidden, m.n_features
    shapes: list[tuple[str, np.ndarray, tuple[int, ...]]] = []
    for k in range(m.layers):
        shapes += [
            (f"weight_ih_l{k}", m.weight_ih[k], (g, m.input_size if k == 0 else hid)),
            (f"weight_hh_l{k}", m.weight_hh[k], (g, hid)),
            (f"bias_ih_l{k}", m.bias_ih[k], (g,)),
            (f"bias_hh_l{k}", m.bias_hh[k], (g,)),
        ]
    shapes += [
        ("head.weight", m.head_weight, (n_feat, hid)),
        ("head.bias", m.head_bias, (n_feat,)),
        ("norm_mean", m.norm_mean, (n_feat,)),
        ("norm_std", m.norm_std, (n_feat,)),
        ("resid_scale", m.resid_scale, (n_feat,)),
    ]
    for name, arr, shape in shapes:
        arr = np.asarray(arr)
        _check(
            arr.shape == shape,
            f"{name} has shape {arr.shape}, expected {shape} for a {m.cell.upper()} with "
            f"{m.input_size} inputs, hidden {hid}, {n_feat} features",
        )
        _check(
            np.issubdtype(arr.dtype, np.floating), f"{name} has dtype {arr.dtype}, expected float"
        )
        _check(bool(np.all(np.isfinite(arr))), f"{name} contains NaN or Inf")
    _check(bool(np.all(np.asarray(m.norm_std) > 0)), "norm_std must be > 0 for every feature")
    _check(bool(np.all(np.asarray(m.resid_scale) > 0)), "resid_scale must be > 0 for every feature")
    _check(m.dt_std > 0, "dt_std must be > 0")
    _check(
        m.stream_norm in STREAM_NORMS,
        f"stream_norm is {m.stream_norm!r}, expected one of {', '.join(STREAM_NORMS)}",
    )
    _check(
        m.stream_norm == "off" or m.norm_window >= 1,
        f"norm_window is {m.norm_window}, expected >= 1 with stream_norm {m.stream_norm!r}",
    )
    _check(
        not (m.delta and m.stream_norm != "off"),
        "a model of changes (delta) takes no per-stream normalisation: its inputs are "
        "changes, whatever the stream's level",
    )
    unknown = [f for f in m.context if f not in m.features]
    _check(not unknown, f"context features {unknown} are not among the features {m.features}")
    _check(
        len(set(m.context)) < m.n_features,
        "every feature is a context input: at least one must be scored",
    )
    if m.threshold is not None:
        _check(0.0 < m.threshold < 1.0, f"threshold is {m.threshold}, expected in (0, 1)")
    # Store float32 copies so kernels and checksums see one dtype.
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        object.__setattr__(
            m, name, tuple(np.ascontiguousarray(a, np.float32) for a in getattr(m, name))
        )
    for name in ("head_weight", "head_bias", "norm_mean", "norm_std", "resid_scale"):
        object.__setattr__(m, name, np.ascontiguousarray(getattr(m, name), np.float32))
