#!/bin/bash
# The PConv UNet's first guess, context frames and training length on the default field (90% random fixed,
# the first 20 test frames), and on the eofs SST field (80% clouds, dynamic) next to every classical
# baseline, DINEOF included. Writes results/bench_pconv/{default,sst}/ with a leaderboard each.
#   bash benchmarks/pconv_first_guess.sh            # about 25 min on 2 CPU cores
#   ONLY=sst bash benchmarks/pconv_first_guess.sh   # the SST part alone (about 3 min)
source "$(dirname "$0")/common.sh" bench_pconv
export KERAS_BACKEND=${KERAS_BACKEND:-tensorflow}
[ -f data/synthetic_default.nc ] || $PY -m data_generation.make_synthetic_field --out data/synthetic_default.nc
[ -f data/real/sst_ndjfm_anom.nc ] || $PY -m data_generation.prepare_real_datasets --out_dir data/real --only sst_ndjfm_anom

if [ "${ONLY:-}" != sst ]; then
  D=(--data_path data/synthetic_default.nc --mask_kind random --mask_type fixed --prob_masking 0.9)
  P=(--base_filters 16 --lr 1e-3 --patch_size 64 --steps_per_epoch 100 --checkpoint_dir "$CK/default")
  $PY baselines/train_baselines.py "${D[@]}" --method interpolation --checkpoint_dir "$CK/default"
  $PY pconv_inpainting/train_pconv.py "${D[@]}" "${P[@]}" --max_iters 1200 --context_frames 2 --first_guess interpolation --run_name interp_ctx2
  $PY pconv_inpainting/train_pconv.py "${D[@]}" "${P[@]}" --max_iters 1200 --context_frames 2 --first_guess anomaly_interpolation --run_name anom_ctx2
  $PY pconv_inpainting/train_pconv.py "${D[@]}" "${P[@]}" --max_iters 1200 --context_frames 2 --first_guess none --run_name none_ctx2
  $PY pconv_inpainting/train_pconv.py "${D[@]}" "${P[@]}" --max_iters 1200 --context_frames 0 --first_guess interpolation --run_name interp_ctx0
  $PY pconv_inpainting/test_pconv.py --checkpoints "$CK"/default/*_ctx*/ --results_folder "$OUT/default/pconv" --num_frames_test 20
  $PY baselines/test_baselines.py --checkpoints "$CK"/default/baselines_*/ --results_folder "$OUT/default/baselines" --num_frames_test 20
  $PY -m gapfill.report compare --results "$OUT/default" --out "$OUT/default/comparison"
fi

S=(--data_path data/real/sst_ndjfm_anom.nc --mask_kind clouds --mask_type dynamic --cloud_range 0.8,0.8)
for m in climatology persistence interpolation anomaly_interpolation dineof; do
  $PY baselines/train_baselines.py "${S[@]}" --method $m --checkpoint_dir "$CK/sst"
done
$PY pconv_inpainting/train_pconv.py "${S[@]}" --base_filters 16 --lr 1e-3 --steps_per_epoch 50 --max_iters 1000 \
  --context_frames 2 --first_guess climatology --all_frames --predict_variance --checkpoint_dir "$CK/sst" --run_name pconv_sst
$PY pconv_inpainting/test_pconv.py --checkpoints "$CK/sst/pconv_sst" --results_folder "$OUT/sst/pconv"
$PY baselines/test_baselines.py --checkpoints "$CK"/sst/baselines_*/ --results_folder "$OUT/sst/baselines"
$PY -m gapfill.report compare --results "$OUT/sst" --out "$OUT/sst/comparison"
