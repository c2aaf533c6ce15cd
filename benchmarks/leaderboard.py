"""The benchmark's leaderboard (one row per method x dataset x mask x budget) and its PDF, from the case.json
files `benchmarks.benchmark` writes and the metrics.json files of the runs they name.

Floor rows (climatology, persistence, interpolation, anomaly_interpolation) come from the metrics.json of the
case's DINEOF run (every test scores the floor on its own hidden cells), so each case lists the classical
methods next to the learned ones, and every row carries the best classical RMSE on the same cells.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib
import numpy as np
import xarray as xr
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from gapfill import registry
from gapfill.files import read_json, write_csv
from gapfill.floor import FLOOR, GUESS_TAG
from gapfill.report import image_origin

matplotlib.use("Agg")
log = logging.getLogger("benchmarks.leaderboard")
SCORES = ("rmse", "mae", "r2", "ssim", "crps", "coverage95", "nll", "n_scored")
COLUMNS = ("budget", "dataset", "mask", "method", "status", "reason", *SCORES, "units", "best_classical",
           "best_classical_rmse", "vs_best_classical", "rank", "train_seconds", "test_seconds", "peak_memory_mb",
           "device", "steps", "stop_reason", "first_guess", "first_guess_rmse", "metrics")
CLASSICAL = ("dineof", *FLOOR)
LABEL = {"baselines": "dineof"}            # the benchmark's baselines case is a DINEOF run
ORDER = (*(m for m in registry.methods() if m not in LABEL), *CLASSICAL)   # the registry's order, then classical


def _rows_of_case(case: dict, out: Path) -> list[dict]:
    """The case's own row, plus the floor's rows when it is the DINEOF case."""
    base = {k: case[k] for k in ("budget", "dataset", "mask")}
    method = LABEL.get(case["method"], case["method"])
    if case["status"] != "ok":
        return [{**base, "method": method, "status": case["status"], "reason": case.get("reason", "")}]
    m = read_json(out / case["metrics"], "metrics file")
    ov, cost = m["metrics"]["overall"], m.get("cost") or {}
    rows = [{**base, "method": method, "status": "ok", "reason": "partial" if m.get("partial") else "",
             **{k: ov.get(k) for k in SCORES}, "units": ";".join(m.get("units") or []),
             "train_seconds": cost.get("train_seconds"), "test_seconds": cost.get("test_seconds"),
             "peak_memory_mb": case.get("peak_memory_mb"), "metrics": case["metrics"],
             "device": (m.get("training") or {}).get("device"), "steps": (m.get("training") or {}).get("steps"),
             "stop_reason": (m.get("training") or {}).get("stop_reason"),
             "first_guess": (m.get("training") or {}).get("first_guess_chosen") or "",
             "first_guess_rmse": (m.get("training") or {}).get("first_guess_rmse"),
             "_floor": {k: b["overall"]["rmse"] for k, b in (m.get("baselines") or {}).items()}}]
    if case["method"] == "baselines":
        for name, b in m["baselines"].items():
            rows.append({**base, "method": name, "status": "ok", "reason": "floor, scored in the DINEOF case's test",
                         **{k: b["overall"].get(k) for k in SCORES}, "units": rows[0]["units"],
                         "metrics": case["metrics"]})
    return rows


def collect(out: Path) -> list[dict]:
    """Every row under out/runs, with best_classical, vs_best_classical and rank filled in, sorted."""
    rows = []
    for path in sorted(out.glob("runs/*/*/*/*/case.json")):
        rows += _rows_of_case(read_json(path, "benchmark case"), out)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["budget"], r["dataset"], r["mask"]), []).append(r)
    def classical_of(key):
        return [r for r in groups.get(key, ()) if r["status"] == "ok" and _finite(r["rmse"]) and r["method"] in CLASSICAL]

    for key, group in groups.items():
        ok = [r for r in group if r["status"] == "ok" and _finite(r["rmse"])]
        # a budget without its own DINEOF case (large runs of one method) is held against the default's floor,
        # scored on the same hidden cells (same data, mask and seed)
        classical = classical_of(key) or [r for r in classical_of(("default", *key[1:]))
                                          if {r["n_scored"]} == {o["n_scored"] for o in ok}]
        if len({r["n_scored"] for r in ok}) > 1:
            log.warning("case %s: methods were scored on different numbers of cells %s", "/".join(key),
                        sorted({r["n_scored"] for r in ok}))
        best = min(classical, key=lambda r: r["rmse"], default=None)
        if best is None and ok:      # no DINEOF case here (e.g. --only exact_gp): the floor its own test scored
            floor = {k: v for k, v in ok[0]["_floor"].items() if _finite(v)}
            best = {"method": min(floor, key=lambda k: floor[k]), "rmse": min(floor.values())} if floor else None
        for rank, r in enumerate(sorted(ok, key=lambda r: r["rmse"]), 1):
            r["rank"] = rank
        for r in group:
            if best is not None:
                r.update(best_classical=best["method"], best_classical_rmse=best["rmse"])
                if r in ok:
                    r["vs_best_classical"] = r["rmse"] / best["rmse"] - 1
    key_order = {m: i for i, m in enumerate(ORDER)}
    rows.sort(key=lambda r: (r["budget"] != "default", r["budget"], r["dataset"], r["mask"],
                             r.get("rank") or 99, key_order.get(r["method"], 99)))
    return [{c: r.get(c, "") for c in COLUMNS} for r in rows]


def _finite(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def write(out: Path) -> list[dict]:
    """leaderboard.csv and benchmark.pdf in `out`; returns the rows."""
    rows = collect(out)
    if not rows:
        log.warning("%s: no finished case yet; nothing to report", out)
        return rows
    write_csv(out / "leaderboard.csv", rows)
    report(rows, out / "benchmark.pdf", out)
    log.info("wrote %s and %s (%d rows)", out / "leaderboard.csv", out / "benchmark.pdf", len(rows))
    return rows


def markdown(rows: list[dict], budget: str = "default") -> str:
    """The results table of benchmarks/README.md: one line per case, each method's RMSE (best in bold, a learned method that
    beats the best classical one marked *), n/a or failed; then the best classical method and its RMSE."""
    rows = [r for r in rows if r["budget"] == budget]
    methods = [m for m in ORDER if m not in FLOOR and any(r["method"] == m for r in rows)]
    lines = ["| dataset | mask | " + " | ".join(methods) + " | best classical |", "|---" * (len(methods) + 3) + "|"]
    for case in dict.fromkeys((r["dataset"], r["mask"]) for r in rows):
        group = {r["method"]: r for r in rows if (r["dataset"], r["mask"]) == case}
        cells = []
        for m in methods:
            r = group.get(m)
            if r is None or r["status"] != "ok":
                cells.append("" if r is None else r["status"])
                continue
            text = f"{r['rmse']:.3g}" + ("*" if m != "dineof" and r["vs_best_classical"] < 0 else "")
            guess = f" ({GUESS_TAG.get(r['first_guess'], r['first_guess'])}" if r.get("first_guess") else ""
            if guess and r.get("first_guess_rmse") is not None:          # the guess alone, on the same cells
                guess += f" {float(r['first_guess_rmse']):.3g}"
            guess += ")" if guess else ""
            cells.append((f"**{text}**" if r["rank"] == 1 else text) + guess)
        ref = next(iter(group.values()))
        floor = f"{ref['best_classical']} {ref['best_classical_rmse']:.3g}" if ref["best_classical"] else ""
        lines.append(f"| {case[0]} | {case[1]} | " + " | ".join(cells) + f" | {floor} |")
    where: dict[tuple, list[str]] = {}            # (method, status, reason) -> datasets
    for r in rows:
        if r["status"] not in ("ok", "") and r["method"] in methods:
            where.setdefault((r["method"], r["status"], r["reason"]), []).append(r["dataset"])
    notes = [f"- {m} {st} on {', '.join(dict.fromkeys(ds))}: {why}" for (m, st, why), ds in where.items()]
    return "\n".join(lines + ([""] if notes else []) + notes)


def _g(v, digits: int = 3) -> str:
    return f"{v:.{digits}g}" if _finite(v) else ""


# ---------------------------------------------------------------- the PDF
def report(rows: list[dict], pdf_path: Path, out: Path) -> Path:
    """Rank heatmap, RMSE against missing rate, CRPS and coverage, cost against accuracy, reconstructions."""
    main = [r for r in rows if r["budget"] == "default"] or rows
    cases = list(dict.fromkeys((r["dataset"], r["mask"]) for r in main))
    methods = [m for m in ORDER if any(r["method"] == m for r in main)]
    with PdfPages(pdf_path) as pdf:
        pdf.savefig(_heatmap(main, cases, methods))
        pdf.savefig(_missing_rate(main, methods))
        pdf.savefig(_probabilistic(main, cases))
        pdf.savefig(_cost(main, methods))
        for start in range(0, len(cases), 4):
            pdf.savefig(_reconstructions(main, cases[start:start + 4], methods, out))
    return pdf_path


def _heatmap(rows, cases, methods) -> Figure:
    fig = Figure(figsize=(max(8.0, 0.45 * len(cases) + 3), 0.4 * len(methods) + 3))
    ax = fig.subplots()
    rank = np.full((len(methods), len(cases)), np.nan)
    for r in rows:
        if r["method"] in methods:
            i, j = methods.index(r["method"]), cases.index((r["dataset"], r["mask"]))
            if r["status"] == "ok":
                rank[i, j] = r["rank"]
            ax.text(j, i, str(r["rank"]) if r["status"] == "ok" else ("n/a" if r["status"] == "n/a" else "x"),
                    ha="center", va="center", fontsize=6)
    cmap = matplotlib.colormaps["viridis_r"].copy()
    cmap.set_bad("0.85")
    im = ax.imshow(np.ma.masked_invalid(rank), cmap=cmap, aspect="auto")
    fig.colorbar(im, ax=ax, label="rank by RMSE (1 = best)")
    ax.set_yticks(range(len(methods)), methods, fontsize=8)
    ax.set_xticks(range(len(cases)), [f"{d}/{m}" for d, m in cases], rotation=90, fontsize=6)
    ax.set_title("rank of each method per case (grey: n/a or failed, x: failed)", fontsize=10)
    fig.tight_layout()
    return fig


def _missing_rate(rows, methods) -> Figure:
    datasets = sorted({r["dataset"] for r in rows if r["mask"].startswith("random")})
    fig = Figure(figsize=(11, 3.2 * max(1, math.ceil(len(datasets) / 3))))
    axes = np.atleast_1d(fig.subplots(max(1, math.ceil(len(datasets) / 3)), 3, squeeze=False).ravel())
    for ax, d in zip(axes, datasets, strict=False):
        for k, m in enumerate(methods):
            for mode, ls in (("fixed", "-"), ("dynamic", "--")):
                pts = sorted((int(r["mask"][6:8]), r["rmse"]) for r in rows if r["dataset"] == d and r["method"] == m
                             and r["status"] == "ok" and r["mask"].startswith("random") and r["mask"].endswith(mode))
                if pts:
                    ax.plot(*zip(*pts, strict=True), ls, marker="o", color=f"C{k % 10}", ms=3,
                            label=m if mode == "fixed" or not ax.get_legend_handles_labels()[1].count(m) else None)
        ax.set_title(f"{d} (solid: fixed, dashed: dynamic)", fontsize=9)
        ax.set_xlabel("missing %", fontsize=8)
        ax.set_ylabel("RMSE", fontsize=8)
        ax.set_yscale("log")
    for ax in axes[len(datasets):]:
        ax.axis("off")
    if datasets:
        axes[0].legend(fontsize=6)
    fig.suptitle("RMSE on the hidden cells against the share of cells missing (random masks)", fontsize=10)
    fig.tight_layout()
    return fig


def _probabilistic(rows, cases) -> Figure:
    """CRPS over the best classical method's MAE (a deterministic forecast's CRPS is its MAE; below 1 the
    predictive distribution beats the floor's point values, unit-free across datasets) and 95% coverage."""
    mae = {(r["dataset"], r["mask"]): r["mae"] for r in rows if r["method"] == r["best_classical"]}
    prob = [r for r in rows if r["status"] == "ok" and _finite(r["crps"]) and _finite(mae.get((r["dataset"], r["mask"])))]
    names = sorted({r["method"] for r in prob}, key=lambda m: ORDER.index(m) if m in ORDER else 99)
    fig = Figure(figsize=(11, 7))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    width = 0.8 / max(1, len(names))
    for k, m in enumerate(names):
        for ax, key in ((ax1, "crps"), (ax2, "coverage95")):
            pts = [(cases.index((r["dataset"], r["mask"])),
                    r[key] / mae[r["dataset"], r["mask"]] if key == "crps" else r[key]) for r in prob if r["method"] == m]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.bar(np.array(x) + k * width, y, width, color=f"C{k % 10}", label=m)
    ax1.set_yscale("log")
    ax1.axhline(1.0, color="k", lw=0.8, ls="--")
    ax1.set_ylabel("CRPS / MAE of the best classical")
    ax1.legend(fontsize=7)
    ax2.axhline(0.95, color="k", lw=0.8, ls="--")
    ax2.set_ylabel("95% interval coverage")
    ax2.set_ylim(0, 1.05)
    ax2.set_xticks(np.arange(len(cases)) + 0.4 - width / 2, [f"{d}/{m}" for d, m in cases], rotation=90, fontsize=6)
    ax1.set_title("probabilistic methods: CRPS (below 1 beats the floor's point values) and coverage (0.95 is honest)",
                  fontsize=10)
    fig.tight_layout()
    return fig


def _cost(rows, methods) -> Figure:
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2, sharey=True)
    for k, m in enumerate(methods):
        pts = [r for r in rows if r["method"] == m and r["status"] == "ok" and _finite(r["vs_best_classical"])
               and _finite(r["train_seconds"])]
        if not pts:
            continue
        y = [1 + r["vs_best_classical"] for r in pts]
        axes[0].scatter([r["train_seconds"] + (r["test_seconds"] or 0) for r in pts], y, s=12, color=f"C{k % 10}", label=m)
        mem = [(r["peak_memory_mb"], v) for r, v in zip(pts, y, strict=True) if _finite(r["peak_memory_mb"])]
        if mem:
            axes[1].scatter(*zip(*mem, strict=True), s=12, color=f"C{k % 10}")
    for ax, xlabel in zip(axes, ("train + test seconds", "peak resident memory, MB (train or test process)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("RMSE / best classical RMSE (below 1: beats the floor)")
    axes[0].legend(fontsize=7)
    fig.suptitle("cost against accuracy, one point per case", fontsize=10)
    fig.tight_layout()
    return fig


def _image(ds: xr.Dataset, var: str, t: int) -> np.ndarray:
    """(Y, X) of band 0, or (Y, X, 3) when the bands are red, green, blue; land NaN."""
    a = ds[var].isel(time=t).transpose("band", "y", "x").values
    return np.clip(np.moveaxis(a[:3], 0, -1), 0, 1) if a.shape[0] == 3 and ds.attrs.get("units", "") == "1;1;1" else a[0]


def _reconstructions(rows, cases, methods, out: Path) -> Figure:
    """Per case a row: the observed input, the truth, and every method's reconstruction of the first test frame."""
    methods = [m for m in methods if m not in FLOOR]         # the floor is scored, not saved: its best is named
    ncol = 2 + len(methods)
    fig = Figure(figsize=(1.6 * ncol, 1.8 * len(cases) + 0.6))
    axes = fig.subplots(len(cases), ncol, squeeze=False)
    for i, (d, mk) in enumerate(cases):
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
        have = {r["method"]: r for r in rows if (r["dataset"], r["mask"]) == (d, mk) and r["status"] == "ok"}
        preds = {m: out / Path(r["metrics"]).parent / "prediction.nc" for m, r in have.items() if r["metrics"]}
        first = next((p for p in preds.values() if p.exists()), None)
        if first is None:
            continue
        with xr.open_dataset(first, decode_times=False) as ds:
            truth, obs = _image(ds, "truth", 0), ds["observed"].isel(time=0).values.astype(bool)
            origin = image_origin(ds)                     # north up on a map, row 0 on top in a photograph
        lo, hi = np.nanpercentile(truth, [1, 99])
        shown = np.where(obs[..., None] if truth.ndim == 3 else obs, truth, np.nan)
        for ax, img, title in ((axes[i, 0], shown, "observed"), (axes[i, 1], truth, "truth")):
            ax.imshow(img, vmin=lo, vmax=hi, cmap="viridis", origin=origin)
            ax.set_title(title, fontsize=7)
        best = next((r for r in rows if (r["dataset"], r["mask"]) == (d, mk) and r["best_classical"]), None)
        floor = f"\nbest classical:\n{best['best_classical']} {best['best_classical_rmse']:.3g}" if best else ""
        axes[i, 0].set_ylabel(f"{d}\n{mk}{floor}", fontsize=7)
        for j, m in enumerate(methods):
            ax = axes[i, 2 + j]
            if m not in have:
                ax.text(0.5, 0.5, next((r["status"] for r in rows if (r["dataset"], r["mask"], r["method"]) ==
                                        (d, mk, m)), "not run"), ha="center", va="center", fontsize=7)
                continue
            with xr.open_dataset(preds[m], decode_times=False) as ds:
                ax.imshow(_image(ds, "mean", 0), vmin=lo, vmax=hi, cmap="viridis", origin=origin)
            ax.set_title(f"{m}\nRMSE {have[m]['rmse']:.3g}", fontsize=6)
    fig.suptitle("first test frame of each case (band 0, or RGB) by every method; RMSE over all test frames",
                 fontsize=9)
    fig.tight_layout()
    return fig
