"""Model files: save/load round-trips; wrong, truncated and mismatched files are refused."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest

from streamlstm import model as M
from streamlstm.detector import Detector
from streamlstm.errors import ModelError
from streamlstm.model.importers import from_keras
from tests import naive
from tests.conftest import SEED, require


@pytest.fixture
def lstm() -> M.Model:
    m = M.Model.random(["temp", "pressure"], hidden=6, layers=2, seed=SEED)
    m = m.with_normalisation(np.array([20.0, 3.0]), np.array([5.0, 0.5]))
    return m.with_calibration(np.array([0.8, 1.2]), 0.995, {"budget": "1/week"})


def test_save_load_round_trip(tmp_path, lstm):
    path = lstm.save(tmp_path / "m.npz")
    back = M.load(path)
    for name, arr in lstm.arrays().items():
        np.testing.assert_array_equal(back.arrays()[name], arr)
    assert back.features == lstm.features and back.threshold == 0.995
    np.testing.assert_array_equal(back.norm_std, lstm.norm_std)
    assert back.calibration == {"budget": "1/week"}
    assert back.provenance["streamlstm_version"]
    x = np.random.default_rng(SEED).normal(size=(30, 2)) * 5 + [20, 3]
    a = Detector(lstm).process_many(["k"] * 30, np.arange(30.0), x)
    b = Detector(back).process_many(["k"] * 30, np.arange(30.0), x)
    np.testing.assert_array_equal(a.score, b.score)


def test_a_model_of_changes_keeps_its_inputs_through_a_file(tmp_path, lstm):
    """Model.delta is in the file (files without it read levels), in describe(), in the
    shape a checkpoint's state must fit, and takes no per-stream normalisation."""
    delta = replace(lstm, delta=True)
    back = M.load(delta.save(tmp_path / "d.npz"))
    assert back.delta and "inputs=changes" in back.describe()
    assert not M.load(lstm.save(tmp_path / "l.npz")).delta
    assert not delta.same_shape(lstm)
    with pytest.raises(ModelError, match="per-stream normalisation"):
        delta.with_stream_norm("warmup", 64)


def test_file_loads_without_pickle(tmp_path, lstm):
    path = lstm.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as npz:
        assert "meta" in npz.files


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        M.load(tmp_path / "nope.npz")


def test_truncated_file(tmp_path, lstm):
    path = lstm.save(tmp_path / "m.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        M.load(path)


def test_not_a_model(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(ModelError, match="no 'meta' entry"):
        M.load(p)
    p.write_text("hello")
    with pytest.raises(ModelError, match="not a readable"):
        M.load(p)


def _rewrite(path, edit_meta=None, edit_arrays=None):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)


def test_newer_format_version(tmp_path, lstm):
    path = lstm.save(tmp_path / "m.npz")
    _rewrite(path, edit_meta=lambda m: m.update(format_version=99))
    with pytest.raises(ModelError, match="format_version 99 is not supported"):
        M.load(path)


def test_corrupt_weights_fail_checksum(tmp_path, lstm):
    path = lstm.save(tmp_path / "m.npz")

    def flip(a):
        a["head.bias"] = a["head.bias"] + 1.0

    _rewrite(path, edit_arrays=flip)
    with pytest.raises(ModelError, match="checksum"):
        M.load(path)


def test_mismatched_shapes_name_the_array(tmp_path, lstm):
    path = lstm.save(tmp_path / "m.npz")

    def shrink(a):
        a["weight_hh_l1"] = a["weight_hh_l1"][:, :3]

    _rewrite(path, edit_meta=lambda m: m.pop("weights_sha256"), edit_arrays=shrink)
    with pytest.raises(ModelError, match=r"weight_hh_l1 has shape \(24, 3\), expected \(24, 6\)"):
        M.load(path)


def test_missing_meta_field_and_features_mismatch(tmp_path, lstm):
    path = lstm.save(tmp_path / "m.npz")
    _rewrite(path, edit_meta=lambda m: m.pop("cell"))
    with pytest.raises(ModelError, match="lacks the field 'cell'"):
        M.load(path)
    path = lstm.save(tmp_path / "m2.npz")
    _rewrite(path, edit_meta=lambda m: m.update(features=["temp"]))
    with pytest.raises(ModelError, match=r"weight_ih_l0 has shape \(24, 2\), expected \(24, 1\)"):
        M.load(path)


def test_non_finite_weights_refused(lstm):
    bad = list(lstm.weight_ih)
    bad[0] = bad[0].copy()
    bad[0][0, 0] = np.nan
    with pytest.raises(ModelError, match="weight_ih_l0 contains NaN"):
        M.Model(**{**lstm.__dict__, "weight_ih": tuple(bad)})


def test_keras_lstm_layout_matches_reference():
    rng = np.random.default_rng(SEED)
    n_in, hid = 3, 5
    kernel = rng.normal(size=(n_in, 4 * hid)).astype(np.float32)
    rec = rng.normal(size=(hid, 4 * hid)).astype(np.float32)
    bias = rng.normal(size=4 * hid).astype(np.float32)
    hk, hb = rng.normal(size=(hid, n_in)), rng.normal(size=n_in)
    m = from_keras(
        [{"kernel": kernel, "recurrent_kernel": rec, "bias": bias}], hk, hb, ["a", "b", "c"]
    )
    # Keras: z = x @ kernel + h @ rec + bias, gates i, f, c, o.
    x = rng.normal(size=n_in)
    z = x @ kernel + bias
    i, f, g, o = (z[j * hid : (j + 1) * hid] for j in range(4))
    c = naive.sigmoid(i) * np.tanh(g)
    h = naive.sigmoid(o) * np.tanh(c)
    h2, c2 = naive.lstm_step(m, x, np.zeros((1, hid)), np.zeros((1, hid)))
    np.testing.assert_allclose(h2[0], h, atol=1e-5)
    np.testing.assert_allclose(naive.head(m, h2[0]), h @ hk + hb, atol=1e-5)


def test_keras_gru_gate_order_matches_torch():
    torch = require("torch")
    torch.manual_seed(SEED)
    gru = torch.nn.GRU(2, 4)
    sd = gru.state_dict()

    # Build the Keras arrays (gates z, r, h; transposed; bias (2, 3H)) from torch's (r, z, n).
    def to_keras(w):
        r, z, n = np.split(w.numpy(), 3)
        return np.concatenate([z, r, n])

    layer = {
        "kernel": to_keras(sd["weight_ih_l0"]).T,
        "recurrent_kernel": to_keras(sd["weight_hh_l0"]).T,
        "bias": np.stack([to_keras(sd["bias_ih_l0"]), to_keras(sd["bias_hh_l0"])]),
    }
    m = from_keras([layer], np.eye(4, 2), np.zeros(2), ["a", "b"], cell="gru")
    x = torch.randn(7, 1, 2)
    with torch.no_grad():
        _, h_t = gru(x)
    h = np.zeros((1, 4))
    for t in range(7):
        h = naive.gru_step(m, x[t, 0].numpy(), h)
    np.testing.assert_allclose(h[0], h_t[0, 0].numpy(), atol=1e-5)


def test_zipfile_is_a_real_npz(tmp_path, lstm):
    path = lstm.save(tmp_path / "m.npz")
    assert zipfile.is_zipfile(path)


def _central_directory(data: bytes) -> tuple[int, int]:
    """(start, end) of the zip central directory plus its end record."""
    start = data.index(b"PK\x01\x02")
    return start, len(data)


def _edit_zip_headers(data: bytes, offset: int, value: bytes) -> bytes:
    """``value`` at ``offset`` in every local header and central directory entry
    (offsets as in those headers, from their signature)."""
    b = bytearray(data)
    for sig, off in ((b"PK\x03\x04", offset), (b"PK\x01\x02", offset + 2)):
        i = b.find(sig)
        while i >= 0:
            b[i + off : i + off + len(value)] = value
            i = b.find(sig, i + 4)
    return bytes(b)


@pytest.mark.parametrize(
    "damage",
    [
        # a compression method zipfile does not implement (NotImplementedError before)
        lambda d: _edit_zip_headers(d, 8, (99).to_bytes(2, "little")),
        # "version needed to extract" 9.9 (NotImplementedError: zip file version)
        lambda d: _edit_zip_headers(d, 4, (99).to_bytes(2, "little")),
        # the encryption flag (RuntimeError: password required)
        lambda d: _edit_zip_headers(d, 6, (1).to_bytes(2, "little")),
        lambda d: d[: len(d) - 30],  # the end record cut
        lambda d: d[: _central_directory(d)[0] + 10],  # cut inside the central directory
    ],
    ids=["compression-99", "zip-version-9.9", "encrypted-flag", "no-end-record", "cut-cd"],
)
def test_damaged_zip_metadata_is_a_model_error(tmp_path, lstm, damage):
    """Issue #10: damaged zip metadata made numpy raise NotImplementedError, which
    escaped as a crash at start and killed the daemon on SIGHUP."""
    path = lstm.save(tmp_path / "m.npz")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ModelError, match="not a readable streamlstm model file"):
        M.load(path)


def test_any_byte_of_the_central_directory_damaged_loads_or_is_a_model_error(tmp_path, lstm):
    """Every single-byte change in the zip central directory and end record: the file
    still loads (a field nobody reads) or is refused with a ModelError, nothing else."""
    path = lstm.save(tmp_path / "m.npz")
    data = path.read_bytes()
    start, end = _central_directory(data)
    bad = tmp_path / "bad.npz"
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(start, end):
        for v in (0xFF, data[i] ^ 0x10):
            if v == data[i]:
                continue
            b = bytearray(data)
            b[i] = v
            bad.write_bytes(bytes(b))
            try:
                M.load(bad)
                outcomes["loaded"] += 1
            except ModelError:
                outcomes["refused"] += 1
    assert outcomes["refused"] > 100, outcomes
