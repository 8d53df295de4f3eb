"""`medloom cg report`: Med-MAT's tables for the experiments of a `cg plan`.

For each target (an unseen MAT triplet), every run's accuracy on the target's test records: the Baseline (the
model before any training on the loom), Baseline+ (trained on unrelated records, as many as the related mix),
and the model trained on each direction's related subsets (Table 3), then the ablations (Table 4): all
related subsets, all unrelated ones, and the related ones without those sharing the modality, the area or
the task. Each cell holds the accuracy with its 95% Wilson interval (the bootstrap interval that resamples
patients is in the JSON); a mark says the run beats Baseline+ on the same questions by an exact McNemar test
(p < 0.05, more right answers), Med-MAT's test of compositional generalization. The figure is Med-MAT's
Figure 4: one group of bars per target, Wilson intervals as whiskers.

A run is any `medloom eval vqa` or `eval zeroshot` run folder; only its predictions on the target's test
records count, so one run over several targets' records serves them all.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from ..errors import ReportError
from ..evaluate.compare import CompareError, paired, read_units
from ..evaluate.metrics import metrics
from .plan import DIRECTIONS, PlanError, slug

BASELINES = ("baseline", "baseline-plus")
PRETRAINED = "baseline-pretrained"  # `cg run --baseline-model SPEC`: a model asked as it is, never starred
TABLE3 = ("baseline", PRETRAINED, "baseline-plus", *(f"related-{d}" for d in DIRECTIONS))
TABLE4 = ("all-related", "all-unrelated", "without-modality", "without-area", "without-task")
TITLES = {
    "baseline": "Baseline",
    PRETRAINED: "Baseline (pretrained)",
    "baseline-plus": "Baseline+",
    **{f"related-{d}": d.replace("-", " ") for d in DIRECTIONS},
    "all-related": "all related",
    "all-unrelated": "all unrelated",
    "without-modality": "w/o modality",
    "without-area": "w/o area",
    "without-task": "w/o task",
}
ALPHA = 0.05


def test_ids(experiment: dict) -> set[str]:
    path = Path(experiment["folder"]) / "test.txt"
    try:
        return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    except OSError as e:
        raise PlanError(f"{path}: {e.strerror or e}; is this a `medloom cg plan` folder?") from None


def cg_report(
    experiments: list[dict], runs: dict[str, dict[str, Path]], skipped: dict[str, dict[str, str]], *, seed: int = 0
) -> dict:
    """runs: target -> run name -> run folder; skipped: target -> run name -> why it has no run."""
    targets = {}
    for target in sorted({e["target"] for e in experiments}):
        test = test_ids(next(e for e in experiments if e["target"] == target))
        cells: dict[str, dict] = {}
        units: dict[str, dict] = {}
        for name, folder in sorted(runs.get(target, {}).items()):
            try:
                results, us = read_units(folder)
            except CompareError as e:
                raise ReportError(str(e)) from None
            us = {k: u for k, u in us.items() if k[0] in test}
            if not us:
                cells[name] = {"missing": f"{folder} has no prediction on this target's test records"}
                continue
            units[name] = us
            cells[name] = {**metrics(list(us.values()), seed), "run": str(folder), "model": results["settings"].get("model", "")}
        for name, why in skipped.get(target, {}).items():
            cells.setdefault(name, {"missing": why})
        for name in units:
            for ref in BASELINES:
                if name in (*BASELINES, PRETRAINED) or ref not in units:
                    continue
                shared = sorted(units[name].keys() & units[ref].keys())
                if shared:
                    test_result = paired(units[ref], units[name], shared, seed)
                    test_result["success"] = test_result["difference"] > 0 and test_result["mcnemar_exact_p"] < ALPHA
                    cells[name][f"vs_{ref}"] = test_result
        manifests = {
            e["name"]: {k: e[k] for k in ("kind", "direction", "train_subsets", "train_records")}
            for e in experiments
            if e["target"] == target
        }
        targets[target] = {"test_records": len(test), "runs": cells, "experiments": manifests}
    return {"alpha": ALPHA, "seed": seed, "targets": targets}


def resolve_runs(
    experiments: list[dict], pairs: list[str], results: Path | None, metric: str
) -> tuple[dict[str, dict[str, Path]], dict[str, dict[str, str]]]:
    """`--runs NAME=RUN` (NAME a run name for every target, or TARGET_FOLDER/NAME for one) and a `cg run`
    results folder, as target -> name -> run folder; and the runs `cg run` skipped, with why."""
    targets = sorted({e["target"] for e in experiments})
    by_slug = {slug(t): t for t in targets}
    runs: dict[str, dict[str, Path]] = {t: {} for t in targets}
    skipped: dict[str, dict[str, str]] = {t: {} for t in targets}
    if results is not None:
        for t in targets:
            for folder in sorted((Path(results) / slug(t)).glob("*/")):
                # why there is no run: this metric's reason, else the whole experiment's
                why = next((w for w in (folder / f"{metric}-skipped.json", folder / "skipped.json") if w.is_file()), None)
                if (folder / metric / "results.json").is_file():
                    runs[t][folder.name] = folder / metric
                elif why is not None:
                    skipped[t][folder.name] = json.loads(why.read_text(encoding="utf-8"))["why"]
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not name or not folder:
            raise ReportError(f"--runs {pair!r}: write NAME=RUN_FOLDER, e.g. baseline=runs/base")
        where, _, short = name.rpartition("/")
        if where and where not in by_slug:
            raise ReportError(f"--runs {pair!r}: {where!r} is not a target of this plan ({', '.join(by_slug)})")
        for t in [by_slug[where]] if where else targets:
            runs[t][short] = Path(folder)
    if not any(runs.values()):
        raise ReportError("no run to report: give --runs NAME=RUN_FOLDER (or --results, a `medloom cg run` folder)")
    return runs, skipped


def columns(report: dict, table: tuple[str, ...]) -> list[str]:
    """The run names of a table that some target has, in the table's order; then runs named otherwise."""
    present = {n for t in report["targets"].values() for n in t["runs"]}
    known = [n for n in table if n in present]
    extra = sorted(present - set(TABLE3) - set(TABLE4)) if table is TABLE3 else []
    return known + extra


def cell_text(cell: dict | None) -> str:
    if not cell:
        return "-"
    if "missing" in cell:
        return "n/a"
    mark = " *" if cell.get("vs_baseline-plus", {}).get("success") else ""
    if cell.get("accuracy") is None:
        return "n/a (nothing scored)"
    lo, hi = cell["wilson95"]
    return f"{cell['accuracy']:.3f} ({lo:.2f}-{hi:.2f}){mark}"


def table_rows(report: dict, table: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    names = columns(report, table)
    header = ["target", "test", *(TITLES.get(n, n) for n in names)]
    rows = [
        [target, str(t["test_records"]), *(cell_text(t["runs"].get(n)) for n in names)] for target, t in report["targets"].items()
    ]
    return header, rows


def markdown(report: dict, metric: str) -> str:
    what = "multiple-choice accuracy" if metric == "mc" else "zero-shot top-1 accuracy"
    out = [
        f"# Compositional generalization: {what} on each unseen target",
        "",
        "Accuracy (95% Wilson interval). `*`: beats Baseline+ on the same questions, exact McNemar p < 0.05.",
        "",
    ]
    for title, table in (
        ("Table 3: Baseline, Baseline+ and each direction's related mix", TABLE3),
        ("Table 4: ablations", TABLE4),
    ):
        header, rows = table_rows(report, table)
        if len(header) == 2:
            continue
        cells = lambda r: "| " + " | ".join(c.replace("|", "\\|") for c in r) + " |"  # noqa: E731
        out += [f"## {title}", "", cells(header), "|" + "---|" * len(header), *map(cells, rows), ""]
    for target, t in report["targets"].items():
        missing = {n: c["missing"] for n, c in t["runs"].items() if "missing" in c}
        if missing:
            out.append(f"{target}: " + "; ".join(f"{n}: {why}" for n, why in sorted(missing.items())))
    return "\n".join(out).rstrip() + "\n"


PALETTE = [
    (120, 120, 120),
    (180, 180, 180),
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
    (90, 60, 160),
]


def figure(report: dict, size: tuple[int, int] = (960, 480)) -> bytes:
    """Med-MAT's Figure 4: per target, one bar per run (accuracy), whiskers at the Wilson interval."""
    from PIL import Image, ImageDraw

    names = columns(report, TABLE3) + columns(report, TABLE4)
    targets = list(report["targets"])
    w, h = size
    left, right, top, bottom, legend = 50, 20, 30, 40, 170
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    plot_w = w - left - right - legend
    y = lambda v: top + (h - top - bottom) * (1 - v)  # noqa: E731
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        draw.line([(left, y(tick)), (left + plot_w, y(tick))], fill=(230, 230, 230))
        draw.text((8, y(tick) - 6), f"{tick:.2f}", fill="black")
    group_w = plot_w / max(len(targets), 1)
    bar_w = group_w * 0.8 / max(len(names), 1)
    for ti, target in enumerate(targets):
        x0 = left + ti * group_w + group_w * 0.1
        for ni, n in enumerate(names):
            cell = report["targets"][target]["runs"].get(n)
            if not cell or "missing" in cell or cell.get("accuracy") is None:
                continue
            bx = x0 + ni * bar_w
            colour = PALETTE[ni % len(PALETTE)]
            draw.rectangle([bx, y(cell["accuracy"]), bx + bar_w * 0.9, y(0)], fill=colour)
            mid = bx + bar_w * 0.45
            lo, hi = cell["wilson95"]
            draw.line([(mid, y(lo)), (mid, y(hi))], fill="black")
            if cell.get("vs_baseline-plus", {}).get("success"):
                draw.text((mid - 3, y(hi) - 14), "*", fill="black")
        draw.text((x0, h - bottom + 8), target[: int(group_w / 6)], fill="black")
    for ni, n in enumerate(names):
        ly = top + ni * 16
        draw.rectangle([w - legend, ly, w - legend + 10, ly + 10], fill=PALETTE[ni % len(PALETTE)])
        draw.text((w - legend + 16, ly - 1), TITLES.get(n, n), fill="black")
    draw.line([(left, top), (left, y(0)), (left + plot_w, y(0))], fill="black")
    draw.text((left + 4, 6), "accuracy on the unseen target (whiskers: 95% Wilson; *: beats Baseline+)", fill="black")
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()
