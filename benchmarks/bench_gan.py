"""GAN training throughput: one discriminator and one generator step (the reference's networks: global
generator, 9 ResNet blocks, 2-scale PatchGAN) on chips of 3 dates x 6 bands at 224 x 224, batch 8, in chips
per second, for --model_cap 16 and 64; on a GPU also with bf16 mixed precision. Each measurement runs in a
fresh process; memory is that process's peak resident size (CPU) or peak CUDA allocation (GPU).

    python -m benchmarks.bench_gan                    # CPU (slow: about a minute a step at cap 64)
    python -m benchmarks.bench_gan --device cuda      # a GPU, fp32 and bf16
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import subprocess
import sys
from pathlib import Path

from benchmarks.common import replace_methods, time_steps, write_rows

log = logging.getLogger("benchmarks.gan")


def one(cap: int, device: str, precision: str, steps: int, size: int = 224, batch: int = 8) -> dict:
    import torch

    from gan_gapfill.gan_model import GAN
    torch.manual_seed(0)
    m = GAN(6, time_steps=3, model_cap=cap, mask_input=True).to(device)
    g, d = m.configure_optimizers()
    replace_methods(m, optimizers=lambda: (g, d), manual_backward=lambda loss: loss.backward(),
                    log_dict=lambda *a, **k: None)
    c = 18
    gen = torch.Generator().manual_seed(0)
    chip = {"x": torch.randn(batch, c, size, size, generator=gen), "guess": torch.randn(batch, c, size, size, generator=gen),
            "seen": (torch.rand(batch, c, size, size, generator=gen) > 0.3).float(),
            "mask": torch.ones(batch, 3, size, size), "target": torch.randn(batch, c, size, size, generator=gen)}
    chip["hidden"] = 1 - chip["seen"]
    chip = {k: v.to(device) for k, v in chip.items()}
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16-mixed" and device.startswith("cuda")
           else contextlib.nullcontext())

    def step():
        with amp:
            m.training_step(chip, 0)

    secs, mem, name = time_steps(step, steps, device)
    return {"model_cap": cap, "precision": precision, "batch": batch, "size": size, "seconds_per_step": round(secs, 3),
            "chips_per_second": round(batch / secs, 3), "peak_mb": round(mem, 1),
            "generator_params": int(sum(p.numel() for p in m.G.parameters())),
            "discriminator_params": int(sum(p.numel() for p in m.Dnet.parameters())),
            "threads": torch.get_num_threads(), "device": f"{device} ({name})"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--caps", type=int, nargs="+", default=[16, 64])
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--size", type=int, default=224, help="chip size in cells (a multiple of 32)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", default=None, help="CSV (default benchmarks/records/gan_throughput_<cpu|gpu>.csv)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)        # internal: cap:precision
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.one:
        cap, prec = args.one.split(":")
        sys.stdout.write(json.dumps(one(int(cap), args.device, prec, args.steps, args.size, args.batch)) + "\n")
        return 0
    gpu = args.device.startswith("cuda")
    rows = []
    for cap in args.caps:
        for prec in ("32", "bf16-mixed") if gpu else ("32",):
            res = subprocess.run([sys.executable, "-m", "benchmarks.bench_gan", "--one", f"{cap}:{prec}", "--device",
                                  args.device, "--steps", str(args.steps), "--size", str(args.size),
                                  "--batch", str(args.batch)], capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            log.info("%s", rows[-1])
    write_rows(Path(args.out or f"benchmarks/records/gan_throughput_{'gpu' if gpu else 'cpu'}.csv"), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
