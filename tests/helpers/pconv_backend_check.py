"""Run with KERAS_BACKEND set (the tests start it once per backend): the PConv2D layer against a
brute-force numpy loop, and a short training of a small UNet. Prints one JSON line of results."""
import json
import sys

import numpy as np


def numpy_pconv(x, m, w, b, stride):
    """Reference partial convolution: x, m (N, H, W, C); w (k, k, C, F); 'same' zero padding."""
    n, h, wd, c = x.shape
    k, f = w.shape[0], w.shape[3]
    lo = (k - 1) // 2
    xp = np.zeros((n, h + k - 1, wd + k - 1, c))
    mp = np.zeros_like(xp)
    xp[:, lo:lo + h, lo:lo + wd], mp[:, lo:lo + h, lo:lo + wd] = x, m
    ho, wo = -(-h // stride), -(-wd // stride)
    out, new = np.zeros((n, ho, wo, f)), np.zeros((n, ho, wo, f))
    for a in range(n):
        for i in range(ho):
            for j in range(wo):
                xs = xp[a, i * stride:i * stride + k, j * stride:j * stride + k]
                ms = mp[a, i * stride:i * stride + k, j * stride:j * stride + k]
                total = ms.sum()
                if total > 0:
                    for o in range(f):
                        out[a, i, j, o] = (w[..., o] * xs * ms).sum() * (k * k * c) / total + b[o]
                    new[a, i, j] = 1.0
    return out, new


def layer_errors():
    from pconv_inpainting import keras
    from pconv_inpainting.pconv_model import PConv2D
    rng = np.random.default_rng(0)
    worst = 0.0
    for k, stride, c in ((3, 1, 2), (5, 2, 3), (7, 2, 1)):
        x = rng.normal(size=(2, 9, 8, c))
        m = (rng.random((2, 9, 8, c)) < 0.4).astype(float)                 # multi-channel masks
        m[0, :5, :5] = 0                                                      # a hole larger than the window
        layer = PConv2D(4, k, strides=stride)
        out, new = layer([keras.ops.convert_to_tensor(x, "float32"), keras.ops.convert_to_tensor(m, "float32")])
        w = keras.ops.convert_to_numpy(layer.kernel).astype(float)
        b = rng.normal(size=4)
        layer.bias.assign(b.astype("float32"))
        out, new = layer([keras.ops.convert_to_tensor(x, "float32"), keras.ops.convert_to_tensor(m, "float32")])
        ref, ref_new = numpy_pconv(x, m, w, b, stride)
        assert (ref_new == 0).any() and (ref_new == 1).any()
        worst = max(worst, float(np.abs(keras.ops.convert_to_numpy(out) - ref).max() / np.abs(ref).max()))
        assert (keras.ops.convert_to_numpy(new) == ref_new).all()
    return worst


def short_training(tmp):
    """A few steps of the small UNet on a 24 x 32 x 32 field, then inpainting of two test frames."""
    import csv
    from pathlib import Path

    from data_generation.make_synthetic_field import make_field
    from gapfill import evaluate
    from pconv_inpainting import test_pconv, train_pconv
    tmp = Path(tmp)
    make_field(n_time=24, ny=32, nx=32, seed=1).to_netcdf(tmp / "f.nc")
    train_pconv.main(["--data_path", str(tmp / "f.nc"), "--num_frames_train", "16", "--num_frames_valid", "4",
                      "--max_iters", "6", "--steps_per_epoch", "3", "--batch_size", "2", "--base_filters", "8",
                      "--predict_variance", "--checkpoint_dir", str(tmp / "ck"), "--log_level", "WARNING"])
    run = next((tmp / "ck").iterdir())
    losses = [float(r["loss"]) for r in csv.DictReader(open(run / "train_log.csv")) if r["step"] != "0"]   # 0: first guess
    rec = evaluate.test_main("pconv", test_pconv.predict, ["--checkpoints", str(run), "--results_folder",
                               str(tmp / "res"), "--num_frames_test", "2", "--log_level", "WARNING"])[0]
    return {"losses": losses, "rmse": rec["metrics"]["overall"]["rmse"], "crps": rec["metrics"]["overall"]["crps"],
            "climatology": rec["baselines"]["climatology"]["overall"]["rmse"]}


if __name__ == "__main__":
    import os
    sys.path.insert(0, os.getcwd())
    res = {"backend": __import__("keras").backend.backend(), "layer_rel_error": layer_errors()}
    if len(sys.argv) > 1:
        res.update(short_training(sys.argv[1]))
    print(json.dumps(res))
