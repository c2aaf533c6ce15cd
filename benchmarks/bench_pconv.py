"""Training throughput of the partial-convolution UNet against a plain PyTorch one: patches per second at
128 x 128, batch 8, the paper's network (7 levels, 64 to 512 filters), one band (3 input channels: residual,
first guess, distance), the loss without VGG terms, Adam. The reference, the project's UNet on torch and on
TensorFlow each run in a fresh process (Keras fixes its backend at import); the CSV gives each one's ratio
to the reference.

    python -m benchmarks.bench_pconv                                  # all three, CPU
    python -m benchmarks.bench_pconv --backends reference torch --steps 20   # a machine with a GPU uses it
    python -m benchmarks.bench_pconv --backends reference torch --profile    # + operator counts of one step

`--profile` records one training step under torch.profiler for the torch runs: the operators Python
dispatches, the leaf operators (on a GPU, roughly one kernel launch each), the layout copies and the
operators that take the most time. On a GPU a UNet of small patches is bound by launches, not by flops, so
the leaf-operator ratio is what predicts the GPU ratio where no GPU is at hand.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import write_rows

log = logging.getLogger("benchmarks.pconv")


def profile_step(step) -> dict:
    """Operator counts of one call of `step` (a torch training step) under torch.profiler, CPU side."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    aten = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in aten if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    leaf = [e for e in aten if not any(c.name.startswith("aten::") for c in e.cpu_children)]
    copies = [e for e in leaf if e.name in ("aten::copy_", "aten::clone", "aten::contiguous")]
    by_op: dict[str, float] = {}
    for e in top:
        by_op[e.name] = by_op.get(e.name, 0.0) + e.cpu_time_total / 1e3
    worst = sorted(by_op.items(), key=lambda kv: -kv[1])[:5]
    convs = sum(e.name == "aten::convolution" for e in aten)
    return {"ops_dispatched": len(top), "ops_leaf": len(leaf), "layout_copies": len(copies), "convolutions": convs,
            "top_ops_ms": "; ".join(f"{k} {v:.0f}" for k, v in worst)}


def one(steps: int, batch: int, patch: int, base_filters: int, profiled: bool = False) -> dict:
    """The project's UNet (pconv_inpainting.pconv_model), one Keras train_on_batch per step."""
    import numpy as np

    from gapfill.system import peak_memory_mb
    from pconv_inpainting import keras
    from pconv_inpainting.pconv_data import channels
    from pconv_inpainting.pconv_model import build_unet, make_loss
    rng = np.random.default_rng(0)
    c = channels(1, 0)                                  # residual, first guess, distance
    model = build_unet(bands=1, patch_size=patch, base_filters=base_filters)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=make_loss(1), jit_compile=False)
    x = rng.normal(size=(batch, patch, patch, c)).astype("float32")
    m = np.repeat((rng.random((batch, patch, patch, 1)) > 0.3).astype("float32"), c, axis=-1)
    y = np.concatenate([x[..., :1], 1 - m[..., :1], np.ones_like(m[..., :1]), x[..., 1:2]], axis=-1)
    model.train_on_batch([x * m, m], y)                                   # warm-up (graph building)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = model.train_on_batch([x * m, m], y)
    seconds = time.perf_counter() - t0
    device, prof = "cpu", {}
    if keras.backend.backend() == "torch":
        import torch
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        if profiled:
            prof = profile_step(lambda: model.train_on_batch([x * m, m], y))
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        device = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    return {"backend": keras.backend.backend(), "device": device, "patch": patch, "batch": batch, "steps": steps,
            "step_s": round(seconds / steps, 4), "patches_per_s": round(steps * batch / seconds, 2),
            "params": model.count_params(), "peak_memory_mb": round(peak_memory_mb(), 1),
            "loss_finite": bool(np.isfinite(float(np.asarray(loss).ravel()[0])))} | prof


def reference(steps: int, batch: int, patch: int, base_filters: int, profiled: bool = False) -> dict:
    """The yardstick: a plain PyTorch UNet of the same partial convolutions, kernels, filters, batch and Adam,
    channels first. Its PartialConv2d is NVIDIA's (Liu et al.) with the faults of the public ports left out:
    the mask window sum has one output channel (not C_out copies), the bias is neither rescaled nor added in
    holes. A reference to time against, not a second model: no script trains it."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from gapfill.system import peak_memory_mb
    from pconv_inpainting.pconv_data import channels
    from pconv_inpainting.pconv_model import ENCODER_FILTERS, ENCODER_KERNELS, unet_depth

    class PartialConv2d(nn.Module):
        """A Conv2d's weights and geometry applied to (values, mask): not a Conv2d itself, whose forward takes
        one input."""

        def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int):
            super().__init__()
            self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding)

        def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """x, m: (N, C_in, H, W) -> values, mask (N, C_out, H', W')."""
            c = self.conv
            assert c.bias is not None
            with torch.no_grad():
                ones = torch.ones(1, m.shape[1], *c.kernel_size, device=m.device, dtype=m.dtype)
                msum = F.conv2d(m, ones, stride=c.stride, padding=c.padding)
                valid = (msum > 0.5).to(x.dtype)
                ratio = c.kernel_size[0] * c.kernel_size[1] * m.shape[1] / msum.clamp(min=1.0) * valid
            out = F.conv2d(x * m, c.weight, None, c.stride, c.padding) * ratio + c.bias.view(1, -1, 1, 1) * valid
            return out, valid.expand_as(out)

    class UNet(nn.Module):
        def __init__(self, c: int, depth: int, scale: float):
            super().__init__()
            f = [max(4, int(ENCODER_FILTERS[i] * scale)) for i in range(depth)]
            self.enc = nn.ModuleList(PartialConv2d(c if i == 0 else f[i - 1], f[i], ENCODER_KERNELS[i], 2,
                                                   ENCODER_KERNELS[i] // 2) for i in range(depth))
            self.enc_bn = nn.ModuleList(nn.BatchNorm2d(f[i]) if i else nn.Identity() for i in range(depth))
            ins = [(f[i] + (f[i - 1] if i else c)) for i in range(depth)]            # upsampled + skip
            self.dec = nn.ModuleList(PartialConv2d(ins[i], f[i - 1] if i else 1, 3, 1, 1) for i in range(depth))
            self.dec_bn = nn.ModuleList(nn.BatchNorm2d(f[i - 1]) if i else nn.Identity() for i in range(depth))

        def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            """x: (N, c, H, W), m: (N, c, H, W) float mask, H and W multiples of 2^depth -> (N, 1, H, W)."""
            skips = [(x, m)]
            for conv, bn in zip(self.enc, self.enc_bn, strict=True):
                x, m = conv(x, m)
                x = F.relu(bn(x))
                skips.append((x, m))
            skips.pop()
            for i in reversed(range(len(self.dec))):
                sx, sm = skips[i]
                x = torch.cat([F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False), sx], 1)
                m = torch.cat([F.interpolate(m, scale_factor=2, mode="nearest"), sm], 1)
                x, m = self.dec[i](x, m)
                if i:
                    x = F.leaky_relu(self.dec_bn[i](x), 0.2)
            return x

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    c = channels(1, 0)
    net = UNet(c, unet_depth(patch), base_filters / 64).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c, patch, patch, generator=gen).to(device)
    m = (torch.rand(batch, 1, patch, patch, generator=gen) > 0.3).float().expand(-1, c, -1, -1).contiguous().to(device)
    hole = 1 - m[:, :1]

    def step():
        opt.zero_grad()
        loss = (hole * (net(x * m, m) - x[:, :1]) ** 2).sum() / hole.sum().clamp(min=1.0)
        loss.backward()
        opt.step()
        return loss

    step()                                                                 # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    prof = profile_step(step) if profiled else {}
    return {"backend": "reference (plain torch)", "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
            "patch": patch, "batch": batch, "steps": steps, "step_s": round(seconds / steps, 4),
            "patches_per_s": round(steps * batch / seconds, 2), "params": sum(p.numel() for p in net.parameters()),
            "peak_memory_mb": round(peak_memory_mb(), 1), "loss_finite": bool(torch.isfinite(loss).item())} | prof


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", nargs="+", default=["reference", "torch", "tensorflow"],
                   help="reference (plain PyTorch), torch, tensorflow: each in a fresh process")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--base_filters", type=int, default=64, help="64: the paper's network")
    p.add_argument("--profile", action="store_true", help="operator counts of one step of the torch runs")
    p.add_argument("--out", default="benchmarks/records")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    size = (args.steps, args.batch, args.patch, args.base_filters)
    if args.one:
        as_reference = os.environ.get("BENCH_PCONV_REFERENCE") == "1"
        sys.stdout.write(json.dumps(reference(*size, args.profile) if as_reference else one(*size, args.profile)) + "\n")
        return 0
    rows = []
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND="torch" if backend == "reference" else backend, TF_CPP_MIN_LOG_LEVEL="3",
                   BENCH_PCONV_REFERENCE=str(int(backend == "reference")))
        res = subprocess.run([sys.executable, "-m", "benchmarks.bench_pconv", "--one", "--steps", str(args.steps),
                              "--batch", str(args.batch), "--patch", str(args.patch), "--base_filters",
                              str(args.base_filters), *["--profile"] * args.profile], env=env, capture_output=True,
                             text=True)
        if res.returncode != 0:
            log.error("%s failed: %s", backend, (res.stderr.strip().splitlines() or [""])[-1])
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]) | {"host": platform.node()})
        log.info("%-24s %-8s %7.2f patches/s (%.3f s per batch of %d at %d x %d), peak %.0f MB", rows[-1]["backend"],
                 rows[-1]["device"], rows[-1]["patches_per_s"], rows[-1]["step_s"], args.batch, args.patch,
                 args.patch, rows[-1]["peak_memory_mb"])
        if "ops_leaf" in rows[-1]:
            log.info("%-24s one step: %d operators dispatched, %d leaf operators, %d layout copies; slowest: %s",
                     rows[-1]["backend"], rows[-1]["ops_dispatched"], rows[-1]["ops_leaf"],
                     rows[-1]["layout_copies"], rows[-1]["top_ops_ms"])
    if not rows:
        return 1
    ref = next((r["patches_per_s"] for r in rows if r["backend"].startswith("reference")), None)
    for r in rows:
        r["vs_reference"] = round(r["patches_per_s"] / ref, 3) if ref else ""
        if ref and not r["backend"].startswith("reference"):
            log.info("%s: %.2fx the plain PyTorch reference", r["backend"], r["vs_reference"])
    write_rows(Path(args.out) / f"pconv_throughput_{rows[0]['device'].replace(' ', '_')}.csv", rows)
    return 1 if len(rows) < len(args.backends) else 0


if __name__ == "__main__":
    raise SystemExit(main())
