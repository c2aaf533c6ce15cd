#!/bin/bash
# Does the GP prior matter? The GP-VAE with its default Matern-1/2 prior, a Cauchy and an RBF prior, and the
# N(0, I) prior of a plain VAE (--kernel none), with the same data, budget (25 epochs) and seed, on a 32 x 32
# synthetic field of 120 frames at 90% missing (random, dynamic mask), scored on the 18 test frames next to
# the classical floor. Prints the table of gpvae/README.md; results in results/bench_gpvae/.
#   bash benchmarks/gpvae_prior.sh          # about 15 min on 2 CPU cores
source "$(dirname "$0")/common.sh" bench_gpvae
F=data/synthetic_crop120.nc
[ -f $F ] || $PY -m data_generation.make_synthetic_field --out $F --n_time 120 --ny 32 --nx 32 --seed 1
D=(--data_path $F --mask_kind random --mask_type dynamic --prob_masking 0.9 --max_epochs 25 --patience 25
   --seed 0 --checkpoint_dir "$CK")
$PY gpvae/train_gpvae.py "${D[@]}" --kernel matern --matern_nu 0.5 --run_name matern12
$PY gpvae/train_gpvae.py "${D[@]}" --kernel cauchy --run_name cauchy
$PY gpvae/train_gpvae.py "${D[@]}" --kernel rbf --run_name rbf
$PY gpvae/train_gpvae.py "${D[@]}" --kernel none --run_name none
$PY gpvae/test_gpvae.py --checkpoints "$CK"/{matern12,cauchy,rbf,none} --results_folder "$OUT"
$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {d.name: json.loads((d / "metrics.json").read_text()) for d in out.iterdir() if (d / "metrics.json").exists()}
print("| prior | RMSE (K) | CRPS (K) | 95% coverage |")
print("|---|---|---|---|")
for name in ("matern12", "cauchy", "rbf", "none"):
    m = rows[name]["metrics"]["overall"]
    print(f"| {name} | {m['rmse']:.3f} | {m['crps']:.3f} | {m['coverage95']:.3f} |")
base = rows["matern12"]["baselines"]
for b in ("anomaly_interpolation", "interpolation", "climatology"):
    print(f"| floor: {b} | {base[b]['overall']['rmse']:.3f} | | |")
PYEOF
