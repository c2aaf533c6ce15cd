"""Mask generators: achieved fractions, reproducibility, fixed/dynamic semantics, circle geometry, clouds."""
import json
import re

import numpy as np
import pytest

from gapfill.masks import KINDS, MODES, describe_mask, make_mask, missing_fraction


def frame_fractions(observed):
    """Hidden share per frame of a (T, Y, X) observed mask, float64 reference."""
    return [1.0 - float(np.mean(f.astype(np.float64))) for f in observed]


def lag1_agreement(frame):
    """Share of horizontally and vertically neighbouring cell pairs with equal values."""
    same = np.concatenate([(frame[:, 1:] == frame[:, :-1]).ravel(), (frame[1:, :] == frame[:-1, :]).ravel()])
    return float(same.mean())


@pytest.mark.parametrize("yx", [(64, 64), (100, 80)])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_random_fraction_within_1pt(yx, p):
    obs = make_mask("random", "dynamic", (4, *yx), prob_masking=p, seed=3)
    assert obs.dtype == bool and obs.shape == (4, *yx)
    for f in frame_fractions(obs):
        assert abs(f - p) <= 0.01
    assert abs(frame_fractions(make_mask("random", "fixed", (1, *yx), prob_masking=p))[0] - p) <= 0.01


@pytest.mark.parametrize("yx", [(64, 64), (100, 80)])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_shapes_fraction_within_5pt(yx, p):
    obs = make_mask("shapes", "dynamic", (4, *yx), prob_masking=p, seed=1)
    for f in frame_fractions(obs):
        assert abs(f - p) <= 0.05
    # not a random scatter: shapes are contiguous strokes and blobs
    if p == 0.5:
        assert lag1_agreement(obs[0]) > 0.75


def test_clouds_fraction_within_5pt_of_drawn():
    for lo in (0.1, 0.3, 0.7):
        obs = make_mask("clouds", "dynamic", (3, 64, 64), cloud_range=(lo, lo), seed=2)
        for f in frame_fractions(obs):
            assert abs(f - lo) <= 0.05
    obs = make_mask("clouds", "dynamic", (30, 64, 64), cloud_range=(0.2, 0.6), seed=2)
    fr = np.array(frame_fractions(obs))
    assert fr.min() >= 0.2 - 0.05 and fr.max() <= 0.6 + 0.05
    assert fr.std() > 0.05  # the fraction is really drawn per frame (U(0.2, 0.6) has std 0.115)
    fixed = make_mask("clouds", "fixed", (5, 64, 64), cloud_range=(0.2, 0.6), seed=2)
    assert 0.15 <= frame_fractions(fixed)[0] <= 0.65


def test_clouds_spatially_correlated():
    clouds = make_mask("clouds", "fixed", (1, 96, 96), cloud_range=(0.5, 0.5), seed=4)[0]
    rand = make_mask("random", "fixed", (1, 96, 96), prob_masking=0.5, seed=4)[0]
    # independent cells at 50 % agree with prob 0.5; smoothed blobs (sigma 8) almost always
    assert lag1_agreement(rand) < 0.55
    assert lag1_agreement(clouds) > 0.9


@pytest.mark.parametrize("kind", KINDS)
def test_reproducible_and_seed_dependent(kind):
    kw = dict(prob_masking=0.3, cloud_range=(0.3, 0.5))
    for mode in MODES:
        a = make_mask(kind, mode, (3, 40, 36), seed=7, **kw)
        b = make_mask(kind, mode, (3, 40, 36), seed=7, **kw)
        assert np.array_equal(a, b)
        if kind == "circle" and mode == "fixed":
            continue  # a centred disc of fixed radius has nothing random in it
        c = make_mask(kind, mode, (3, 40, 36), seed=8, **kw)
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", KINDS)
def test_fixed_same_every_frame_and_independent_of_T_offset(kind):
    obs = make_mask(kind, "fixed", (6, 48, 40), prob_masking=0.4, seed=5)
    assert all(np.array_equal(obs[0], obs[t]) for t in range(6))
    assert missing_fraction(obs[0]) > 0.05
    other = make_mask(kind, "fixed", (2, 48, 40), prob_masking=0.4, seed=5, frame_offset=123)
    assert np.array_equal(obs[0], other[0]) and np.array_equal(obs[0], other[1])


@pytest.mark.parametrize("kind", KINDS)
def test_dynamic_frames_differ_and_frame_offset(kind):
    kw = dict(prob_masking=0.3, seed=9, radius=8.0 if kind == "circle" else None)
    obs = make_mask(kind, "dynamic", (10, 40, 36), frame_offset=5, **kw)
    assert all(not np.array_equal(obs[0], obs[t]) for t in range(1, 10))
    one = make_mask(kind, "dynamic", (1, 40, 36), frame_offset=8, **kw)
    assert np.array_equal(obs[3], one[0])
    # a window starting at 0 shares frames 5..9 with the one above
    long = make_mask(kind, "dynamic", (15, 40, 36), frame_offset=0, **kw)
    assert np.array_equal(long[5:], obs[:10])


def test_kinds_do_not_share_draws():
    a = make_mask("random", "fixed", (1, 32, 32), prob_masking=0.5)
    b = make_mask("shapes", "fixed", (1, 32, 32), prob_masking=0.5)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("center,radius", [((4.0, 5.5), 3.2), ((0.0, 10.0), 4.5), (None, 2.0)])
def test_circle_matches_brute_force(center, radius):
    Y, X = 9, 11
    obs = make_mask("circle", "fixed", (2, Y, X), radius=radius, center=center)
    cy, cx = center if center is not None else ((Y - 1) / 2, (X - 1) / 2)
    ref = np.ones((Y, X), dtype=bool)
    for r in range(Y):
        for c in range(X):
            if (r - cy) ** 2 + (c - cx) ** 2 <= radius ** 2:
                ref[r, c] = False
    assert np.array_equal(obs[0], ref) and np.array_equal(obs[1], ref)


def test_circle_default_radius_hides_prob():
    obs = make_mask("circle", "fixed", (1, 64, 64), prob_masking=0.3)
    assert abs(missing_fraction(obs) - 0.3) <= 0.01
    assert missing_fraction(make_mask("circle", "fixed", (1, 64, 64), prob_masking=0.0)) == 0.0


def test_circle_dynamic_random_centre_stays_inside():
    r = 10.0
    obs = make_mask("circle", "dynamic", (20, 40, 30), radius=r, seed=1)
    full = np.count_nonzero(~make_mask("circle", "fixed", (1, 41, 41), radius=r, center=(20.0, 20.0))[0])
    centres = set()
    for f in obs:
        rows, cols = np.nonzero(~f)
        # a clipped disc would be shorter than its diameter along one axis and hide far fewer cells
        assert rows.max() - rows.min() + 1 >= 2 * r - 1 and cols.max() - cols.min() + 1 >= 2 * r - 1
        assert abs(len(rows) - full) <= 0.1 * full
        centres.add((round(rows.mean(), 1), round(cols.mean(), 1)))
    assert len(centres) >= 15


def test_missing_fraction_and_describe():
    obs = np.array([[[True, False], [False, False]]])
    assert missing_fraction(obs) == 0.75
    assert missing_fraction(make_mask("random", "fixed", (2, 10, 10), prob_masking=0.0)) == 0.0
    assert describe_mask("random", "dynamic", 0.9) == "random dynamic 90%"
    assert describe_mask("shapes", "fixed", 0.25) == "shapes fixed 25%"
    assert describe_mask("circle", "fixed", 0.5, radius=10.0) == "circle fixed r=10"
    assert describe_mask("clouds", "dynamic", cloud_range=(0.2, 0.6)) == "clouds dynamic 20-60%"
    with pytest.raises(ValueError, match="float64"):
        missing_fraction(np.zeros((2, 2)))


@pytest.mark.parametrize("bad_value,call", [
    ("blobs", lambda: make_mask("blobs", "fixed", (1, 8, 8))),
    ("sometimes", lambda: make_mask("random", "sometimes", (1, 8, 8))),
    ("1.0", lambda: make_mask("random", "fixed", (1, 8, 8), prob_masking=1.0)),
    ("-0.1", lambda: make_mask("random", "fixed", (1, 8, 8), prob_masking=-0.1)),
    ("1.5", lambda: make_mask("shapes", "dynamic", (1, 8, 8), prob_masking=1.5)),
    ("40.0", lambda: make_mask("circle", "fixed", (1, 64, 64), radius=40.0)),
    ("0.0", lambda: make_mask("circle", "fixed", (1, 64, 64), radius=0.0)),
    ("-3", lambda: make_mask("circle", "fixed", (1, 64, 64), radius=-3)),
    ("0.9", lambda: make_mask("circle", "fixed", (1, 64, 64), prob_masking=0.9)),  # disc would not fit
    ("(70.0, 3.0)", lambda: make_mask("circle", "fixed", (1, 64, 64), radius=5.0, center=(70.0, 3.0))),
    ("(3.0, -1.0)", lambda: make_mask("circle", "dynamic", (1, 64, 64), radius=5.0, center=(3.0, -1.0))),
    ("(0.6, 0.2)", lambda: make_mask("clouds", "fixed", (1, 32, 32), cloud_range=(0.6, 0.2))),
    ("(-0.1, 0.5)", lambda: make_mask("clouds", "fixed", (1, 32, 32), cloud_range=(-0.1, 0.5))),
    ("(0.2, 1.5)", lambda: make_mask("clouds", "fixed", (1, 32, 32), cloud_range=(0.2, 1.5))),
    ("()", lambda: make_mask("clouds", "fixed", (1, 32, 32), cloud_range=())),
    ("(0, 8, 8)", lambda: make_mask("random", "fixed", (0, 8, 8))),
    ("(8, 8)", lambda: make_mask("random", "fixed", (8, 8))),
    ("(2, 8.5, 8)", lambda: make_mask("random", "fixed", (2, 8.5, 8))),
    ("-1", lambda: make_mask("random", "fixed", (1, 8, 8), seed=-1)),
])
def test_bad_inputs_raise(bad_value, call):
    with pytest.raises(ValueError, match=re.escape(bad_value)):
        call()


def test_bad_kind_lists_allowed():
    with pytest.raises(ValueError) as err:
        make_mask("blobs", "fixed", (1, 8, 8))
    assert all(k in str(err.value) for k in KINDS)
    with pytest.raises(ValueError) as err:
        make_mask("random", "often", (1, 8, 8))
    assert all(m in str(err.value) for m in MODES)


def test_circle_centre_from_the_command_line_to_the_hidden_cells_and_the_names(tmp_path, capsys):
    """--center ROW COL (CoMBInE's masks take a centre): the training and test frames hide exactly the disc
    around it (brute force), the run name and label say it, --test_center gives its own results folder, and
    a centre outside the frame is one line, exit 2."""
    from baselines import test_baselines, train_baselines
    from data_generation.make_synthetic_field import make_field
    from gapfill import runs
    from gapfill.problem import build_problem
    make_field(n_time=30, ny=10, nx=12, length_scale=3.0, seed=1).to_netcdf(tmp_path / "f.nc")
    argv = ["--data_path", str(tmp_path / "f.nc"), "--method", "climatology", "--mask_kind", "circle",
            "--mask_type", "fixed", "--radius", "3", "--center", "2", "7", "--checkpoint_dir", str(tmp_path / "ck")]
    assert runs.run_cli(train_baselines.main, argv) == 0
    (run,) = (tmp_path / "ck").iterdir()
    assert "circle-fixed-r3-at2x7" in run.name
    cfg = json.loads((run / "config.json").read_text())
    problem = build_problem(cfg["args"])
    r, c = np.mgrid[:10, :12]
    disc = (r - 2) ** 2 + (c - 7) ** 2 <= 9
    assert (~problem.observed == disc[None]).all() and problem.masks["test"]["label"] == "circle fixed r=3 at (2, 7)"
    res = tmp_path / "res"
    assert runs.run_cli(test_baselines.main, ["--checkpoints", str(run), "--results_folder", str(res),
                                              "--test_center", "5", "5"]) == 0
    (out,) = res.glob("*+test_circle-fixed-r3-at5x5")
    m = json.loads((out / "metrics.json").read_text())
    disc5 = (r - 5) ** 2 + (c - 5) ** 2 <= 9
    assert m["metrics"]["overall"]["n_scored"] == int(disc5.sum()) * len(m["metrics"]["per_frame"])
    capsys.readouterr()
    outside = [*argv[:-5], "--center", "20", "7", "--checkpoint_dir", str(tmp_path / "x")]
    assert runs.run_cli(train_baselines.main, outside) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "center must be (row, col) inside the 10x12 frame" in err[0]


def test_sources_are_small_discs_and_band_is_one_straight_strip():
    """CoMBInE's masks: point-source holes (many small discs, the hidden share just past p) and a galactic band
    (exactly round(p*Y*X) cells, one connected strip whose length far exceeds its width)."""
    from scipy import ndimage
    obs = make_mask("sources", "dynamic", (4, 96, 96), prob_masking=0.1, radius=4.0, seed=3)
    for frame in ~obs:
        share = frame.mean()
        assert 0.1 <= share <= 0.1 + np.pi * 4.0 ** 2 / 96 ** 2 + 1e-9      # the last disc may pass p
        labels, n = ndimage.label(frame)
        assert n >= 8                                                    # many separate holes
        assert np.bincount(labels.ravel())[1:].max() <= 4 * np.pi * 4.5 ** 2   # no hole far beyond r_max
    band = ~make_mask("band", "dynamic", (4, 64, 80), prob_masking=0.2, seed=1)
    assert np.array_equal(band.sum(axis=(1, 2)), [round(0.2 * 64 * 80)] * 4)
    for frame in band:
        assert ndimage.label(frame)[1] == 1
        cov = np.cov(np.argwhere(frame).T.astype(np.float64))
        lo, hi = np.linalg.eigvalsh(cov)
        assert hi / lo > 9                                               # length / width > 3
    assert describe_mask("sources", "dynamic", 0.1, radius=4.0) == "sources dynamic 10% r<=4"
    with pytest.raises(ValueError, match="largest source hole"):
        make_mask("sources", "fixed", (1, 16, 16), radius=20.0)
