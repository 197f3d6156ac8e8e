"""Evaluation figures (matplotlib, Agg backend chosen inside each function, never at import)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.base import SurvivalModel
from training.metrics import Evaluation, risk_tertiles

TERTILE_LABELS = ("low risk", "intermediate risk", "high risk")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def calibration_plot(table: pd.DataFrame, horizon_days: float, path: Path, *, title: str = "") -> Path:
    """Predicted vs observed (Kaplan-Meier) survival at a horizon, per quantile group."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    if len(table):
        yerr = np.vstack([table["observed"] - table["observed_lo"], table["observed_hi"] - table["observed"]])
        ax.errorbar(table["predicted"], table["observed"], yerr=np.nan_to_num(np.abs(yerr)), fmt="o-", capsize=3,
                    label="model (KM 95% CI)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"predicted survival at {horizon_days:.0f} days")
    ax.set_ylabel("observed survival (Kaplan-Meier)")
    ax.set_title(title or "Calibration")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def km_by_tertile(time: np.ndarray, event: np.ndarray, tertile: np.ndarray, path: Path, *, title: str = "") -> Path:
    """Kaplan-Meier curves of the test patients in each predicted-risk tertile, with a log-rank p-value."""
    from sksurv.compare import compare_survival
    from sksurv.nonparametric import kaplan_meier_estimator
    from sksurv.util import Surv

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, label in enumerate(TERTILE_LABELS):
        idx = tertile == k
        if idx.sum() == 0:
            continue
        x, s = kaplan_meier_estimator(event[idx], time[idx])
        ax.step(np.r_[0, x], np.r_[1, s], where="post", label=f"{label} (n={int(idx.sum())})")
    p_text = ""
    if len(np.unique(tertile)) > 1 and event.any():
        try:
            _, p = compare_survival(Surv.from_arrays(event, time), tertile)
            p_text = f", log-rank p={p:.2g}"
        except ValueError:
            pass
    ax.set_xlabel("days")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ax.set_title((title or "Kaplan-Meier by predicted-risk tertile") + p_text, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def subgroup_plot(table: pd.DataFrame, path: Path, *, title: str = "") -> Path:
    """C-index per cancer type with bootstrap 95% CIs (forest plot)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 0.5 * max(len(table), 2) + 1.2))
    if len(table):
        y = np.arange(len(table))
        c = table["c_index"].to_numpy(dtype=float)
        lo = np.nan_to_num(c - table["c_index_lo"].to_numpy(dtype=float))
        hi = np.nan_to_num(table["c_index_hi"].to_numpy(dtype=float) - c)
        ax.errorbar(c, y, xerr=np.vstack([np.abs(lo), np.abs(hi)]), fmt="s", capsize=3)
        ax.set_yticks(y, [f"{g} (n={n}, events={e})" for g, n, e in
                          zip(table["group"], table["n"], table["events"], strict=True)], fontsize=8)
    ax.axvline(0.5, ls="--", color="grey", lw=1)
    ax.set_xlim(0.2, 1.0)
    ax.set_xlabel("Harrell's C-index")
    ax.set_title(title or "C-index per cancer type")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluation_figures(name: str, model: SurvivalModel, ev: Evaluation, test_df: pd.DataFrame, out: Path) -> list[Path]:
    """One model's figures in `out`: calibration, KM by risk tertile (cut points from its training
    risks) and, with cancer types, C-index per type; the tables behind them beside them as CSV."""
    out.mkdir(parents=True, exist_ok=True)
    risk = model.predict_risk(test_df)
    tert = risk_tertiles(risk, model.train_risk_sorted_)
    figs = [
        calibration_plot(ev.calibration, ev.calibration_horizon, out / f"{name}_calibration.png",
                         title=f"{name}: calibration"),
        km_by_tertile(test_df["time_days"].to_numpy(float), test_df["event"].to_numpy().astype(bool), tert,
                      out / f"{name}_km_tertiles.png", title=f"{name}: KM by risk tertile"),
    ]
    if len(ev.subgroups):
        figs.append(subgroup_plot(ev.subgroups, out / f"{name}_cindex_by_cancer_type.png",
                                  title=f"{name}: C-index per cancer type"))
        ev.subgroups.to_csv(out / f"{name}_cindex_by_cancer_type.csv", index=False)
    ev.calibration.to_csv(out / f"{name}_calibration.csv", index=False)
    return figs


def promotion_plot(*, metric: str, challenger: float, champion: float | None, margin: float,
                   challenger_version: str, champion_version: str | None, promoted: bool, path: Path) -> Path:
    """Bar chart of the challenger's and the champion's metric on the same split, with the margin."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 3.5))
    labels, values = [f"challenger v{challenger_version}"], [challenger]
    if champion is not None:
        labels.insert(0, f"champion v{champion_version}")
        values.insert(0, champion)
        ax.axhline(champion + (-margin if metric == "ibs" else margin), ls="--", color="grey", lw=1,
                   label=f"champion {'-' if metric == 'ibs' else '+'} margin")
        ax.legend(fontsize=8)
    ax.bar(labels, values, color=["#888888", "#2a7ab9"][-len(values):])
    ax.set_ylabel(metric)
    lo = min(values) - 0.05
    ax.set_ylim(max(0.0, lo), max(values) + 0.05)
    ax.set_title("promoted" if promoted else "kept champion", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
