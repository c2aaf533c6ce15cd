#!/bin/bash
# The GAN's options on the same data and budget: the reference's global generator against the U-Net, with and
# without the cloud masks as input, and with and without the first guess (linear interpolation in time).
# Data: a 32 x 32 HLS-like multispectral field of 40 dates (6 bands, sensor noise 0.001), clouds at date 2
# (20-60%), 8 epochs of 64 chips of 32 x 32, seed 0. Scored by create_stats on the test chips (the other dates
# clear) and by test_gan on the common protocol (every test frame under 20-60% clouds).
# Prints the table of gan_gapfill/README.md; results in results/bench_gan/.
#   bash benchmarks/gan_variants.sh          # about 8 min on 2 CPU cores
source "$(dirname "$0")/common.sh" bench_gan
F=data/multispectral_small.nc
[ -f $F ] || $PY -m data_generation.make_multispectral --out $F --n_time 40 --ny 32 --nx 32 --noise 0.001
B=(--data_path $F --epochs 8 --batch_size 4 --model_cap 8 --disc_cap 8 --n_res_blocks 2 --mask_position 2
   --cloud_range 0.2 0.6 --chip_size 32 --training_length 256 --alpha 50 --generator_lr 1e-3 --discriminator_lr 1e-3
   --seed 0 --checkpoint_dir "$CK")
$PY gan_gapfill/train_gan.py "${B[@]}" --generator global --mask_input --run_name global_mask
$PY gan_gapfill/train_gan.py "${B[@]}" --generator unet --mask_input --run_name unet_mask
$PY gan_gapfill/train_gan.py "${B[@]}" --generator unet --run_name unet_nomask
$PY gan_gapfill/train_gan.py "${B[@]}" --generator unet --mask_input --first_guess none --run_name unet_mask_noguess
for r in global_mask unet_mask unet_nomask unet_mask_noguess; do
  $PY gan_gapfill/create_stats.py --checkpoint_dir "$CK/$r" --out_dir "$OUT/stats/$r"
done
$PY gan_gapfill/test_gan.py --checkpoints "$CK"/{global_mask,unet_mask,unet_nomask,unet_mask_noguess} \
    --results_folder "$OUT/test"
$PY - "$OUT" <<'PYEOF'
import csv, json, sys
from pathlib import Path
import numpy as np
out = Path(sys.argv[1])
names = {"global_mask": "global (the reference's), masks as input", "unet_mask": "U-Net, masks as input",
         "unet_nomask": "U-Net, no mask input", "unet_mask_noguess": "U-Net, masks, no first guess (zero fill)"}
print("| generator | chips: cloud RMSE | chips: SSIM | time interpolation | frames: RMSE | frames: SSIM |")
print("|---|---|---|---|---|---|")
for key, name in names.items():
    rows = list(csv.DictReader(open(out / "stats" / key / "stats_per_image.csv")))
    err = np.array([float(r["mse"]) for r in rows]); n = np.array([float(r["cloud_fraction"]) for r in rows])
    rmse = np.sqrt(np.sum(err * n) / np.sum(n))
    base = np.sqrt(np.sum(np.array([float(r["rmse_time_interpolation"]) ** 2 for r in rows]) * n) / np.sum(n))
    ssim = np.mean([float(r["ssim"]) for r in rows])
    m = json.loads(next((out / "test").glob(f"{key}*/metrics.json")).read_text())["metrics"]["overall"]
    print(f"| {name} | {rmse:.5f} | {ssim:.3f} | {base:.5f} | {m['rmse']:.5f} | {m['ssim']:.3f} |")
m = json.loads(next((out / "test").glob("unet_mask*/metrics.json")).read_text())["baselines"]
for b in ("climatology", "persistence", "interpolation", "anomaly_interpolation"):
    print(f"| floor: {b} | | | | {m[b]['overall']['rmse']:.5f} | {m[b]['overall']['ssim']:.3f} |")
PYEOF
