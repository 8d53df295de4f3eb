"""`medloom cg report`: Med-MAT's tables for the experiments of a `cg plan`.

For each target (an unseen MAT triplet), every run's accuracy on the target's test records, laid out as the
paper does: Table 3, one row per related subset combination (its direction, the two subsets, Baseline,
that combination's Baseline+, Trained); Table 4, one row per three-way combination; Table 5, the combinations in
which a detection (or segmentation) subset fills a role, trained on its boxes; the directions pooled;
and Figure 4's ablations (all related, all unrelated, all data; without the modality, area or task), with
Baseline and the shared Baseline+. The numbers, the tests and the correction are `summary.py`'s; the figure
is Med-MAT's Figure 4, one group of bars per target.

A run is any `medloom eval vqa` or `eval zeroshot` run folder; only its predictions on the target's test
records count, so one run over several targets' records serves them all. A `cg run` results folder holds one
per experiment and seed (`TARGET/NAME/seed-S/mc`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from ..errors import ReportError
from .plan import DIRECTIONS, PlanError, slug
from .summary import ALPHA, FAMILIES, TEST, cell, combination_table, correct_and_mark, power, read_seeds, versus

BASELINES = ("baseline", "baseline-plus")
PRETRAINED = "baseline-pretrained"  # `cg run --baseline-model SPEC`: a model asked as it is, never starred
POOLED = tuple(f"related-{d}" for d in DIRECTIONS)
ABLATIONS = ("all-related", "all-unrelated", "all-data", "without-modality", "without-area", "without-task")
TABLE3 = ("baseline", PRETRAINED, "baseline-plus", *POOLED)  # the figure's and the console's column order
TABLE4 = ABLATIONS
TITLES = {
    "baseline": "Baseline",
    PRETRAINED: "Baseline (pretrained)",
    "baseline-plus": "Baseline+",
    **{f"related-{d}": d.replace("-", " ") for d in DIRECTIONS},
    "all-related": "all related",
    "all-unrelated": "all unrelated",
    "all-data": "all data",
    "without-modality": "w/o modality",
    "without-area": "w/o area",
    "without-task": "w/o task",
}

Runs = dict[str, dict[str, dict[str, Path]]]  # target -> run name -> seed -> run folder


def test_ids(experiment: dict) -> set[str]:
    path = Path(experiment["folder"]) / "test.txt"
    try:
        return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    except OSError as e:
        raise PlanError(f"{path}: {e.strerror or e}; is this a `medloom cg plan` folder?") from None


def cg_report(experiments: list[dict], runs: Runs, skipped: dict[str, dict[str, str]], *, seed: int = 0) -> dict:
    """runs: target -> run name -> seed -> run folder; skipped: target -> run name -> why it has no run."""
    targets = {}
    for target in sorted({e["target"] for e in experiments}):
        test = test_ids(next(e for e in experiments if e["target"] == target))
        manifests = {
            e["name"]: {
                k: e.get(k, d)
                for k, d in (
                    ("kind", ""),
                    ("direction", ""),
                    ("train_subsets", []),
                    ("roles", []),
                    ("grounding", []),
                    ("reference", "baseline-plus"),
                    ("train_records", 0),
                    ("pool_records", None),
                    ("short", ""),
                    ("note", ""),
                )
            }
            for e in experiments
            if e["target"] == target
        }
        cells: dict[str, dict] = {}
        units: dict[str, dict] = {}
        for name, folders in sorted(runs.get(target, {}).items()):
            us, results, missing = read_seeds(folders, test)
            if missing:
                cells[name] = {"missing": missing}
                continue
            units[name] = us
            cells[name] = cell(us, results, folders, seed)
        for name, why in skipped.get(target, {}).items():
            cells.setdefault(name, {"missing": why})
        for name in units:  # the Baselines (the pretrained one too) are never tested: outside Holm's families
            if name in ("baseline", PRETRAINED) or name.startswith("baseline-plus"):
                continue
            reference = manifests.get(name, {}).get("reference") or "baseline-plus"
            if reference in units:
                test_result = versus(units[name], units[reference], reference, seed)
                if test_result:
                    cells[name]["vs_baseline-plus"] = test_result
        targets[target] = {"test_records": len(test), "runs": cells, "experiments": manifests}
    comparisons = correct_and_mark(targets)
    for t in targets.values():
        t["power"] = power(t, comparisons)
    seeds = sorted({s for t in runs.values() for folders in t.values() for s in folders}, key=_seed_order)
    return {
        "alpha": ALPHA,
        "correction": "holm",
        "test": TEST,
        "comparisons": comparisons,
        "seeds": seeds,
        "seed": seed,
        "targets": targets,
    }


def _seed_order(s: str) -> tuple:
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def resolve_runs(
    experiments: list[dict], pairs: list[str], results: Path | None, metric: str
) -> tuple[Runs, dict[str, dict[str, str]]]:
    """`--runs NAME=RUN` (NAME a run name for every target, or TARGET_FOLDER/NAME for one; a name given again
    is another seed, counted from 0) and a `cg run` results folder (`TARGET/NAME/seed-S/METRIC`), as
    target -> name -> seed -> run folder; and the runs `cg run` skipped, with why."""
    targets = sorted({e["target"] for e in experiments})
    by_slug = {slug(t): t for t in targets}
    runs: Runs = {t: {} for t in targets}
    skipped: dict[str, dict[str, str]] = {t: {} for t in targets}
    if results is not None:
        for t in targets:
            found = [(f.parent.name, f.name.removeprefix("seed-"), f) for f in (Path(results) / slug(t)).glob("*/seed-*/")]
            # a results folder written before seeds (`TARGET/NAME/METRIC`): one run, seed 0
            found += [(f.name, "0", f) for f in (Path(results) / slug(t)).glob("*/") if not any(f.glob("seed-*/"))]
            for name, seed, folder in sorted(found):
                # why there is no run: this metric's reason, else the whole experiment's
                why = next((w for w in (folder / f"{metric}-skipped.json", folder / "skipped.json") if w.is_file()), None)
                if (folder / metric / "results.json").is_file():
                    runs[t].setdefault(name, {})[seed] = folder / metric
                elif why is not None:
                    skipped[t][name] = json.loads(why.read_text(encoding="utf-8"))["why"]
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not name or not folder:
            raise ReportError(f"--runs {pair!r}: write NAME=RUN_FOLDER, e.g. baseline=runs/base")
        where, _, short = name.rpartition("/")
        if where and where not in by_slug:
            raise ReportError(f"--runs {pair!r}: {where!r} is not a target of this plan ({', '.join(by_slug)})")
        for t in [by_slug[where]] if where else targets:
            seeds = runs[t].setdefault(short, {})
            seeds[str(len(seeds))] = Path(folder)
    if not any(runs.values()):
        raise ReportError("no run to report: give --runs NAME=RUN_FOLDER (or --results, a `medloom cg run` folder)")
    return runs, skipped


def mark(c: dict) -> str:
    test = c.get("vs_baseline-plus") or {}
    return " *" if test.get("success") else " !" if test.get("worse") else ""


def cell_text(c: dict | None, marks: bool = True) -> str:
    if not c:
        return "-"
    if "missing" in c:
        return "n/a"
    if c.get("accuracy") is None:
        return "n/a (nothing scored)"
    sign = mark(c) if marks else ""
    if len(c.get("seeds") or {}) > 1:
        each = "/".join(f"{a:.2f}" for a in c["seed_accuracies"].values())
        return f"{c['accuracy']:.3f} ±{c['seed_sd']:.3f} [{each}]{sign}"
    lo, hi = c["wilson95"]
    return f"{c['accuracy']:.3f} ({lo:.2f}-{hi:.2f}){sign}"


def probe_cell(probe: dict | None, target: str, name: str) -> list[str]:
    """The nearest-neighbour probe's accuracy for a run (`cg run --nn-probe`), unmarked; no column without probes."""
    if probe is None:
        return []
    return [cell_text(probe["targets"].get(target, {}).get("runs", {}).get(name), marks=False)]


def _pretrained(report: dict) -> bool:
    """Whether any target has a pretrained Baseline (`cg run --baseline-model`): its column, beside Baseline."""
    return any(PRETRAINED in t["runs"] for t in report["targets"].values())


def _combination_rows(report: dict, table: str, probe: dict | None = None) -> list[list[str]]:
    pretrained = _pretrained(report)
    rows = []
    for target, t in report["targets"].items():
        combos = [(n, e) for n, e in t["experiments"].items() if e["kind"] == "combination"]
        order = list(DIRECTIONS)
        combos.sort(key=lambda c: (order.index(c[1]["direction"]) if c[1]["direction"] in order else 99, len(c[0]), c[0]))
        for name, e in combos:
            if combination_table(e) != table:
                continue
            runs = t["runs"]
            if name not in runs and f"baseline-plus-{name}" not in runs:
                continue
            grounding = set(e.get("grounding") or [])
            roles = [f"{r} (det)" if r in grounding else r for r in e["roles"]]
            lead = roles if table == "table4" else [e["direction"].replace("-", " "), " + ".join(roles)]
            train = "n/a" if e["short"] else str(e["train_records"])
            rows.append(
                [
                    target,
                    *lead,
                    train,
                    cell_text(runs.get("baseline")),
                    *([cell_text(runs.get(PRETRAINED))] if pretrained else []),
                    cell_text(runs.get(e["reference"])),
                    cell_text(runs.get(name)),
                    *probe_cell(probe, target, name),
                ]
            )
    return rows


def _column_rows(
    report: dict, names: tuple[str, ...], always: bool = False, probe: dict | None = None
) -> tuple[list[str], list[list[str]]]:
    present = {n for t in report["targets"].values() for n in t["runs"]}
    shown = [n for n in names if n in present]
    if not shown and not always:
        return [], []
    pretrained = [PRETRAINED] if _pretrained(report) else []
    header = ["target", "train", "Baseline", *(TITLES[n] for n in pretrained), "Baseline+", *(TITLES.get(n, n) for n in shown)]
    rows = []
    for target, t in report["targets"].items():
        sizes = {str(t["experiments"][n]["train_records"]) for n in shown if n in t["experiments"]}
        rows.append(
            [
                target,
                "/".join(sorted(sizes)) or "-",
                cell_text(t["runs"].get("baseline")),
                *(cell_text(t["runs"].get(n)) for n in pretrained),
                cell_text(t["runs"].get("baseline-plus")),
                *(cell_text(t["runs"].get(n)) for n in shown),
            ]
        )
        if probe is not None and target in probe["targets"]:  # the same experiments answered by the probe
            runs = probe["targets"][target]["runs"]
            rows.append(
                [
                    f"{target} (NN probe)",
                    rows[-1][1],
                    "-",
                    *("-" for _ in pretrained),
                    cell_text(runs.get("baseline-plus"), marks=False),
                    *(cell_text(runs.get(n), marks=False) for n in shown),
                ]
            )
    return header, rows


def sections(report: dict, probe: dict | None = None) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of each table the report has: Table 3, Table 4, Table 5, directions pooled,
    ablations, and runs named otherwise. `probe`: the nearest-neighbour probe's report (`cg run`'s `nn`), shown
    beside the trained runs (a column of Tables 3-5, a row under each target elsewhere)."""
    out = []
    pretrained = [TITLES[PRETRAINED]] if _pretrained(report) else []
    tail = ["Baseline", *pretrained, "Baseline+", "Trained", *(["NN probe"] if probe is not None else [])]
    rows = _combination_rows(report, "table3", probe)
    if rows:
        header = ["target", "direction", "related combination", "train", *tail]
        out.append(("Table 3: one row per related subset combination (its own Baseline+)", header, rows))
    rows = _combination_rows(report, "table4", probe)
    if rows:
        header = ["target", "modality from", "area from", "task from", "train", *tail]
        out.append(("Table 4: three-way combinations (one subset per element)", header, rows))
    rows = _combination_rows(report, "table5", probe)
    if rows:
        header = ["target", "direction", "related combination", "train", *tail]
        out.append(
            ("Table 5: combinations with a detection subset (det: trained on its boxes as grounding questions)", header, rows)
        )
    for title, names in (("Directions pooled (every subset filling a role)", POOLED), ("Figure 4: ablations", ABLATIONS)):
        header, rows = _column_rows(report, names, probe=probe)
        if rows:
            out.append((title, header, rows))
    known = {*BASELINES, PRETRAINED, *POOLED, *ABLATIONS}
    other = tuple(
        sorted(
            {
                n
                for t in report["targets"].values()
                for n in t["runs"]
                if n not in known and not n.startswith("baseline-plus-") and n not in t["experiments"]
            }
        )
    )
    if other:
        header, rows = _column_rows(report, other)
        if rows:
            out.append(("Other runs", header, rows))
    if not out:  # only baselines
        header, rows = _column_rows(report, (), always=True)
        out.append(("Baselines", header, rows))
    return out


def legend(report: dict) -> list[str]:
    many = len(report["seeds"]) > 1
    lines = [
        (
            f"Seeds {', '.join(report['seeds'])}: mean accuracy ±sd over seeds [each seed's]."
            if many
            else "Accuracy (95% Wilson interval), one seed."
        ),
        f"`*`: better than its Baseline+, `!`: worse, after Holm's correction over each table's comparisons "
        f"(alpha {report['alpha']}; "
        + ", ".join(f"{FAMILIES[f]}: {report['comparisons'][f]}" for f in FAMILIES if f in report["comparisons"])
        + f"). Test: {report['test']}.",
    ]
    return lines


def power_lines(report: dict) -> list[str]:
    out = []
    for target, t in report["targets"].items():
        p = t.get("power")
        if not p:
            continue
        strict = "; ".join(
            f"{d:.2f} at Holm's strictest step for {FAMILIES[f]} (alpha/{report['comparisons'][f]})"
            if d is not None
            else f"none at Holm's strictest step for {FAMILIES[f]}"
            for f, d in ((f, p["detectable_holm"][f]) for f in FAMILIES if f in p["detectable_holm"])
        )
        found = f"{p['detectable']:.2f}" if p["detectable"] is not None else "no gain"
        out.append(
            f"{target}: {p['questions']} test questions from {p['clusters']} patients (an image with no patient "
            f"recorded counts as its own); at 80% power a test of "
            f"{p['effective_n']} detects a gain over Baseline+ ({p['base']:.2f}) of {found} at alpha {report['alpha']}"
            + (f"; {strict}" if strict else "")
            + ". A smaller true effect is likely to go unstarred."
        )
    return out


def missing_lines(report: dict) -> list[str]:
    out = []
    for target, t in report["targets"].items():
        missing = {n: c["missing"] for n, c in t["runs"].items() if "missing" in c}
        if missing:
            out.append(f"{target}: " + "; ".join(f"{n}: {why}" for n, why in sorted(missing.items())))
    return out


def markdown(report: dict, metric: str, probe: dict | None = None) -> str:
    what = {"mc": "multiple-choice accuracy", "nn": "nearest-neighbour probe accuracy (no training)"}.get(
        metric, "zero-shot top-1 accuracy"
    )
    out = [f"# Compositional generalization: {what} on each unseen target", "", *legend(report), ""]
    if probe is not None:
        out += [PROBE_NOTE, ""]
    row = lambda r: "| " + " | ".join(c.replace("|", "\\|") for c in r) + " |"  # noqa: E731
    for title, header, rows in sections(report, probe):
        out += [f"## {title}", "", row(header), "|" + "---|" * len(header), *map(row, rows), ""]
    lines = power_lines(report)
    if lines:
        out += ["## Test size and power", "", *(f"- {x}" for x in lines), ""]
    lines = missing_lines(report)
    if lines:
        out += ["## Not run", "", *(f"- {x}" for x in lines), ""]
    return "\n".join(out).rstrip() + "\n"


PROBE_NOTE = (
    "NN probe: the same training records, no training: each test image takes the option of its nearest training "
    "image in the frozen image tower's features (`nn.md` has its own marks against the probe of Baseline+). A "
    "trained run no better than its probe learnt nothing the features did not already hold."
)

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

    present = {n for t in report["targets"].values() for n in t["runs"]}
    names = [n for n in (*TABLE3, *TABLE4) if n in present]
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
            c = report["targets"][target]["runs"].get(n)
            if not c or "missing" in c or c.get("accuracy") is None:
                continue
            bx = x0 + ni * bar_w
            colour = PALETTE[ni % len(PALETTE)]
            draw.rectangle([bx, y(c["accuracy"]), bx + bar_w * 0.9, y(0)], fill=colour)
            mid = bx + bar_w * 0.45
            lo, hi = c["wilson95"]
            draw.line([(mid, y(lo)), (mid, y(hi))], fill="black")
            if mark(c):
                draw.text((mid - 3, y(hi) - 14), mark(c).strip(), fill="black")
        draw.text((x0, h - bottom + 8), target[: int(group_w / 6)], fill="black")
    for ni, n in enumerate(names):
        ly = top + ni * 16
        draw.rectangle([w - legend, ly, w - legend + 10, ly + 10], fill=PALETTE[ni % len(PALETTE)])
        draw.text((w - legend + 16, ly - 1), TITLES.get(n, n), fill="black")
    draw.line([(left, top), (left, y(0)), (left + plot_w, y(0))], fill="black")
    draw.text(
        (left + 4, 6),
        "accuracy on the unseen target (whiskers: 95% Wilson; *: better than Baseline+, !: worse; Holm)",
        fill="black",
    )
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()
