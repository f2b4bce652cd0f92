"""The report step: plots of one run, as PNG and SVG files.

  accuracy   share of rollouts verified correct, per world × model (heat map)
  labels     the distribution of each label the run has: histograms of logprob, entropy and
             every continuous token output of a label family (`tokenmill.labelers`), bars of
             its categories and flags; one panel per labeller config
  routing    R2R routed generation: accuracy against the share of large-model tokens, for
             the router's thresholds, random routing, small-only and large-only
  probe_roc  ROC curves of each hallucination probe against the uncertainty baselines on
             its held-out prompts (span and token level)

Each plot is drawn only when its tables have rows for the run. Aggregation happens in
DuckDB; histograms draw from a reservoir sample of at most `SAMPLE` values per label so a
large run costs the same as a small one. Files are written to a temporary name and moved
into place, so a reader never sees half a file; a picture that has not changed is not
rewritten (the bytes are deterministic: no dates in the files, seeded samples).
"""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from tokenmill import labelers
from tokenmill.storage.catalog import query
from tokenmill.storage.lake import REPORTS_DIR, Lake

SAMPLE = 200_000
FORMATS = ("png", "svg")


def report_dir(lake: Lake, run_id: str) -> Path:
    """Where a run's plots go by default: beside the lake's tables when it is local, else
    under ./tokenmill-reports/."""
    base = Path(lake.root) / REPORTS_DIR if lake.is_local else Path("tokenmill-reports")
    return base / run_id


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    matplotlib.rcParams["svg.hashsalt"] = "tokenmill"  # SVG element ids from a fixed salt: same plot, same bytes
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = out / f"{name}.{fmt}"
        tmp = out / f".{name}.{fmt}.tmp"
        fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        if path.exists() and filecmp.cmp(tmp, path, shallow=False):
            tmp.unlink()  # the same picture: a re-run leaves finished files untouched
        else:
            os.replace(tmp, path)
        paths.append(path)
    _pyplot().close(fig)
    return paths


# ------------------------------------------------------------------ accuracy


ACCURACY_SQL = """
SELECT coalesce(world, source) AS world, model, avg(CASE WHEN verdict = 'correct' THEN 1.0 ELSE 0.0 END) AS accuracy,
       count(*) AS rollouts
FROM rollouts WHERE run_id = $run AND verdict IS NOT NULL AND verdict <> 'unverified' GROUP BY ALL ORDER BY world, model
"""


def plot_accuracy(lake: Lake, run_id: str, out: Path) -> list[Path]:
    t = query(lake, ACCURACY_SQL, {"run": run_id})
    if not t.num_rows:
        return []
    plt = _pyplot()
    worlds = sorted(set(t.column("world").to_pylist()))
    models = sorted(set(t.column("model").to_pylist()))
    grid = np.full((len(worlds), len(models)), np.nan)
    counts = np.zeros_like(grid)
    wi = {w: i for i, w in enumerate(worlds)}
    mi = {m: i for i, m in enumerate(models)}
    for r in t.to_pylist():
        grid[wi[r["world"]], mi[r["model"]]] = r["accuracy"]
        counts[wi[r["world"]], mi[r["model"]]] = r["rollouts"]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(models), 1.2 + 0.7 * len(worlds)))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(models)), models)
    ax.set_yticks(range(len(worlds)), worlds)
    for i in range(len(worlds)):
        for j in range(len(models)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}\n({int(counts[i, j])})", ha="center", va="center", fontsize=9)
    fig.colorbar(im, ax=ax, label="accuracy")
    ax.set_title(f"run {run_id}: accuracy per world × model (rollouts)")
    return _save(fig, out, "accuracy")


# ------------------------------------------------------------------ label distributions

# the generating model's own statistics; every label family's outputs come from its
# declaration (`tokenmill.labelers`)
TOKEN_STATS = [
    ("logprob", "SELECT logprob AS v FROM tokens WHERE run_id = $run"),
    ("entropy", "SELECT entropy AS v FROM tokens WHERE run_id = $run AND entropy IS NOT NULL"),
]


def _sample(lake: Lake, sql: str, run_id: str) -> np.ndarray:
    t = query(lake, f"SELECT v FROM ({sql}) USING SAMPLE reservoir({SAMPLE} ROWS) REPEATABLE (0)", {"run": run_id})
    v = t.column("v").to_numpy(zero_copy_only=False).astype(np.float64)
    return v[np.isfinite(v)]


def label_panels(lake: Lake, run_id: str) -> list[tuple[str, str, object]]:
    """(title, 'hist' | 'bar', data) for every label of the run that has values: one panel
    per output and labeller config where configs share rollouts (two panels, never pooled; the
    config id in the title), else one over the scope's configs (they label disjoint rollouts)."""
    panels = []
    for title, sql in TOKEN_STATS:
        v = _sample(lake, sql, run_id)
        if len(v):
            panels.append((title, "hist", v))
    found = labelers.configs_in(lambda sql, binds: query(lake, sql, binds).to_pylist(), run_id)
    for _, scope in labelers.scopes():
        groups = labelers.config_groups(found, scope.name)
        for group in groups:
            cid = group[0]
            values = labelers.scope_values_sql(scope, group)
            for o in scope.outputs:
                if o.detail:
                    continue
                title = o.title + (f" [{cid[:8]}]" if len(groups) > 1 else "")
                if o.kind == "continuous":
                    v = _sample(lake, f"SELECT {o.name} AS v FROM ({values})", run_id)
                    if len(v):
                        panels.append((title, "hist", v))
                else:
                    t = query(lake, f"SELECT {o.name}::VARCHAR AS k, count(*) AS n FROM ({values}) WHERE {o.name} IS NOT NULL "
                                    "GROUP BY k ORDER BY n DESC, k", {"run": run_id})
                    if t.num_rows:
                        panels.append((title, "bar", (t.column("k").to_pylist(), t.column("n").to_pylist())))
    return panels


def plot_labels(lake: Lake, run_id: str, out: Path) -> list[Path]:
    panels = label_panels(lake, run_id)
    if not panels:
        return []
    plt = _pyplot()
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.0 * rows), squeeze=False)
    for ax, (title, kind, data) in zip(axes.flat, panels):
        if kind == "hist":
            ax.hist(data, bins=40, color="#d7301f", alpha=0.85)
            ax.set_yscale("log")
            ax.set_ylabel("tokens")
        else:
            keys, counts = data
            ax.barh(range(len(keys)), counts, color="#2f6fdf")
            ax.set_yticks(range(len(keys)), keys, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("count")
        ax.set_title(title, fontsize=10)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"run {run_id}: label distributions", y=1.0)
    fig.tight_layout()
    return _save(fig, out, "labels")


# ------------------------------------------------------------------ routing


ROUTING_SQL = """
SELECT policy, threshold, large_share, accuracy, world, split, eval_id FROM routing_eval WHERE run_id = $run
ORDER BY eval_id, policy, large_share
"""


def plot_routing(lake: Lake, run_id: str, out: Path) -> list[Path]:
    t = query(lake, ROUTING_SQL, {"run": run_id})
    if not t.num_rows:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    style = {"router": ("o-", "#d7301f"), "random": ("s--", "#6b7280"), "small-only": ("v", "#2f6fdf"),
             "large-only": ("^", "#1a7f37")}
    rows = t.to_pylist()
    for policy in ("router", "random", "small-only", "large-only"):
        pts = sorted((r["large_share"], r["accuracy"]) for r in rows if r["policy"] == policy)
        if pts:
            marker, colour = style[policy]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker, color=colour, label=policy, markersize=7)
    ax.set_xlabel("share of tokens from the large model")
    ax.set_ylabel("accuracy")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"run {run_id}: routed generation ({rows[0]['world']}, {rows[0]['split']})")
    return _save(fig, out, "routing")


# ------------------------------------------------------------------ probe ROC


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct score threshold, from (0, 0) to (1, 1)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    keep = ~np.isnan(s)
    s, y = s[keep], y[keep]
    if not len(s):  # no scores (e.g. entropy of vLLM rollouts): no threshold, the origin alone
        return np.zeros(1), np.zeros(1)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    cut = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last index of each run of equal scores
    tp, fp = np.cumsum(y)[cut], np.cumsum(~y)[cut]
    return np.r_[0.0, fp / max(int((~y).sum()), 1)], np.r_[0.0, tp / max(int(y.sum()), 1)]


def plot_probe_roc(lake: Lake, run_id: str, out: Path) -> list[Path]:
    from tokenmill.tasks.train.metrics import roc_auc
    from tokenmill.tasks.train.probe import load_heldout

    probes = query(lake, "SELECT artifact_id, base_model, path FROM model_artifacts WHERE run_id = $run AND role = 'probe' "
                         "ORDER BY base_model, created_at", {"run": run_id}).to_pylist()
    held = [(p, load_heldout(lake, p["path"])) for p in probes]
    held = [(p, h) for p, h in held if h is not None and h.num_rows]
    if not held:
        return []
    plt = _pyplot()
    fig, axes = plt.subplots(len(held), 2, figsize=(10, 4.4 * len(held)), squeeze=False)
    for (probe, h), row in zip(held, axes):
        for ax, level in zip(row, ("span", "token")):
            part = h.filter(pa.compute.equal(h.column("level"), level))
            drawn = 0
            for method in dict.fromkeys(part.column("method").to_pylist()):
                m = part.filter(pa.compute.equal(part.column("method"), method))
                s = m.column("score").to_numpy(zero_copy_only=False).astype(np.float64)  # null → NaN
                y = m.column("label").to_numpy()
                auc = roc_auc(s, y)
                if np.isnan(auc):  # one class, or no scores at all (entropy of vLLM rollouts): no curve
                    continue
                fpr, tpr = roc_curve(s, y)
                ax.plot(fpr, tpr, lw=2.2 if method == "probe" else 1.2, label=f"{method} (AUC {auc:.2f})")
                drawn += 1
            ax.plot([0, 1], [0, 1], ":", color="#9aa3ad")
            if not drawn:
                ax.text(0.5, 0.5, f"the held-out {level}s hold one class only:\nlabel more prompts", ha="center",
                        va="center", fontsize=9, color="#6b7280")
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.set_title(f"{probe['base_model']} probe, held-out {level}s", fontsize=10)
            if drawn:
                ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"run {run_id}: hallucination probe ROC", y=1.0)
    fig.tight_layout()
    return _save(fig, out, "probe_roc")


PLOTS = {"accuracy": plot_accuracy, "labels": plot_labels, "routing": plot_routing, "probe_roc": plot_probe_roc}


# ------------------------------------------------------------------ efficacy study (across runs)


def plot_efficacy(results: pa.Table, summary: pa.Table, out: Path, title: str) -> list[Path]:
    """Held-out accuracy per arm over seeds: each seed a dot, the mean with its 95 % t interval
    as a bar, the base model's mean as a dashed line; an arm whose paired interval against its
    counterpart excludes zero is starred. Drawn from the study's `model_eval` rows (results)
    and `studies.efficacy.summarise` (summary)."""
    if not results.num_rows:
        return []
    plt = _pyplot()
    rows = summary.to_pylist()
    arms = [r["arm"] for r in rows]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(arms), 3.6))
    by_arm: dict[str, list[float]] = {}
    for r in results.to_pylist():
        by_arm.setdefault(r["arm"], []).append(r["accuracy"])
    for i, r in enumerate(rows):
        mean = r["accuracy_mean"]
        ax.errorbar(i, mean, yerr=[[mean - r["accuracy_low"]], [r["accuracy_high"] - mean]], fmt="o", color="black",
                    capsize=5, zorder=3)
        pts = by_arm[r["arm"]]
        ax.scatter(i + np.linspace(-0.15, 0.15, len(pts)), pts, s=14, alpha=0.6, zorder=2)
        if r.get("vs") and r["diff_low"] is not None and (r["diff_low"] > 0 or r["diff_high"] < 0):
            ax.annotate("*", (i, r["accuracy_high"]), ha="center", va="bottom", fontsize=14)
    base = next((r["accuracy_mean"] for r in rows if r["arm"] == "base"), None)
    if base is not None:
        ax.axhline(base, ls="--", color="grey", lw=1, label=f"base {base:.3f}")
        ax.legend(loc="best", fontsize=8)
    ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right")
    ax.set_ylabel("held-out greedy accuracy")
    ax.text(0.01, 0.02, "* paired 95 % interval vs its sequence-level counterpart excludes 0 (either sign)",
            transform=ax.transAxes, fontsize=7, color="grey")
    ax.set_title(title, fontsize=10)
    return _save(fig, out, "efficacy")


def write_report(lake: Lake, run_id: str, out: str | os.PathLike | None = None) -> dict[str, list[Path]]:
    """Draw every plot the run has data for into `out` (default `report_dir`); returns
    {plot name: [png, svg]}."""
    target = Path(out) if out else report_dir(lake, run_id)
    target.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, draw in PLOTS.items():
        paths = draw(lake, run_id, target)
        if paths:
            written[name] = paths
    return written
