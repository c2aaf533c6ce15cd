#!/bin/bash
# GINR super-resolution: one synthetic field made at two resolutions (32 x 32 and 63 x 63, every other fine
# node a coarse one; 120 frames), GINR trained on the coarse grid at 90% missing (random, dynamic mask, cotangent
# Laplacian, 64 eigenvectors, sine first layer), then evaluated on the aligned embedding of the fine grid, next to
# bicubic upsampling of its coarse reconstruction and of the coarse truth, on the 18 test frames' fine cells.
# Prints the table of ginr/README.md; results in results/bench_ginr_superres/.
#   bash benchmarks/ginr_superres.sh          # about 2 min on 2 CPU cores
source "$(dirname "$0")/common.sh" bench_ginr_superres
C=data/pair_coarse.nc
F=data/pair_fine.nc
[ -f $F ] || $PY -m data_generation.make_synthetic_field --out $C --fine_out $F --ny 32 --nx 32 --n_time 120 --seed 1
for lap in cotangent combinatorial; do
  $PY ginr/train_ginr.py --data_path $C --mask_kind random --mask_type dynamic --prob_masking 0.9 --seed 0 \
      --laplacian $lap --n_fourier 64 --hidden_dim 128 --n_layers 3 --sine --max_epochs 40 --batch_size 2 \
      --n_nodes_in_sample 400 --lr 1e-3 --checkpoint_dir "$CK" --run_name $lap
  $PY ginr/eval_superres.py --checkpoint "$CK/$lap" --fine_data $F --out_dir "$OUT/$lap" --html "$OUT/$lap/view.html"
done
$PY - "$OUT" <<'PYEOF'
import csv, sys
from pathlib import Path
print("| Laplacian | method | fine-grid RMSE (K) | on the new fine nodes |")
print("|---|---|---|---|")
for lap in ("cotangent", "combinatorial"):
    for r in csv.DictReader(open(Path(sys.argv[1]) / lap / "superres.csv")):
        print(f"| {lap} | {r['method']} | {float(r['rmse']):.3f} | {float(r['rmse_new_nodes']):.3f} |")
PYEOF
