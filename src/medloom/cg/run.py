"""`medloom cg run PLAN --out RESULTS`: Med-MAT's experiment end to end with medloom's CLIP-style model.

For every target of the plan and every seed (`--seeds`): the Baseline (the model as `train clip` initialises
it, before any step), then for every experiment (each related combination and its Baseline+, each direction
pooled, the ablations, the shared Baseline+) a model trained on the experiment's `train.txt` only; each is
evaluated on the target's test records, as multiple-choice questions answered by image-text similarity
(`RESULTS/TARGET/NAME/seed-S/mc`) and as zero-shot classification (`.../zeroshot`). The report (`tables.py`)
is written to `RESULTS/report/`. An experiment the plan left untrained (its pool was smaller than the train
size: `short` in its manifest) is n/a with that reason.

All runs share the loom's cached tower outputs (image features and text embeddings are computed once). An
experiment whose model and evaluations are complete for the same settings (`done.json`) is skipped when the
command runs again; one killed half-way resumes from its last epoch. An experiment that cannot be trained (a
mix with no records) or evaluated (no question) is recorded in `skipped.json` with the reason and shown as
n/a in the tables.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import PlanError
from ..locks import hold
from ..outputs import OutputFolder
from ..train.projections import TrainError, TrainSettings, train_clip, write_untrained
from ..view.selection import read_experiment
from .plan import CopyCheck, copies_warning, find_experiments, slug

METRICS = ("mc", "zeroshot")


@dataclass
class CGReport:
    out: str
    targets: int = 0
    trained: int = 0
    reused: int = 0
    skipped: int = 0
    report: dict | None = None
    warning: str = ""  # experiments that train on copies of their test images (`copies_warning`)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"cg run: {self.targets} target(s), {self.trained} model(s) trained, {self.reused} experiment(s) "
            f"already done, {self.skipped} n/a; report: {Path(self.out) / 'report'}"
        )


def current_copies(loom: Path, experiments: list[dict]) -> list[dict]:
    """The experiments with their copies counted now (a `dedup` since the plan has marked copies out)."""
    check = CopyCheck(loom)
    out = []
    for e in experiments:
        sides = read_experiment(Path(e["folder"]))
        out.append(
            {
                **e,
                "copies": check.copies(
                    [i for i, s in sides.items() if s == "train"], [i for i, s in sides.items() if s == "test"]
                ),
            }
        )
    return out


def plan_loom(experiments: list[dict], loom: Path | None) -> Path:
    """The loom the plan was made from (each manifest names it), or the one given."""
    named = {e.get("loom") for e in experiments} - {None}
    if loom is not None:
        return Path(loom)
    if len(named) != 1:
        raise PlanError(
            "the plan's manifests do not name one loom"
            + (f" ({', '.join(sorted(named))})" if named else "")
            + "; give it with --loom"
        )
    return Path(named.pop())


def run_cg(
    plan: Path,
    out: Path,
    train: TrainSettings,
    *,
    loom: Path | None = None,
    seeds: list[int] | None = None,
    workers: int | None = None,
    quiet: bool = False,
    progress=print,
) -> CGReport:
    from ..evaluate.vqa import EvalError, VQASettings, evaluate_vqa
    from ..evaluate.zeroshot import ClipEvalSettings, evaluate_zeroshot
    from .tables import cg_report, figure, markdown, resolve_runs

    experiments = find_experiments(plan)
    loom = plan_loom(experiments, loom)
    out = Path(out)
    results = OutputFolder(out)
    results.require_only_own("cg results")
    results.ensure()
    report = CGReport(out=str(out), targets=len({e["target"] for e in experiments}))
    report.warning = copies_warning(current_copies(loom, experiments)) or ""
    with hold(out, what="cg results folder"):
        for target in sorted({e["target"] for e in experiments}):
            group = [e for e in experiments if e["target"] == target]
            test_side = group[0]["folder"]  # every experiment of a target tests on the same records
            jobs = [(seed, "baseline", None) for seed in seeds or [train.seed]]
            jobs += [(seed, e["name"], e) for seed in seeds or [train.seed] for e in group]
            for seed, name, experiment in jobs:
                rel = f"{slug(target)}/{name}/seed-{seed}"
                folder = OutputFolder(results.claim_dir(rel))
                settings = replace(train, seed=seed, experiment=experiment["folder"] if experiment else None)
                key = hashlib.sha256(
                    json.dumps(
                        {"train": asdict(settings), "test": test_side, "untrained": experiment is None, "manifest": experiment},
                        sort_keys=True,
                        default=str,
                    ).encode()
                ).hexdigest()
                done = folder.path / "done.json"
                if folder.is_owned("done.json") and json.loads(done.read_text(encoding="utf-8")).get("key") == key:
                    report.reused += 1
                    continue
                progress(f"cg run: {target} / {name} / seed {seed}")
                if experiment is not None and experiment.get("short"):  # the plan drew nothing: n/a, with why
                    folder.write_bytes("skipped.json", json.dumps({"why": experiment["short"]}, indent=1).encode())
                    folder.write_bytes("done.json", json.dumps({"key": key}).encode())
                    report.skipped += 1
                    continue
                try:
                    if experiment is None:
                        write_untrained(folder.path / "model", train.dim, seed)
                    else:
                        train_clip(loom, folder.path / "model", settings, workers=workers, quiet=quiet)
                        report.trained += 1
                    model = f"medloom:{folder.path / 'model'}"
                    evaluate_vqa(
                        loom,
                        folder.path / "mc",
                        VQASettings(model=model, experiment=test_side, seed=train.seed),  # one question set for all seeds
                        quiet=quiet,
                        workers=workers,
                    )
                    try:
                        evaluate_zeroshot(
                            loom,
                            folder.path / "zeroshot",
                            ClipEvalSettings(model=model, experiment=test_side, seed=train.seed),
                            quiet=quiet,
                            workers=workers,
                        )
                    except EvalError as e:  # no single-label records: the multiple-choice table still stands
                        folder.write_bytes("zeroshot-skipped.json", json.dumps({"why": str(e)}).encode())
                    folder.remove("skipped.json")  # from an earlier run with other settings
                except (TrainError, EvalError) as e:
                    folder.write_bytes("skipped.json", json.dumps({"why": str(e)}, indent=1).encode())
                    report.skipped += 1
                folder.write_bytes("done.json", json.dumps({"key": key}).encode())
        tables = {}
        for metric in METRICS:
            runs, skipped = resolve_runs(experiments, [], out, metric)
            if not any(runs.values()):
                continue
            tables[metric] = cg_report(experiments, runs, skipped, seed=train.seed)
            results.write_bytes(f"report/{metric}.json", json.dumps(tables[metric], indent=1).encode())
            results.write_bytes(f"report/{metric}.md", markdown(tables[metric], metric).encode())
            results.write_bytes(f"report/{metric}.png", figure(tables[metric]))
        report.report = tables
    return report
