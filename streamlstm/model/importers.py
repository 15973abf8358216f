"""Import weights trained elsewhere into a :class:`~streamlstm.model.Model`.

PyTorch: a ``state_dict`` of an ``nn.LSTM`` or ``nn.GRU`` (``batch_first``
does not change the weights) and an ``nn.Linear`` head, under configurable key
prefixes. Keras: the arrays of an ``LSTM``/``GRU`` layer (``kernel`` (I, G),
``recurrent_kernel`` (H, G), ``bias``) and a ``Dense`` head. Torch itself is
needed only to read a ``.pt`` file (:func:`load_torch_file`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamlstm.errors import ModelError
from streamlstm.model import CELLS, Model


def _np(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def from_torch_state_dict(
    state: Mapping[str, Any],
    features: Sequence[str],
    rnn_prefix: str | None = None,
    head_prefix: str | None = None,
    cell: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Model:
    """Build a model from an ``nn.LSTM``/``nn.GRU`` + ``nn.Linear`` state_dict.

    ``rnn_prefix`` / ``head_prefix`` (e.g. ``"lstm."``, ``"fc."``) default to
    the unique prefix found in ``state``. ``cell`` defaults to what the gate
    count implies (4H -> LSTM, 3H -> GRU).
    """
    keys = list(state)
    if rnn_prefix is None:
        found = sorted({k[: -len("weight_ih_l0")] for k in keys if k.endswith("weight_ih_l0")})
        if len(found) != 1:
            raise ModelError(
                f"expected one recurrent layer (a key ending in 'weight_ih_l0'), found {found}; "
                "pass the prefix explicitly"
            )
        rnn_prefix = found[0]
    layer_ids = sorted(
        int(m.group(1))
        for k in keys
        if (m := re.fullmatch(re.escape(rnn_prefix) + r"weight_ih_l(\d+)", k))
    )
    if not layer_ids:
        raise ModelError(f"no '{rnn_prefix}weight_ih_l0' in the state_dict (keys: {keys[:12]})")
    if layer_ids != list(range(len(layer_ids))):
        raise ModelError(f"recurrent layers are not numbered 0..n-1: {layer_ids}")
    if any("_reverse" in k for k in keys if k.startswith(rnn_prefix)):
        raise ModelError("bidirectional recurrent layers cannot run on a stream; use one direction")
    if any(k.startswith(rnn_prefix + "weight_hr") for k in keys):
        raise ModelError("LSTM with proj_size is not supported")
    if head_prefix is None:
        found = sorted(
            {
                k[: -len("weight")]
                for k in keys
                if k.endswith("weight")
                and not k.startswith(rnn_prefix)
                and np.ndim(_np(state[k])) == 2
            }
        )
        if len(found) != 1:
            raise ModelError(
                f"expected one linear head (a 2-D '...weight' outside '{rnn_prefix}'), "
                f"found {found}; pass the head prefix explicitly"
            )
        head_prefix = found[0]

    def get(name: str) -> np.ndarray:
        if name not in state:
            raise ModelError(f"state_dict has no {name!r}")
        return _np(state[name])

    n_layers = len(layer_ids)
    w_hh0 = get(f"{rnn_prefix}weight_hh_l0")
    hidden = w_hh0.shape[1]
    g = w_hh0.shape[0]
    implied = {4 * hidden: "lstm", 3 * hidden: "gru"}.get(g)
    cell = cell or implied
    if cell not in CELLS or CELLS[cell] * hidden != g:
        raise ModelError(
            f"weight_hh_l0 has shape {w_hh0.shape}: not an LSTM (4H, H) or GRU (3H, H)"
        )

    def bias(kind: str, k: int) -> np.ndarray:
        name = f"{rnn_prefix}bias_{kind}_l{k}"
        return get(name) if name in state else np.zeros(g, np.float32)  # bias=False

    w_ih = tuple(get(f"{rnn_prefix}weight_ih_l{k}") for k in range(n_layers))
    n_in = w_ih[0].shape[1]
    n_feat = len(features)
    if n_in not in (n_feat, n_feat + 1):
        raise ModelError(
            f"the network takes {n_in} inputs but {n_feat} features were named "
            f"({','.join(features)}); name one feature per input"
        )
    head_b_name = f"{head_prefix}bias"
    head_w = get(f"{head_prefix}weight")
    if head_w.ndim != 2 or head_w.shape[0] != n_feat:
        extra = (
            f"; the network takes {n_in} inputs, so it would read the {n_feat} features plus "
            "the time since the previous event"
            if n_in == n_feat + 1
            else ""
        )
        raise ModelError(
            f"the head '{head_prefix}weight' has shape {tuple(head_w.shape)}: it forecasts "
            f"{head_w.shape[0]} values, but {n_feat} features were named ({','.join(features)})"
            f"{extra}; name one feature per forecast output"
        )
    return Model(
        cell=cell,
        features=tuple(features),
        hidden=hidden,
        weight_ih=w_ih,
        weight_hh=tuple(get(f"{rnn_prefix}weight_hh_l{k}") for k in range(n_layers)),
        bias_ih=tuple(bias("ih", k) for k in range(n_layers)),
        bias_hh=tuple(bias("hh", k) for k in range(n_layers)),
        head_weight=head_w,
        head_bias=get(head_b_name) if head_b_name in state else np.zeros(head_w.shape[0]),
        norm_mean=np.zeros(n_feat, np.float32),
        norm_std=np.ones(n_feat, np.float32),
        resid_scale=np.ones(n_feat, np.float32),
        time_input=n_in == n_feat + 1,
        provenance=dict(provenance or {"source": "pytorch state_dict"}),
    )


def load_torch_file(path: str | Path) -> Mapping[str, Any]:
    """Read a ``.pt`` state_dict with ``torch.load(weights_only=True)``."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ModelError(
            "reading a PyTorch file needs torch: pip install torch==2.13.0 "
            "(only this command needs it)"
        ) from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: file not found") from exc
    except Exception as exc:  # torch raises many kinds for a bad file
        raise ModelError(f"{path}: not a readable PyTorch state_dict: {exc}") from exc
    if hasattr(obj, "state_dict"):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise ModelError(f"{path}: expected a state_dict (a mapping of tensors), got {type(obj)}")
    return obj


def from_keras(
    layers: Sequence[Mapping[str, Any]],
    head_kernel: Any,
    head_bias: Any,
    features: Sequence[str],
    cell: str = "lstm",
) -> Model:
    """Build a model from Keras arrays.

    ``layers``: per recurrent layer, ``{"kernel": (I, G), "recurrent_kernel":
    (H, G), "bias": (G,) or (2, G)}``. Keras orders LSTM gates i, f, c, o (the
    same as PyTorch's i, f, g, o) and GRU gates z, r, h (PyTorch: r, z, n);
    a GRU must use ``reset_after=True`` (Keras' default), whose bias is
    (2, G): input and recurrent. The head is a ``Dense`` with kernel (H, F).
    """
    w_ih, w_hh, b_ih, b_hh = [], [], [], []
    for k, layer in enumerate(layers):
        kern = _np(layer["kernel"]).T
        rec = _np(layer["recurrent_kernel"]).T
        b = _np(layer.get("bias", np.zeros(kern.shape[0])))
        if cell == "gru":
            if b.ndim != 2:
                raise ModelError(f"layer {k}: GRU bias must be (2, 3H) (reset_after=True)")
            bi, bh = b[0], b[1]
            hid = rec.shape[1]
            order = np.r_[np.arange(hid, 2 * hid), np.arange(0, hid), np.arange(2 * hid, 3 * hid)]
            kern, rec, bi, bh = kern[order], rec[order], bi[order], bh[order]
        else:
            bi, bh = b, np.zeros_like(b)
        w_ih.append(kern)
        w_hh.append(rec)
        b_ih.append(bi)
        b_hh.append(bh)
    n_feat = len(features)
    return Model(
        cell=cell,
        features=tuple(features),
        hidden=w_hh[0].shape[1],
        weight_ih=tuple(w_ih),
        weight_hh=tuple(w_hh),
        bias_ih=tuple(b_ih),
        bias_hh=tuple(b_hh),
        head_weight=_np(head_kernel).T,
        head_bias=_np(head_bias),
        norm_mean=np.zeros(n_feat, np.float32),
        norm_std=np.ones(n_feat, np.float32),
        resid_scale=np.ones(n_feat, np.float32),
        time_input=w_ih[0].shape[1] == n_feat + 1,
        provenance={"source": "keras"},
    )
