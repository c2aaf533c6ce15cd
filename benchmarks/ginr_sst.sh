#!/bin/bash
# GINR on a field nobody here made: the eofs SST anomalies (50 winters, 18 x 30 grid, land NaN), 80% clouds
# moving every frame, scored on the same hidden cells as DINEOF, the exact GP, the variational GP and the
# classical floor (default splits, seed 0). GINR with the climatology as first guess (its anomalies are the
# field here) and with none, 32 eigenvectors, a 128 x 3 network. Prints the table of ginr/README.md; results in
# results/bench_ginr_sst/.
#   bash benchmarks/ginr_sst.sh          # about 5 min on 2 CPU cores
source "$(dirname "$0")/common.sh" bench_ginr_sst
F=data/real/sst_ndjfm_anom.nc
[ -f $F ] || $PY -m data_generation.prepare_real_datasets --out_dir data/real
M=(--data_path $F --mask_kind clouds --mask_type dynamic --cloud_range 0.8,0.8 --seed 0)
G=(--n_fourier 32 --hidden_dim 128 --n_layers 3 --max_epochs 60 --batch_size 2 --n_nodes_in_sample 400 --lr 1e-3)
$PY ginr/train_ginr.py "${M[@]}" "${G[@]}" --first_guess climatology --checkpoint_dir "$CK" --run_name ginr_clim
$PY ginr/train_ginr.py "${M[@]}" "${G[@]}" --first_guess none --checkpoint_dir "$CK" --run_name ginr_none
$PY ginr/train_ginr.py "${M[@]}" "${G[@]}" --first_guess anomaly_interpolation --checkpoint_dir "$CK" \
    --run_name ginr_anom
$PY ginr/test_ginr.py --checkpoints "$CK"/ginr_{clim,none,anom} --results_folder "$OUT/ginr"
$PY baselines/train_baselines.py "${M[@]}" --method dineof --checkpoint_dir "$CK" --run_name dineof
$PY baselines/test_baselines.py --checkpoints "$CK"/dineof --results_folder "$OUT/baselines"
$PY exact_gp_related/train_exact_gp.py "${M[@]}" --timekernel matern --spacekernel matern --max_iters 100 \
    --checkpoint_dir "$CK" --run_name exact_gp
$PY exact_gp_related/test_exact_gp.py --checkpoints "$CK"/exact_gp --results_folder "$OUT/exact_gp"
$PY variational_gp_related/train_variational_gp.py "${M[@]}" --timekernel matern --spacekernel matern \
    --num_inducing_points 256 --batch_size 512 --checkpoint_dir "$CK" --run_name variational_gp
$PY variational_gp_related/test_variational_gp.py --checkpoints "$CK"/variational_gp --results_folder "$OUT/variational_gp"
$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
rows = {p.parent.name: json.loads(p.read_text()) for p in Path(sys.argv[1]).glob("*/*/metrics.json")}
def cell(v, f="{:.3f}"):
    return f.format(v) if isinstance(v, float) else ""
print("| method | RMSE (K) | MAE | 95% coverage | CRPS | hidden cells |")
print("|---|---|---|---|---|---|")
order = [("ginr_clim", "GINR, --first_guess climatology"), ("ginr_none", "GINR, --first_guess none"),
         ("ginr_anom", "GINR, --first_guess anomaly_interpolation"), ("dineof", "DINEOF"),
         ("exact_gp", "exact GP (Matern x Matern)"), ("variational_gp", "variational GP (Matern x Matern)")]
for key, name in order:
    r = next((v for k, v in rows.items() if k.startswith(key)), None)
    if r:
        m = r["metrics"]["overall"]
        print(f"| {name} | {m['rmse']:.3f} | {m['mae']:.3f} | {cell(m.get('coverage95'), '{:.2f}')} | "
              f"{cell(m.get('crps'))} | {m['n_scored']} |")
base = next(iter(rows.values()))["baselines"]
for b in ("climatology", "anomaly_interpolation", "persistence", "interpolation"):
    print(f"| floor: {b} | {base[b]['overall']['rmse']:.3f} | {base[b]['overall']['mae']:.3f} | | | |")
PYEOF
