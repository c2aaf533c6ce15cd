"""Every benchmarks/bench_*.py at its smallest size, so that none can silently break: each writes its CSV
with finite, positive timings (the README's throughput tables come from these scripts at full size)."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, script, *args, out=None) -> list[dict]:
    out = out or tmp_path
    res = subprocess.run([sys.executable, "-m", f"benchmarks.{script}", *args, "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    files = sorted(Path(tmp_path).rglob("*.csv"))
    assert len(files) == 1, files
    with open(files[0]) as f:
        return list(csv.DictReader(f))


def test_bench_pconv_times_the_unet_on_both_backends_against_a_reference_of_the_same_size(tmp_path):
    rows = {r["backend"]: r for r in _run(tmp_path, "bench_pconv", "--steps", "1", "--batch", "2", "--patch", "16",
                                          "--base_filters", "4", "--profile")}
    assert set(rows) == {"reference (plain torch)", "torch", "tensorflow"}
    assert all(r["loss_finite"] == "True" and float(r["patches_per_s"]) > 0 for r in rows.values())
    assert float(rows["reference (plain torch)"]["vs_reference"]) == 1.0
    ratio = float(rows["torch"]["patches_per_s"]) / float(rows["reference (plain torch)"]["patches_per_s"])
    assert float(rows["torch"]["vs_reference"]) == pytest.approx(ratio, rel=0.01)
    # the same network: Keras counts each BatchNorm's moving mean and variance as well, 2 x 84 channels here
    # (depth 4 at 16 x 16, filters 4, 8, 16, 32: encoder BN 8 + 16 + 32, decoder BN 4 + 8 + 16)
    assert int(rows["torch"]["params"]) == int(rows["reference (plain torch)"]["params"]) + 2 * 84
    assert rows["torch"]["params"] == rows["tensorflow"]["params"]
    # --profile (torch runs): two forward convolutions (values, mask window sums) in each of 2 x 4 layers
    for name in ("torch", "reference (plain torch)"):
        assert int(rows[name]["convolutions"]) == 2 * 2 * 4
        assert 0 < int(rows[name]["layout_copies"]) < int(rows[name]["ops_leaf"])
    assert rows["tensorflow"]["convolutions"] == ""


def test_bench_gan_smallest(tmp_path):
    (row,) = _run(tmp_path, "bench_gan", "--caps", "8", "--steps", "1", "--size", "32", "--batch", "1",
                  out=tmp_path / "gan.csv")
    assert row["size"] == "32" and float(row["chips_per_second"]) > 0 and int(row["generator_params"]) > 0


def test_bench_ginr_smallest(tmp_path):
    rows = _run(tmp_path, "bench_ginr", "--k", "4", "--degrees", "30", "--steps", "1", "--nodes", "50", "--frames", "4",
                out=tmp_path / "ginr.csv")
    embeds = [r for r in rows if r["what"].startswith("embed")]
    assert len(embeds) == 2 and all(r["cells"] == str(7 * 12) for r in embeds)      # 30-degree grid: 7 x 12
    assert float(rows[-1]["cells_per_second"]) > 0


def test_bench_gp_smallest(tmp_path):
    rows = _run(tmp_path, "bench_gp", "--sizes", "64")
    assert {r["model"] for r in rows} == {"exact", "variational"} and all(float(r["train_s"]) > 0 for r in rows)


def test_bench_gp_grids_smallest(tmp_path):
    (row,) = _run(tmp_path, "bench_gp", "--grids", "8", "--grid_models", "kron_multiply")
    assert row["grid"] == "365x8x8" and int(row["cells"]) == 365 * 64 and float(row["train_step_s"]) > 0


def test_bench_gpvae_smallest(tmp_path):
    (row,) = _run(tmp_path, "bench_gpvae", "--windows", "8", "--frames", "8", "--size", "16", "--steps", "1")
    assert row["window"] == "8" and row["loss_finite"] == "True" and float(row["windows_per_s"]) > 0


@pytest.mark.parametrize("script", sorted((ROOT / "benchmarks").glob("*.sh")), ids=lambda p: p.name)
def test_shell_benchmarks_parse_and_share_one_preamble(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if not script.name.startswith("submit_") and script.name != "common.sh":
        assert 'source "$(dirname "$0")/common.sh" bench_' in script.read_text()


def test_the_shared_preamble_moves_to_the_root_and_lets_the_environment_choose_folders(tmp_path):
    show = f'source {ROOT / "benchmarks" / "common.sh"} bench_x; echo "$PWD|$OUT|$CK"; false; echo not-reached'
    res = subprocess.run(["bash", "-c", show], cwd=tmp_path, capture_output=True, text=True)
    assert res.stdout.split() == [f"{ROOT}|results/bench_x|checkpoints/bench_x"] and res.returncode == 1  # set -e
    res = subprocess.run(["bash", "-c", show], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "OUT": "/o", "CK": "/c"})
    assert res.stdout.split() == [f"{ROOT}|/o|/c"]
