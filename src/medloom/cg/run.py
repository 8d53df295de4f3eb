"""`medloom cg run PLAN --out RESULTS`: Med-MAT's experiment end to end, with one model per experiment.

For every target of the plan and every seed (`--seeds`): the Baseline, then for every experiment (each related
combination and its Baseline+, each direction pooled, the ablations, the shared Baseline+) a model trained on
the experiment's `train.txt` only; each is evaluated on the target's test records, as multiple-choice questions
(`RESULTS/TARGET/NAME/seed-S/mc`) and, for CLIP-style models, as zero-shot classification (`.../zeroshot`). The
report (`tables.py`) is written to `RESULTS/report/`. An experiment the plan left untrained (its pool was
smaller than the train size: `short` in its manifest) is n/a with that reason. A model asked as it is (the
pretrained Baseline, hf-lora's Baseline) is evaluated once per target, in the first seed's folder.

- `--trainer clip` (default): medloom's CLIP-style model (`train clip`), answering by image-text similarity; the
  Baseline is the model as `train clip` initialises it, before any step. All runs share the loom's cached tower
  outputs; one killed half-way resumes from its last epoch.
- `--trainer hf-lora --model hf:FOLDER`: the local vision-language model fine-tuned with LoRA per experiment
  (`train/mllm.py`) on its multiple-choice items in Med-MAT's prompt format, and asked as `eval vqa --model hf:`
  asks (`--prompt-format medmat`); the Baseline is the model as it is, Med-MAT's Baseline. An adapter whose
  train.json is written is never trained again; a run killed before that restarts that experiment cleanly. One
  adapter per experiment and seed (`.../seed-S/adapter`).
- `--baseline-model SPEC`: a further column, Baseline (pretrained), any evaluable model (`hf-clip:`, `hf:`,
  `openai:`, `medloom:`) asked as it is.

An experiment whose model and evaluations are complete for the same settings (`done.json`) is skipped when the
command runs again. An experiment that cannot be trained (a mix with no records) or evaluated (no question) is
recorded in `skipped.json` with the reason and shown as n/a in the tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import ModelSpecError, PlanError, ReportError
from ..locks import hold
from ..outputs import OutputFolder
from ..train.mllm import LoraSettings
from ..train.mllm import check as check_lora
from ..train.projections import TrainError, TrainSettings, train_clip, write_untrained
from ..view.selection import experiment_grounding, read_experiment
from .plan import CopyCheck, copies_warning, find_experiments, slug
from .tables import PRETRAINED

METRICS = ("mc", "zeroshot", "nn")


@dataclass
class CGReport:
    out: str
    targets: int = 0
    trained: int = 0
    reused: int = 0
    skipped: int = 0
    probed: int = 0  # experiments whose nearest-neighbour probe was written and asked now
    report: dict | None = None
    warning: str = ""  # experiments that train on copies of their test images (`copies_warning`)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"cg run: {self.targets} target(s), {self.trained} model(s) trained, {self.reused} experiment(s) "
            f"already done, {self.skipped} n/a, {self.probed} nearest-neighbour probe(s) asked; report: "
            f"{Path(self.out) / 'report'}"
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


def spec_key(spec: str, test_side: str, seed: int, prompt_format: str) -> dict:
    """What an evaluation-only run depends on: the model, the target's test side, the seed, the prompt."""
    return {"evaluate": spec, "test": test_side, "seed": seed, "prompt_format": prompt_format}


def run_cg(
    plan: Path,
    out: Path,
    train: TrainSettings,
    *,
    lora: LoraSettings | None = None,
    baseline_model: str | None = None,
    loom: Path | None = None,
    seeds: list[int] | None = None,
    nn_probe: bool = True,
    workers: int | None = None,
    quiet: bool = False,
    progress=print,
) -> CGReport:
    """With `lora` (`--trainer hf-lora`), every experiment fine-tunes `lora.model` (`train/mllm.py`) and the
    Baseline is that model as it is; else `train clip` models, the Baseline untrained. `baseline_model`: a
    further column, any evaluable model spec asked as it is (`--baseline-model`)."""
    from ..evaluate.vqa import EvalError
    from ..models.specs import parse_spec
    from .tables import cg_report, figure, markdown, resolve_runs

    experiments = find_experiments(plan)
    loom = plan_loom(experiments, loom)
    if lora is not None:
        check_lora(lora)
    if baseline_model:
        parse_spec(baseline_model)  # a malformed spec fails here, before anything runs
    prompt_format = lora.prompt_format if lora else "medloom"
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
            seed_list = seeds or [lora.seed if lora else train.seed]
            # asked as it is, once per target (in the first seed's folder, whose questions every seed shares): the
            # --baseline-model, and under hf-lora the Baseline; clip's Baseline is each seed's untrained model
            once = [(seed_list[0], PRETRAINED, None)] if baseline_model else []
            if lora is not None:
                once.insert(0, (seed_list[0], "baseline", None))
            jobs = [*once, *((seed, "baseline", None) for seed in seed_list if lora is None)]
            jobs += [(seed, e["name"], e) for seed in seed_list for e in group]
            for seed, name, experiment in jobs:
                rel = f"{slug(target)}/{name}/seed-{seed}"
                folder = OutputFolder(results.claim_dir(rel))
                settings = replace(train, seed=seed, experiment=experiment["folder"] if experiment else None)
                if name == PRETRAINED:
                    spec, what = baseline_model, spec_key(baseline_model, test_side, train.seed, prompt_format)
                elif lora is not None and experiment is None:
                    spec, what = lora.model, spec_key(lora.model, test_side, train.seed, prompt_format)
                elif lora is not None:
                    tuned = replace(lora, seed=seed, experiment=experiment["folder"])
                    spec, what = None, {"lora": asdict(tuned), "test": test_side, "manifest": experiment}
                else:
                    spec = None
                    what = {"train": asdict(settings), "test": test_side, "untrained": experiment is None, "manifest": experiment}
                key = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
                if finished(folder, "done.json", key):
                    report.reused += 1
                    continue
                progress(f"cg run: {target} / {name} / seed {seed}")
                if experiment is not None and experiment.get("short"):  # the plan drew nothing: n/a, with why
                    folder.write_bytes("skipped.json", json.dumps({"why": experiment["short"]}, indent=1).encode())
                    folder.write_bytes("done.json", json.dumps({"key": key}).encode())
                    report.skipped += 1
                    continue
                try:
                    if spec is None and lora is not None:
                        spec, fresh = fine_tune(loom, folder, tuned, workers, quiet)
                        if fresh:
                            report.trained += 1
                            kill_for_tests(report.trained)
                    elif spec is None and experiment is None:
                        write_untrained(folder.path / "model", train.dim, seed)
                        spec = f"medloom:{folder.path / 'model'}"
                    elif spec is None:
                        train_clip(loom, folder.path / "model", settings, workers=workers, quiet=quiet)
                        report.trained += 1
                        spec = f"medloom:{folder.path / 'model'}"
                    # one question set for all seeds (train.seed: the first seed's)
                    evaluate_spec(loom, folder, spec, test_side, train.seed, prompt_format, workers, quiet)
                    folder.remove("skipped.json")  # from an earlier run with other settings
                except (TrainError, EvalError) as e:
                    folder.write_bytes("skipped.json", json.dumps({"why": str(e)}, indent=1).encode())
                    report.skipped += 1
                folder.write_bytes("done.json", json.dumps({"key": key}).encode())
            if nn_probe:  # the control: what frozen features answer with each experiment's records, no training
                for e in group:
                    folder = OutputFolder(results.claim_dir(f"{slug(target)}/{e['name']}/seed-{seed_list[0]}"))
                    if probe(loom, folder, e, test_side, train.seed, prompt_format, workers, quiet, progress):
                        report.probed += 1
        tables = {}
        for metric in ("nn", *(m for m in METRICS if m != "nn")):  # the probe's first: mc's tables show it
            try:
                runs, skipped = resolve_runs(experiments, [], out, metric)
            except ReportError:  # no run has this metric (a chat model has no zero-shot scores)
                continue
            tables[metric] = cg_report(experiments, runs, skipped, seed=train.seed)
            results.write_bytes(f"report/{metric}.json", json.dumps(tables[metric], indent=1).encode())
            text = markdown(tables[metric], metric, tables.get("nn") if metric == "mc" else None)
            results.write_bytes(f"report/{metric}.md", (text + models_note(tables[metric])).encode())
            results.write_bytes(f"report/{metric}.png", figure(tables[metric]))
        report.report = tables
    return report


def finished(folder: OutputFolder, marker: str, key: str) -> bool:
    """Whether the run behind `marker` (`done.json`, `nn-done.json`) finished with the same settings (`key`)."""
    if not folder.is_owned(marker):
        return False
    return json.loads((folder.path / marker).read_text(encoding="utf-8")).get("key") == key


def probe(
    loom: Path, folder: OutputFolder, e: dict, test_side: str, seed: int, prompt_format: str, workers, quiet: bool, progress
) -> bool:
    """The experiment's nearest-neighbour probe (`train/probe.py`), asked the target's questions into `nn/` (once,
    in the first seed's folder: it has no randomness); skipped when `nn-done.json` matches. Returns whether it
    ran now."""
    from ..evaluate.vqa import EvalError, VQASettings, evaluate_vqa
    from ..train.probe import write_nn_probe

    what = {"nn-probe": e, "test": test_side, "seed": seed, "prompt_format": prompt_format}
    key = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
    if finished(folder, "nn-done.json", key):
        return False
    for part in ("nn", "probe"):  # an earlier probe's answers never stand for this one
        old = OutputFolder(folder.path / part)
        old.remove_many(list(old.owned))
    if e.get("short"):
        folder.write_bytes("nn-skipped.json", json.dumps({"why": e["short"]}).encode())
    else:
        progress(f"cg run: {e['target']} / {e['name']} / nearest-neighbour probe")
        try:
            write_nn_probe(loom, folder.path / "probe", Path(e["folder"]), workers=workers, quiet=quiet)
            spec = f"medloom:{folder.path / 'probe'}"
            settings = VQASettings(model=spec, experiment=test_side, seed=seed, prompt_format=prompt_format)
            evaluate_vqa(loom, folder.path / "nn", settings, quiet=quiet, workers=workers)
            folder.remove("nn-skipped.json")
        except (TrainError, EvalError, ModelSpecError, ImportError, OSError) as err:  # the probe is a control:
            # a missing image tower (the `mllm` extra has none) leaves its column n/a, never the run
            folder.write_bytes("nn-skipped.json", json.dumps({"why": str(err)}).encode())
    folder.write_bytes("nn-done.json", json.dumps({"key": key}).encode())
    return True


def models_note(report: dict) -> str:
    """The models behind the Baseline columns (the table says only "Baseline")."""
    seen = {}
    for t in report["targets"].values():
        for name in ("baseline", PRETRAINED):
            cell = t["runs"].get(name) or {}
            if cell.get("model"):
                seen.setdefault(name, cell["model"])
    words = {"baseline": "Baseline", PRETRAINED: "Baseline (pretrained)"}
    return "".join(f"\n{words[n]}: `{m}`" for n, m in seen.items()) + ("\n" if seen else "")


def evaluate_spec(
    loom: Path, folder: OutputFolder, spec: str, test_side: str, seed: int, prompt_format: str, workers, quiet: bool
) -> None:
    """A model's multiple-choice run on the target's test records (`mc`), and its zero-shot run (`zeroshot`)
    where it is a CLIP-style model; a chat model's zero-shot column says why it has none."""
    from ..evaluate.vqa import EvalError, VQASettings, evaluate_vqa
    from ..evaluate.zeroshot import ClipEvalSettings, evaluate_zeroshot
    from ..models.specs import ClipSpec, parse_spec

    evaluate_vqa(
        loom,
        folder.path / "mc",
        VQASettings(model=spec, experiment=test_side, seed=seed, prompt_format=prompt_format),
        quiet=quiet,
        workers=workers,
    )
    if not isinstance(parse_spec(spec), ClipSpec):
        folder.write_bytes("zeroshot-skipped.json", json.dumps({"why": f"{spec} answers in words: no zero-shot scores"}).encode())
        return
    try:
        evaluate_zeroshot(
            loom,
            folder.path / "zeroshot",
            ClipEvalSettings(model=spec, experiment=test_side, seed=seed),
            quiet=quiet,
            workers=workers,
        )
    except EvalError as e:  # no single-label records: the multiple-choice table still stands
        folder.write_bytes("zeroshot-skipped.json", json.dumps({"why": str(e)}).encode())


def fine_tune(loom: Path, folder: OutputFolder, settings: LoraSettings, workers, quiet: bool) -> tuple[str, bool]:
    """(the adapter's spec, whether it was trained now): an adapter trained with the same settings on the same
    plan (its train.json, written last) is kept; anything else there (an interrupted run's files, another
    plan's adapter and its answers) is cleared and the adapter trained again."""
    from ..train.mllm import train_lora

    experiment = Path(settings.experiment)
    plan_key = hashlib.sha256(
        json.dumps(asdict(settings), sort_keys=True).encode()
        + (experiment / "train.txt").read_bytes()
        + (experiment / "test.txt").read_bytes()
        + json.dumps(sorted(experiment_grounding(experiment))).encode()  # which records train on their boxes
    ).hexdigest()
    adapter = folder.claim_dir("adapter")
    try:
        if json.loads((adapter / "train.json").read_text(encoding="utf-8")).get("plan") == plan_key:
            return f"hf:{adapter}", False
    except (OSError, ValueError):
        pass
    shutil.rmtree(adapter, ignore_errors=True)  # a folder medloom claimed whole: every file in it is its own
    answers = OutputFolder(folder.path / "mc")  # answers cached from another adapter: only the files medloom wrote
    answers.remove_many(list(answers.owned))
    test = {i for i, side in read_experiment(experiment).items() if side == "test"}
    train_lora(loom, adapter, settings, forbidden=test, workers=workers, quiet=quiet, extra={"plan": plan_key})
    return f"hf:{adapter}", True


def kill_for_tests(trained: int) -> None:
    """tests/test_cg_mllm.py's resume test: the process SIGKILLs itself right after its Nth adapter is written."""
    if os.environ.get("MEDLOOM_TEST_KILL_AFTER_TRAINING") == str(trained):
        os.kill(os.getpid(), signal.SIGKILL)
