"""Partial convolution layer, the UNet of Liu et al. 2018 and its loss, in backend-independent Keras 3.

PConv2D, for inputs X (N, H, W, C_in) and masks M (N, H, W, C_in) (1 = valid):
    out = W^T (X * M) * (k * k * C_in) / sum(M) + b    where the window holds any valid input
    out = 0                                            where it holds none
    new mask = 1 where the window held any valid input (the same for every output channel)
The sum runs over the whole k x k x C_in window (multi-channel masks); the bias is not rescaled and is
not added inside holes (two faults of earlier Keras ports).
"""
from __future__ import annotations

import logging
import math

from pconv_inpainting import keras  # the package sets the backend before Keras loads

ops = keras.ops

log = logging.getLogger(__name__)
ENCODER_KERNELS = (7, 5, 5, 3, 3, 3, 3, 3)
ENCODER_FILTERS = (64, 128, 256, 512, 512, 512, 512, 512)


@keras.saving.register_keras_serializable(package="gapfill")
class PConv2D(keras.layers.Layer):
    """Partial 2D convolution, 'same' zero padding (padded cells count as holes). Call on [x, mask]."""

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, use_bias: bool = True, zero_init: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides, self.use_bias = filters, kernel_size, strides, use_bias
        self.zero_init = zero_init

    def build(self, input_shape):
        c_in = input_shape[0][-1]
        k = self.kernel_size
        init = "zeros" if self.zero_init else "glorot_uniform"
        self.kernel = self.add_weight(shape=(k, k, c_in, self.filters), initializer=init, name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias") if self.use_bias else None
        self.window = float(k * k * c_in)

    def call(self, inputs):
        """inputs [x, mask]: (N, H, W, C) each -> values, mask (N, ceil(H/s), ceil(W/s), filters)."""
        x, m = inputs
        k, s = self.kernel_size, self.strides
        lo, hi = (k - 1) // 2, k // 2
        pad = [[0, 0], [lo, hi], [lo, hi], [0, 0]]
        xm = ops.pad(x * m, pad)
        mp = ops.pad(m, pad)
        raw = ops.conv(xm, self.kernel, strides=s, padding="valid")                  # (N, H', W', F)
        ones = ops.ones((k, k, ops.shape(m)[-1], 1), dtype=m.dtype)
        msum = ops.conv(mp, ones, strides=s, padding="valid")                         # (N, H', W', 1)
        valid = ops.cast(msum > 0.5, x.dtype)
        out = raw * (self.window / ops.maximum(msum, 1.0)) * valid
        if self.bias is not None:
            out = out + self.bias * valid
        return out, ops.broadcast_to(valid, ops.shape(out))

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape[0]
        s = self.strides
        hh = None if h is None else math.ceil(h / s)
        ww = None if w is None else math.ceil(w / s)
        return (n, hh, ww, self.filters), (n, hh, ww, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "use_bias": self.use_bias, "zero_init": self.zero_init}


def unet_depth(patch_size: int) -> int:
    """Levels: 7 for 128 x 128, 8 for 512 x 512 (as in the paper), otherwise what the size allows."""
    return max(1, min(8, int(math.log2(patch_size))))


def build_unet(bands: int, patch_size: int, context_frames: int = 0, predict_variance: bool = False,
               base_filters: int = 64, depth: int | None = None, upsampling: str = "bilinear") -> keras.Model:
    """UNet of PConv2D: inputs [x (N, H, W, C), mask (N, H, W, C)] with C = pconv_data.channels(bands,
    context_frames) (residuals of the frame and its neighbours, first guess, distance); output the residual
    (N, H, W, bands), or (N, H, W, 2 * bands) = [residual, log variance] with `predict_variance`. The output
    layer starts at zero, so the untrained network returns the first guess exactly. Features are upsampled
    bilinearly (nearest-neighbour upsampling left 2**level blocks: part of the speckle; `upsampling`
    'nearest' is the paper's and CoMBInE's network), masks by nearest.
    H and W must be multiples of 2**depth. Encoder BatchNorm layers are named enc_bn_* (stage 2 freezes them)."""
    depth = depth or unet_depth(patch_size)
    c = bands * (1 + 2 * context_frames) + bands + 1
    x_in = keras.Input((None, None, c), name="x")
    m_in = keras.Input((None, None, c), name="mask")
    scale = base_filters / 64
    skips, x, m = [(x_in, m_in)], x_in, m_in
    for i in range(depth):
        f = max(4, int(ENCODER_FILTERS[i] * scale))
        x, m = PConv2D(f, ENCODER_KERNELS[i], strides=2, name=f"enc_pconv_{i}")([x, m])
        if i > 0:
            x = keras.layers.BatchNormalization(name=f"enc_bn_{i}")(x)
        x = keras.layers.ReLU(name=f"enc_relu_{i}")(x)
        skips.append((x, m))
    for i in reversed(range(depth)):
        skip_x, skip_m = skips[i]
        x = keras.layers.UpSampling2D(2, interpolation=upsampling, name=f"dec_up_{i}")(x)
        m = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"dec_upm_{i}")(m)
        x = keras.layers.Concatenate(name=f"dec_cat_{i}")([x, skip_x])
        m = keras.layers.Concatenate(name=f"dec_catm_{i}")([m, skip_m])
        if i == 0:                                   # last layer: the input and its mask, no BN, no activation
            x, m = PConv2D(bands * (2 if predict_variance else 1), 3, zero_init=True, name="dec_pconv_out")([x, m])
            break
        f = max(4, int(ENCODER_FILTERS[i - 1] * scale))
        x, m = PConv2D(f, 3, name=f"dec_pconv_{i}")([x, m])
        x = keras.layers.BatchNormalization(name=f"dec_bn_{i}")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"dec_lrelu_{i}")(x)
    return keras.Model([x_in, m_in], x, name=f"pconv_unet_d{depth}")


def freeze_encoder_bn(model: keras.Model) -> int:
    """Stage 2: encoder BatchNorm layers use their moving statistics and keep scale and shift fixed."""
    n = 0
    for layer in model.layers:
        if layer.name.startswith("enc_bn_"):
            layer.trainable = False
            n += 1
    return n


# ------------------------------------------------------------------------------------------- loss
def gram(f):
    """(N, H, W, C) -> (N, C, C) Gram matrix normalised by H * W * C."""
    shape = ops.shape(f)
    flat = ops.reshape(f, (shape[0], -1, shape[3]))
    return ops.matmul(ops.transpose(flat, (0, 2, 1)), flat) / ops.cast(shape[1] * shape[2] * shape[3], f.dtype)


def vgg_features(weights_path: str | None):
    """VGG16 pool1..pool3 feature extractor from a local weights file, or None (no file: terms off)."""
    if not weights_path:
        log.info("no --vgg_weights file: the perceptual and style terms of the loss are off")
        return None
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    vgg.load_weights(weights_path)
    vgg.trainable = False
    outs = [vgg.get_layer(n).output for n in ("block1_pool", "block2_pool", "block3_pool")]
    log.info("VGG16 features from %s: perceptual and style terms on", weights_path)
    return keras.Model(vgg.input, outs, name="vgg_pool1_3")


PAPER_WEIGHTS = {"valid": 1.0, "hole": 6.0, "perceptual": 0.05, "style": 120.0, "tv": 0.1}   # Liu et al. 2018


def paper_terms(out, truth, hole, known, guess, w):
    """The pixel terms of Liu et al. (CoMBInE's loss): mean L1 on the cells the model saw and on the hidden
    ones (per cell of the whole image, as the paper normalises), and total variation of the composite across
    pairs of neighbours both in the hole grown by one cell. Arrays (N, H, W, B), normalised; `w` (B,) the
    per-band factor to physical units. Returns (valid, hole, tv)."""
    seen = (1.0 - hole) * known
    cells = ops.cast(ops.size(truth), truth.dtype)
    err = ops.abs(out - truth) * w
    comp = guess + truth + hole * (out - truth)                     # the truth outside the hole
    grown = ops.max_pool(hole, pool_size=3, strides=1, padding="same")
    def tv(d, pair):
        return ops.sum(pair * ops.abs(d) * w) / ops.maximum(ops.sum(pair), 1.0)
    tv_x = tv(comp[:, :, 1:] - comp[:, :, :-1], grown[:, :, 1:] * grown[:, :, :-1])
    tv_y = tv(comp[:, 1:] - comp[:, :-1], grown[:, 1:] * grown[:, :-1])
    return ops.sum(seen * err) / cells, ops.sum(hole * err) / cells, tv_x + tv_y


def make_loss(bands: int, vgg=None, predict_variance: bool = False, scale=None, kind: str = "mse"):
    """Loss on y_true = concat(residual truth, hole, known, first guess) (N, H, W, 4 * bands), normalised:
    hole = 1 on cells hidden from the model, known = 1 where the truth is known (0 outside the data).

    The mean squared error of the residual on hidden known cells, in physical units (`scale` (B,): the
    normalisation's std per band), as the reports score it; the perceptual and style terms of Liu et al.
    (0.05, 120) on the reconstruction (first guess + residual) with a VGG; plus the Gaussian NLL of the
    second head with `predict_variance`. No total-variation term: it smoothed the composite across the
    hole edges, and the first guess is smooth already. `kind` 'paper': Liu et al.'s and CoMBInE's loss
    instead of the MSE (`paper_terms` x PAPER_WEIGHTS: L1 valid 1, hole 6, total variation 0.1; perceptual
    and style as above with a VGG), in physical units too."""
    w = ops.convert_to_tensor([1.0] * bands if scale is None else [float(s) ** 2 for s in scale])
    w1 = ops.convert_to_tensor([1.0] * bands if scale is None else [float(s) for s in scale])

    def loss(y_true, y_pred):
        """y_true (N, H, W, 4B), y_pred (N, H, W, B) or (N, H, W, 2B) [residual, log variance] -> scalar."""
        truth, hole, known = y_true[..., :bands], y_true[..., bands:2 * bands], y_true[..., 2 * bands:3 * bands]
        out = y_pred[..., :bands]
        hole = hole * known
        n = ops.maximum(ops.sum(hole), 1.0)
        if kind == "paper":
            valid, holes, tv = paper_terms(out, truth, hole, known, y_true[..., 3 * bands:], w1)
            total = (PAPER_WEIGHTS["valid"] * valid + PAPER_WEIGHTS["hole"] * holes + PAPER_WEIGHTS["tv"] * tv)
        else:
            total = ops.sum(hole * ops.square(out - truth) * w) / n
        if vgg is not None:
            guess = y_true[..., 3 * bands:]
            rgb = lambda a: ops.repeat(a, 3, axis=-1) if bands == 1 else a[..., :3]   # noqa: E731
            full, whole = guess + out, guess + truth
            comp = (1.0 - hole) * whole + hole * full
            f_out, f_comp, f_gt = vgg(rgb(full)), vgg(rgb(comp)), vgg(rgb(whole))
            for fo, fc, fg in zip(f_out, f_comp, f_gt, strict=False):
                total = total + 0.05 * (ops.mean(ops.abs(fo - fg)) + ops.mean(ops.abs(fc - fg)))
                gg = gram(fg)
                total = total + 120.0 * (ops.mean(ops.abs(gram(fo) - gg)) + ops.mean(ops.abs(gram(fc) - gg)))
        if predict_variance:
            logvar = ops.clip(y_pred[..., bands:], -10.0, 10.0)
            nll = 0.5 * (logvar + ops.square(ops.stop_gradient(out) - truth) * ops.exp(-logvar))
            total = total + ops.sum(hole * nll) / n
        return total
    return loss
