"""The conditional GAN that fills cloud gaps in chips of `time_steps` dates x bands (stacked as channels).

Generator `global`: pix2pixHD's global network (7 x 7 conv, 4 stride-2 downsamplings to 16 x `model_cap`
channels, `n_res_blocks` ResNet blocks, 4 upsampling blocks, 3 x 3 conv out; BatchNorm, spectral norm; no
skip links). `unet`: the same layers with skip links from each downsampling level. Its output is the residual
over the chip's first guess (its last conv starts at zero: the untrained generator returns the first guess).
Discriminator: an `n_scales` conditional PatchGAN (input chip and filled chip stacked; kernel 5, 64 to 512
channels, InstanceNorm, LeakyReLU 0.2), the second scale on the chip average-pooled by 2.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

import numpy as np
import torch
from torch import nn
from torch.nn.utils import spectral_norm as sn

from gan_gapfill.gan_data import FieldChips, positions
from gapfill import lightning

if TYPE_CHECKING:
    from pytorch_lightning.core.optimizer import LightningOptimizer


def _block(i, o, k, stride=1, transpose=False):
    pad: Literal["reflect", "zeros"] = "reflect" if k > 1 and stride == 1 else "zeros"
    conv = (nn.ConvTranspose2d(i, o, 3, stride=2, padding=1, output_padding=1) if transpose
            else nn.Conv2d(i, o, k, stride=stride, padding=k // 2, padding_mode=pad))
    return nn.Sequential(sn(conv), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_block(c, c, 3), sn(nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect")),
                                  nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, c, H, W) -> (N, c, H, W)."""
        return x + self.body(x)


class Generator(nn.Module):
    """(N, c_in, H, W) -> residual (N, c_out, H, W); H and W multiples of 16. `skip`: the U-Net variant."""

    def __init__(self, c_in: int, c_out: int, cap: int = 64, n_res_blocks: int = 9, skip: bool = False):
        super().__init__()
        self.skip = skip
        self.inp = _block(c_in, cap, 7)
        chans = [cap * 2 ** i for i in range(5)]                       # cap ... 16 cap
        self.down = nn.ModuleList([_block(chans[i], chans[i + 1], 3, stride=2) for i in range(4)])
        self.res = nn.Sequential(*[ResBlock(chans[4]) for _ in range(n_res_blocks)])
        self.up = nn.ModuleList([_block(chans[4 - i] * (2 if skip and i else 1), chans[3 - i], 3, transpose=True)
                                 for i in range(4)])
        self.out = nn.Conv2d(cap * (2 if skip else 1), c_out, 3, padding=1)
        assert self.out.bias is not None
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, c_in, H, W), H and W multiples of 16 -> residual (N, c_out, H, W)."""
        h = self.inp(x)
        skips = [h]
        for d in self.down:
            h = d(h)
            skips.append(h)
        h = self.res(h)
        for i, u in enumerate(self.up):
            if self.skip and i:
                h = torch.cat([h, skips[4 - i]], 1)
            h = u(h)
        if self.skip:
            h = torch.cat([h, skips[0]], 1)
        return self.out(h)


class PatchD(nn.Module):
    """(N, c, H, W) -> patch scores (N, 1, H/8, W/8): pix2pixHD's PatchGAN, three stride-2 layers and a
    stride-1 one."""

    def __init__(self, c_in: int, cap: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        c = c_in
        for i, o in enumerate([cap, cap * 2, cap * 4, cap * 8]):
            layers += [nn.Conv2d(c, o, 5, stride=2 if i < 3 else 1, padding=2)]
            if i:
                layers += [nn.InstanceNorm2d(o, affine=True)]
            layers += [nn.LeakyReLU(0.2, inplace=True)]
            c = o
        layers += [nn.Conv2d(c, 1, 5, padding=2)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, c, H, W) -> patch scores (N, 1, ceil(H/8), ceil(W/8))."""
        return self.net(x)


class Discriminator(nn.Module):
    """`n_scales` PatchGANs; scale s sees the input average-pooled s times. Returns a list of score maps."""

    def __init__(self, c_in: int, cap: int = 64, n_scales: int = 2):
        super().__init__()
        self.nets = nn.ModuleList([PatchD(c_in, cap) for _ in range(n_scales)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (N, c, H, W) -> n_scales score maps, scale s (N, 1, ~H/(8 * 2^s), ~W/(8 * 2^s)) (ceil at each halving)."""
        out = []
        for i, d in enumerate(self.nets):
            if i:
                x = nn.functional.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(d(x))
        return out


def settle_spectral_norm(net: nn.Module, iterations: int = 30) -> None:
    """Power iterations of every spectral-normed layer of `net`, so that its sigma is the weight's largest
    singular value from the start: eval mode runs none, and with the random initial vectors an untrained
    network in eval mode (epoch 0 of the validation) can divide by a sigma near 0."""
    from torch.nn.utils.spectral_norm import SpectralNorm
    with torch.no_grad():
        for m in net.modules():
            for hook in list(m._forward_pre_hooks.values()):
                if isinstance(hook, SpectralNorm):
                    for _ in range(iterations):
                        setattr(m, hook.name, hook.compute_weight(m, do_power_iteration=True))


def cloud_patches(cloud: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """cloud (N, 1, H, W) float -> (N, 1, h, w) 1 where a patch of the score map `score` holds a cloud cell
    (the mask max-pooled to the patch grid)."""
    return nn.functional.adaptive_max_pool2d(cloud, score.shape[-2:])


def hinge_d(real: list, fake: list, cloud: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss on the patches that hold cloud, averaged over scales: real, fake the
    Discriminator's score maps (one (N, 1, h, w) per scale), cloud (N, 1, H, W) -> scalar."""
    out: torch.Tensor | float = 0.0
    for r, f in zip(real, fake, strict=True):
        w = cloud_patches(cloud, r)
        n = w.sum().clamp_min(1.0)
        out = out + ((torch.relu(1 - r) * w).sum() + (torch.relu(1 + f) * w).sum()) / n
    assert isinstance(out, torch.Tensor), "no score maps"
    return out / len(real)


def hinge_g(fake: list, cloud: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss on cloud patches, averaged over scales: fake score maps (one (N, 1, h, w) per
    scale), cloud (N, 1, H, W) -> scalar."""
    out: torch.Tensor | float = 0.0
    for f in fake:
        w = cloud_patches(cloud, f)
        out = out - (f * w).sum() / w.sum().clamp_min(1.0)
    assert isinstance(out, torch.Tensor), "no score maps"
    return out / len(fake)


class GAN(lightning.FieldModule):
    """The cloud-gap GAN on the training engine: manual optimisation, one discriminator and one generator
    step per batch; best.ckpt by the validation frames' cloud-cell SSIM (or `monitor`, set from --select).
    `data` (gan_data.FieldChips) is set before `reconstruct`."""

    monitor = ("valid_ssim", "max")

    def __init__(self, bands: int, time_steps: int = 3, model_cap: int = 64, n_res_blocks: int = 9,
                 generator: str = "global", mask_input: bool = False, n_scales: int = 2, disc_cap: int = 64,
                 alpha: float = 1.0, generator_lr: float = 1e-5, discriminator_lr: float = 4e-5,
                 mask_position: list | None = None):
        super().__init__()
        self.save_hyperparameters()
        c = time_steps * bands
        c_in = 2 * c + (time_steps if mask_input else 0)                  # chip, first guess (, masks)
        self.G = Generator(c_in, c, model_cap, n_res_blocks, skip=generator == "unet")
        self.Dnet = Discriminator(c_in + c, disc_cap, n_scales)
        settle_spectral_norm(self.G)
        self.automatic_optimization = False
        self.data: FieldChips | None = None

    @classmethod
    def from_args(cls, args: dict, bands: int) -> GAN:
        keys = ("time_steps", "model_cap", "n_res_blocks", "generator", "mask_input", "n_scales", "disc_cap", "alpha",
                "generator_lr", "discriminator_lr", "mask_position")
        return cls(bands, **{k: args[k] for k in keys})

    def inputs(self, chip: dict) -> torch.Tensor:
        """(N, 2 D B (+ D), H, W): the chip (first guess in its gaps), the first guess (, the masks)."""
        parts = [chip["x"], chip["guess"]] + ([chip["mask"]] if self.hparams.mask_input else [])
        return torch.cat(parts, 1)

    def fill(self, chip: dict, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, filled) each (N, D*B, H, W): first guess + residual, and seen cells kept."""
        pred = chip["guess"] + self.G(inp)
        return pred, torch.where(chip["seen"] > 0, chip["x"], pred)

    @staticmethod
    def pad16(chip: dict) -> dict:
        """Chip tensors padded at the bottom and right to multiples of 16 (the generator's four halvings), at
        least 32 (a 2 x 2 bottleneck for the reflect padding): values repeat the edge, `hidden` (the loss
        cells) is 0 in the padding."""
        H, W = chip["x"].shape[-2:]
        pad = (0, max(32 - W, (-W) % 16), 0, max(32 - H, (-H) % 16))
        if not any(pad):
            return chip
        return {k: nn.functional.pad(v, pad, mode="constant" if k == "hidden" else "replicate") for k, v in chip.items()}

    def training_step(self, chip, batch_idx):
        """chip: dict of (N, C, H, W) tensors (x, guess, seen, hidden, target: C = D*B; mask: D); one
        discriminator and one generator step."""
        chip = self.pad16(chip)
        opt_g, opt_d = cast("list[LightningOptimizer]", self.optimizers())      # two optimizers: a list
        inp = self.inputs(chip)
        pred, filled = self.fill(chip, inp)
        loss_cells = chip["hidden"]
        cloud = loss_cells.amax(1, keepdim=True)                                     # (N, 1, H, W)
        real = torch.where(loss_cells > 0, chip["target"], filled.detach())
        d_loss = hinge_d(self.Dnet(torch.cat([inp, real], 1)), self.Dnet(torch.cat([inp, filled.detach()], 1)), cloud)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        mse = (((pred - chip["target"]) ** 2) * loss_cells).sum() / loss_cells.sum().clamp_min(1.0)
        g_loss = hinge_g(self.Dnet(torch.cat([inp, filled], 1)), cloud) + self.hparams.alpha * mse
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        n = chip["x"].shape[0]
        self.log_dict({"train_loss": mse, "g_loss": g_loss, "d_loss": d_loss}, on_step=False, on_epoch=True,
                      batch_size=n)

    def configure_optimizers(self):
        g = torch.optim.Adam(self.G.parameters(), lr=self.hparams.generator_lr, betas=(0.0, 0.9))
        d = torch.optim.Adam(self.Dnet.parameters(), lr=self.hparams.discriminator_lr, betas=(0.0, 0.9))
        return [g, d]

    @torch.no_grad()
    def reconstruct(self, frames, batch_size: int = 4):
        """(mean, None), each (len(frames), B, Y, X) physical units: each frame filled from its whole-frame chip
        (the frame at the first masked date). Call in eval mode: the result does not depend on batch_size."""
        D = self.data
        assert D is not None, "set .data first"
        pos = positions(self.hparams.mask_position, D.D)[0]
        frames = list(frames)
        resid = np.empty((len(frames), D.B, D.Y, D.X), np.float32)
        for s in range(0, len(frames), batch_size):
            group = frames[s:s + batch_size]
            dates, chips = zip(*[D.frame_chip(t, pos) for t in group], strict=True)
            chip = {k: torch.stack([c[k] for c in chips]).to(self.device) for k in chips[0]}
            chip = self.pad16(chip)
            pred, _ = self.fill(chip, self.inputs(chip))
            r = (pred - chip["guess"])[..., :D.Y, :D.X].float().cpu().numpy()          # the residual
            for j, d in enumerate(dates):
                resid[s + j] = r[j, d * D.B:(d + 1) * D.B]
        v = D.view
        std = D.normalizer.std.reshape(1, -1, 1, 1)
        mean = v.guess_physical(frames) + resid * std                # a zero residual: the first guess exactly
        return np.where(v.seen[frames], v.visible[frames], mean), None
