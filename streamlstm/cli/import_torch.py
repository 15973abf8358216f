"""``streamlstm import-torch``: a PyTorch state_dict -> a streamlstm model file.

The ``.pt`` file must hold a ``state_dict`` (``torch.save(model.state_dict(),
path)``; a whole pickled module is refused because it is read with
``weights_only=True``) of an ``nn.LSTM`` or ``nn.GRU`` (any number of layers,
``batch_first`` either way, one direction) and an ``nn.Linear`` head mapping
the last layer's hidden state to the next event's features. Key prefixes
(``lstm.``, ``fc.``) are found automatically when unique, else pass them.

The network was trained on normalised inputs; say how with ``--norm-mean`` /
``--norm-std`` (one value per feature) or ``--norm-from`` a CSV/JSON-lines
file of representative events (per-feature mean and std, NaN ignored).
Without either the model takes the features as they are (mean 0, std 1).
If the network has one input more than the features, the extra input is the
time since the stream's previous event (``(log1p(dt) - dt_mean) / dt_std``,
see :mod:`streamlstm.model`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from streamlstm.errors import InputError
from streamlstm.io.tabular import EventReader
from streamlstm.model import Model
from streamlstm.model.baselines import fit_normalisation
from streamlstm.model.importers import from_torch_state_dict, load_torch_file

NAME = "import-torch"
HELP = "convert a PyTorch nn.LSTM/nn.GRU + nn.Linear state_dict (.pt) into a model file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("state", help="the .pt file written by torch.save(model.state_dict())")
    parser.add_argument(
        "--features", required=True, help="comma-separated feature names, one per network input"
    )
    parser.add_argument("--out", required=True, help="model file to write (.npz)")
    parser.add_argument(
        "--rnn-prefix", help="key prefix of the recurrent layer, e.g. 'lstm.' (default: found)"
    )
    parser.add_argument("--head-prefix", help="key prefix of the linear head, e.g. 'fc.'")
    parser.add_argument(
        "--cell", choices=["lstm", "gru"], help="cell type (default: from the gate count)"
    )
    norm = parser.add_argument_group("normalisation (what the network was trained on)")
    norm.add_argument("--norm-mean", help="comma-separated per-feature means")
    norm.add_argument("--norm-std", help="comma-separated per-feature standard deviations")
    norm.add_argument(
        "--norm-from", help="fit per-feature mean/std on this CSV/JSON-lines file instead"
    )
    norm.add_argument("--sep", help="CSV delimiter of --norm-from (default: guessed)")
    norm.add_argument(
        "--dt-mean", type=float, default=0.0, help="mean of log1p(dt) for a time input"
    )
    norm.add_argument("--dt-std", type=float, default=1.0, help="std of log1p(dt) for a time input")


def _floats(text: str, flag: str, n: int) -> np.ndarray:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise InputError(f"{flag}: {text!r} is not a comma-separated list of numbers") from exc
    if len(vals) != n:
        raise InputError(f"{flag} has {len(vals)} values, expected {n} (one per feature)")
    return np.asarray(vals, np.float64)


def normalisation(
    args: argparse.Namespace, features: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(mean, std, where from) the flags ask for, or None for no normalisation."""
    n = len(features)
    if args.norm_from:
        if args.norm_mean or args.norm_std:
            raise InputError("give --norm-from or --norm-mean/--norm-std, not both")
        reader = EventReader(args.norm_from, features, sep=args.sep)
        x = np.concatenate([ev.x for ev in reader])
        mean, std = fit_normalisation(x)
        return (
            mean.astype(np.float64),
            std.astype(np.float64),
            f"fitted on {args.norm_from} ({len(x)} rows)",
        )
    if bool(args.norm_mean) != bool(args.norm_std):
        raise InputError("--norm-mean and --norm-std go together; give both or neither")
    if not args.norm_mean:
        return None
    mean = _floats(args.norm_mean, "--norm-mean", n)
    std = _floats(args.norm_std, "--norm-std", n)
    if not np.all(std > 0):
        raise InputError(f"--norm-std must be > 0 for every feature, got {std.tolist()}")
    return mean, std, "given"


def build(args: argparse.Namespace) -> Model:
    features = tuple(f.strip() for f in args.features.split(",") if f.strip())
    if not features:
        raise InputError("--features is empty; name one feature per network input")
    state = load_torch_file(args.state)
    model = from_torch_state_dict(
        state,
        features,
        rnn_prefix=args.rnn_prefix,
        head_prefix=args.head_prefix,
        cell=args.cell,
        provenance={"source": "pytorch state_dict", "file": Path(args.state).name},
    )
    norm = normalisation(args, features)
    if norm is not None:
        mean, std, where = norm
        model = model.with_normalisation(mean, std)
        model = replace(model, provenance={**model.provenance, "normalisation": where})
    if model.time_input:
        if args.dt_std <= 0:
            raise InputError(f"--dt-std is {args.dt_std}, expected > 0")
        model = replace(model, dt_mean=args.dt_mean, dt_std=args.dt_std)
    return model


def run(args: argparse.Namespace) -> int:
    model = build(args)
    path = model.save(args.out)
    print(f"wrote {path}: {model.describe()}", file=sys.stdout)
    mean = ", ".join(
        f"{f}={m:g}" for f, m in zip(model.features, model.norm_mean.tolist(), strict=True)
    )
    std = ", ".join(
        f"{f}={s:g}" for f, s in zip(model.features, model.norm_std.tolist(), strict=True)
    )
    where = model.provenance.get("normalisation", "none given: features used as they are")
    print(f"  normalisation ({where})", file=sys.stdout)
    print(f"  normalisation mean: {mean}", file=sys.stdout)
    print(f"  normalisation std:  {std}", file=sys.stdout)
    if model.time_input:
        print(f"  time input: (log1p(dt) - {model.dt_mean:g}) / {model.dt_std:g}", file=sys.stdout)
    print(
        "  not calibrated: scores use a residual scale of 1 per feature and the default threshold",
        file=sys.stdout,
    )
    return 0
