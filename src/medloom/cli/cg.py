"""`medloom cg`: compositional-generalization experiments (Med-MAT)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .. import layout
from .app import cg_app
from .common import (
    TOWERS_HINT,
    Address,
    AsJson,
    Executor,
    Loom,
    Quiet,
    Wait,
    WorkersOption,
    err,
    executor_spec,
    fail,
    out,
    resolve_loom,
)


@cg_app.command("subsets")
def cg_subsets(loom: Loom, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Records grouped by MAT triplet across sources (Med-MAT's subsets), with sizes and label spaces."""
    from ..cg.plan import mat_subsets, name

    found = mat_subsets(resolve_loom(loom))
    data = [
        {"triplet": name(t), "records": s.records, "sources": s.sources, "labels": s.labels} for t, s in sorted(found.items())
    ]
    if as_json:
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
        return
    table = Table(title=f"{len(data)} MAT subsets", title_justify="left")
    for col in ("modality|anatomy|task", "records", "sources", "labels"):
        table.add_column(col)
    for d in data:
        table.add_row(
            escape(d["triplet"]),
            str(d["records"]),
            escape(", ".join(d["sources"])),
            escape(", ".join(d["labels"][:12]) + (" ..." if len(d["labels"]) > 12 else "")),
        )
    out.print(table)


@cg_app.command("matrix")
def cg_matrix(
    loom: Annotated[Path | None, typer.Argument(help="The loom (working folder) holding catalog/.")] = None,
    registry: Annotated[
        str | None,
        typer.Option(help="Instead of a loom: a published registry's subsets (medmat), from their M/A/T; no data needed."),
    ] = None,
    target: Annotated[
        int | None, typer.Option(help="With --registry: one subset's related subsets, what each shares, its roles.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """For every subset as a target: the training subsets each direction type has (0: not reachable).

    With --registry medmat the subsets are Med-MAT's 53, compared by the registry's normalised triplet, before
    anything is downloaded; --target N shows subset N's related subsets."""
    from ..cg.plan import DIRECTIONS, matrix

    if (loom is None) == (registry is None):
        fail("give a loom, or --registry medmat for Med-MAT's subsets without data (not both)")
    if target is not None and registry is None:
        fail("--target N names a registry subset: use it with --registry medmat")
    if registry is not None:
        _registry_matrix(registry, target, as_json)
        return
    m = matrix(resolve_loom(loom))
    if as_json:
        sys.stdout.write(json.dumps(m, indent=1) + "\n")
        return
    table = Table(title="training subsets per direction (0: the direction cannot reach the target)", title_justify="left")
    table.add_column("target")
    for d in DIRECTIONS:
        table.add_column(d, justify="right")
    for target_name, row in m.items():
        table.add_row(escape(target_name), *(str(row[d]) if row[d] else "-" for d in DIRECTIONS))
    out.print(table)


SHORT = {"fixed-modality": "fix M", "fixed-area": "fix A", "fixed-task": "fix T", "modality-area": "M+A", "three-way": "3-way"}


def _mat(terms: dict) -> str:
    return " | ".join(terms[e] or "?" for e in ("modality", "area", "task"))


def _registry_matrix(name: str, target: int | None, as_json: bool) -> None:
    """`cg matrix --registry NAME [--target N]`."""
    from ..cg.plan import DIRECTIONS
    from ..cg.registry import registry_matrix, target_view
    from ..registry import load

    reg = load(name)
    data = registry_matrix(reg) if target is None else {"registry": reg.name, **target_view(target, reg)}
    if as_json:
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
        return
    if target is None:
        table = Table(
            title=f"{name} subsets: training subsets per direction (-: it cannot reach the target; fix M: fixed-modality, "
            f"M+A: modality-area); task terms: {data['task_terms']}",
            title_justify="left",
        )
        table.add_column("No.")
        table.add_column("compared M | A | T (?: shares nothing)")
        for col in (*SHORT.values(), "related"):
            table.add_column(col, justify="right")
        for row in data["subsets"]:
            table.add_row(
                str(row["number"]),
                escape(_mat(row["compared"])),
                *(str(row["directions"][d]) if row["directions"][d] else "-" for d in DIRECTIONS),
                str(len(row["related"])),
            )
        out.print(table)
        return
    t = data["target"]
    table = Table(
        title=f"subset {t['number']} ({_mat(t['written'])}; compared as {_mat(t['compared'])}): "
        f"{len(data['related'])} related subsets",
        title_justify="left",
    )
    for col in ("No.", "as published", "compared", "shares", "roles"):
        table.add_column(col)
    for r in data["related"]:
        table.add_row(
            str(r["number"]),
            escape(_mat(r["written"])),
            escape(_mat(r["compared"])),
            " and ".join(r["shares"]),
            escape(", ".join(r["roles"]) or "-"),
        )
    out.print(table)
    reached = ", ".join(data["reached_by"]) or "none"
    out.print(f"reached by: {reached}", highlight=False)
    if data["same_triplet"]:
        out.print(
            f"same triplet (one subset with it in a loom, never its training data): {data['same_triplet']}", highlight=False
        )
    out.print(f"unrelated: {len(data['unrelated'])} subsets", highlight=False)
    if t["task_from"] == "written" or any(r["task_from"] == "written" for r in data["related"]):
        out.print(
            "task terms the registry does not store yet are read from the written task (see docs/splits-and-cg.md)",
            highlight=False,
        )


@cg_app.command("plan")
def cg_plan(
    loom: Loom,
    target: Annotated[str | None, typer.Option(help='The unseen triplet, e.g. "CT,lung,cancer".')] = None,
    all_targets: Annotated[bool, typer.Option("--all", help="Every subset in turn as the target.")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where experiment folders go (default: LOOM/experiments).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the records each experiment draws from its pool.")] = 0,
    train_size: Annotated[
        str | None,
        typer.Option(
            help="Training records of every experiment of a target: a number, `smallest` (default: the smallest "
            "related combination's pool) or `all` (each experiment's whole pool, Med-MAT's way; sizes then differ). "
            "A pool too small is written untrained, with why."
        ),
    ] = None,
    designs: Annotated[
        str | None,
        typer.Option(
            help="Which designs to plan, comma-separated: combinations (Table 3 and 4 rows, each with its "
            "Baseline+), pooled (one experiment per direction), ablations (all related / unrelated / data, "
            "without M, A or T). Default: all three."
        ),
    ] = None,
    options: Annotated[
        int,
        typer.Option(
            help="The fewest options a target question has: a target with fewer labels gets distractors from "
            "the findings of other tasks in its modality or area.",
            min=2,
            max=4,
        ),
    ] = 3,
    strict: Annotated[
        bool,
        typer.Option(
            help="Refuse (exit 1, nothing written) when an experiment would "
            "train on exact or near copies of its target's test images; "
            "default: warn."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the experiments as JSON.")] = False,
    wait: Wait = False,
) -> None:
    """Write one folder per experiment (train.txt, test.txt, manifest.json saying why each subset is in): per
    target, one per related subset combination with its own Baseline+, one per direction pooled, and the
    ablations, all drawing the same number of training records."""
    from ..cg.design import parse_designs, parse_train_size
    from ..cg.plan import copies_warning, mat_subsets, parse_target, plan

    loom = resolve_loom(loom)
    if bool(target) == all_targets:
        fail('give --target "M,A,T" or --all')
    try:
        targets = sorted(mat_subsets(loom)) if all_targets else [parse_target(target)]
        experiments = plan(
            loom,
            targets,
            out_dir or layout.experiments_dir(loom),
            seed=seed,
            strict=strict,
            train_size=parse_train_size(train_size),
            designs=parse_designs(designs),
            options=options,
            wait=wait,
        )
    except FileNotFoundError as e:
        fail(str(e))
    warning = copies_warning(experiments)
    if warning:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    for e in experiments:
        if e["short"]:
            err.print(f"{escape(e['target'])} / {e['name']}: not trained: {escape(e['short'])}", highlight=False)
    if as_json:
        sys.stdout.write(json.dumps([{k: v for k, v in e.items() if k != "why"} for e in experiments], indent=1) + "\n")
        return
    table = Table(title=f"{len(experiments)} experiments", title_justify="left")
    for col in ("target", "name", "train subsets", "pool", "train", "test", "note"):
        table.add_column(col)
    for e in experiments:
        table.add_row(
            escape(e["target"]),
            e["name"],
            escape(_subsets_text(e)),
            str(e["pool_records"]),
            "n/a" if e["short"] else str(e["train_records"]),
            str(e["test_records"]),
            escape(e["note"] or ("pool too small" if e["short"] else "")),
        )
    out.print(table)
    sizes = sorted({(e["target"], str(e["train_size"])) for e in experiments})
    out.print("train size: " + "; ".join(f"{escape(t)}: {n}" for t, n in sizes), highlight=False)
    out.print(f"experiments: {out_dir or loom / 'experiments'}", highlight=False)


def _subsets_text(e: dict) -> str:
    grounding = set(e.get("grounding") or [])
    if e["kind"] == "combination":  # a detection subset (trained on its boxes) marked as in the report's Table 5
        return " + ".join(f"{r} (det)" if r in grounding else r for r in e["roles"])
    n = len(e["train_subsets"])
    if e["kind"] == "baseline-plus" and e["roles"]:
        return f"{n} unrelated (control of {e['name'].removeprefix('baseline-plus-')})"
    return f"{n} ({len(grounding)} det)" if grounding else str(n)


def _print_cg_tables(report: dict, metric: str, probe: dict | None = None) -> None:
    from ..cg.tables import PROBE_NOTE, legend, missing_lines, power_lines, sections

    what = {"mc": "multiple-choice", "nn": "nearest-neighbour probe"}.get(metric, "zero-shot top-1")
    for title, header, rows in sections(report, probe):
        table = Table(title=f"{title} ({what})", title_justify="left")
        for i, col in enumerate(header):
            table.add_column(escape(col), justify="left" if i < 2 else "right")
        for row in rows:
            table.add_row(*map(escape, row))
        out.print(table)
    for line in [*legend(report), *([PROBE_NOTE] if probe is not None else []), *power_lines(report)]:
        out.print(escape(line), highlight=False)
    for line in missing_lines(report):
        err.print(f"n/a: {escape(line)}", highlight=False)


TRAINERS = ("clip", "hf-lora", "llamafactory", "swift")


@cg_app.command("run")
def cg_run_cmd(
    plan: Annotated[Path, typer.Argument(help="A `cg plan` output folder (or one target's folder).")],
    out_dir: Annotated[
        Path, typer.Option("--out", help="The results folder: a model and its evaluations per experiment, and report/.")
    ],
    loom: Annotated[Path | None, typer.Option(help="The loom (default: the one the plan names).")] = None,
    trainer: Annotated[
        str,
        typer.Option(
            help="clip: medloom's CLIP-style model; hf-lora: --model hf:FOLDER fine-tuned with LoRA per experiment; "
            "llamafactory or swift (with --emit-configs): each experiment's config and dataset for that trainer."
        ),
    ] = "clip",
    model: Annotated[
        str | None,
        typer.Option(help="The vision-language model to fine-tune: hf:FOLDER (hf-lora; llamafactory/swift also take a hub id)."),
    ] = None,
    baseline_model: Annotated[
        str | None,
        typer.Option(
            help="A pretrained Baseline beside the others: any evaluable model spec (hf-clip:, hf:, openai:, medloom:)."
        ),
    ] = None,
    emit_configs: Annotated[
        bool, typer.Option(help="With --trainer llamafactory|swift: write the configs and datasets, train nothing.")
    ] = False,
    template: Annotated[
        str | None, typer.Option(help="LLaMA-Factory's chat template for --model (default: read from its config.json).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="clip: training epochs per model.", min=1)] = 20,
    steps: Annotated[int, typer.Option(help="hf-lora, llamafactory, swift: optimiser steps per experiment.", min=1)] = 100,
    batch_size: Annotated[
        int | None, typer.Option(help="Examples per step (default: 64 for clip, 8 for the others).", min=1)
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="AdamW learning rate (default: 1e-3 for clip, 2e-4 for LoRA).", min=1e-9)
    ] = None,
    dim: Annotated[int, typer.Option(help="clip: size of the shared embedding space.", min=1)] = 256,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank.", min=1)] = 8,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha (the update is scaled by alpha / rank).", min=1)] = 16,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout.", min=0.0, max=0.99)] = 0.05,
    device: Annotated[str, typer.Option(help="hf-lora: auto (the GPU when torch sees one), cuda or cpu.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of every model and of the bootstrap.")] = 0,
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Run every experiment once per seed, e.g. 0,1,2 (instead of --seed); the report gives the mean, "
            "sd and each seed."
        ),
    ] = None,
    nn_probe: Annotated[
        bool,
        typer.Option(
            help="The control: per experiment, a nearest-neighbour probe on the frozen image features of its training "
            "records (no training), asked the target's questions and shown beside the trained models (report/nn.md)."
        ),
    ] = True,
    workers: WorkersOption = 0,
    executor: Executor = None,
    address: Address = None,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """For every experiment of a plan and every seed: train a model on its mix (a CLIP-style model, or a
    vision-language model fine-tuned with LoRA), evaluate it on the target's test records beside the Baseline;
    then print Med-MAT's tables. Finished experiments are skipped when run again. With --emit-configs, write
    LLaMA-Factory's or ms-swift's per-experiment configs (one per seed) instead."""
    from ..cg.run import run_cg
    from ..train.mllm import LoraSettings
    from ..train.projections import TrainSettings

    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()] if seeds else [seed]
    except ValueError:
        fail(f"--seeds {seeds!r}: give whole numbers separated by commas, e.g. 0,1,2")
    if not seed_list or len(set(seed_list)) != len(seed_list) or min(seed_list) < 0:
        fail(f"--seeds {seeds!r}: give distinct whole numbers (at least one), e.g. 0,1,2")
    if trainer not in TRAINERS:
        fail(f"--trainer {trainer!r}: one of {', '.join(TRAINERS)}")
    if trainer in ("llamafactory", "swift") and not emit_configs:
        fail(f"--trainer {trainer}: medloom does not run {trainer}; add --emit-configs to write its configs and datasets")
    if emit_configs and trainer not in ("llamafactory", "swift"):
        fail("--emit-configs is for --trainer llamafactory or swift")
    if trainer != "clip" and not model:
        fail(f"--trainer {trainer} needs --model (hf:FOLDER, the vision-language model to fine-tune)")
    if trainer == "clip" and batch_size == 1:
        fail("--batch-size: the clip trainer's contrastive loss needs at least 2 pairs a step")
    if trainer == "clip" and model:
        fail("--model names the model --trainer hf-lora (or llamafactory, swift) fine-tunes; clip trains its own")
    lora = LoraSettings(
        model=model or "",
        steps=steps,
        batch_size=batch_size or 8,
        lr=lr or 2e-4,
        rank=lora_rank,
        alpha=lora_alpha,
        dropout=lora_dropout,
        seed=seed_list[0],
        device=device,
    )
    say = (lambda _: None) if quiet or as_json else (lambda m: err.print(escape(m), highlight=False))
    if emit_configs:
        from ..cg.emit import emit_configs as emit

        try:
            written = emit(
                plan,
                out_dir,
                trainer,
                lora,
                template=template,
                loom=resolve_loom(loom) if loom else None,
                seeds=seed_list,
                workers=executor_spec(executor, address, workers),
                progress=say,
            )
        except FileNotFoundError as e:
            fail(str(e))
        if as_json:
            sys.stdout.write(json.dumps(written, indent=1) + "\n")
        else:
            out.print(
                f"{trainer}: {len(written['experiments'])} experiment config(s) in {out_dir}; run {written['script']}",
                highlight=False,
            )
        return
    settings = TrainSettings(epochs=epochs, batch_size=batch_size or 64, lr=lr or 1e-3, dim=dim, seed=seed_list[0])
    try:
        report = run_cg(
            plan,
            out_dir,
            settings,
            lora=lora if trainer == "hf-lora" else None,
            baseline_model=baseline_model,
            loom=resolve_loom(loom) if loom else None,
            seeds=seed_list,
            nn_probe=nn_probe,
            workers=executor_spec(executor, address, workers),
            quiet=quiet or as_json,
            progress=say,
        )
    except FileNotFoundError as e:
        fail(str(e))
    except ImportError as e:
        fail(f"{e}; {TOWERS_HINT}")
    if report.warning:
        err.print(f"[yellow]warning:[/yellow] {escape(report.warning)}", highlight=False)
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=1) + "\n")
        return
    tables = report.report or {}
    for metric, table in tables.items():
        if metric != "nn":  # the probe shows beside the multiple-choice runs (report/nn.md has its own tables)
            _print_cg_tables(table, metric, tables.get("nn") if metric == "mc" else None)
    out.print(escape(report.summary()), highlight=False)


@cg_app.command("report")
def cg_report_cmd(
    plan: Annotated[Path, typer.Argument(help="A `cg plan` output folder (or one target's folder).")],
    runs: Annotated[
        list[str] | None,
        typer.Option(
            "--runs",
            help="NAME=RUN: an `eval vqa` or `eval "
            "zeroshot` run folder under an experiment's name (baseline, baseline-plus, fixed-task-1, "
            "baseline-plus-fixed-task-1, related-fixed-modality, all-related, without-task, ...); TARGET_FOLDER/NAME=RUN "
            "for one target only. Repeat it; a name given again is its next seed's run.",
        ),
    ] = None,
    results: Annotated[Path | None, typer.Option(help="A `cg run` results folder: its runs.")] = None,
    metric: Annotated[
        str, typer.Option(help="With --results: mc (multiple choice), zeroshot, or nn (the nearest-neighbour probes).")
    ] = "mc",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write report.json, report.md and report.png here.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    as_json: AsJson = False,
) -> None:
    """Med-MAT's Tables 3 and 4 and Figure 4's ablations for a plan: each target's accuracy under each run (mean
    and spread over seeds), marks where a run is better (*) or worse (!) than its Baseline+ after Holm's
    correction, the test size and the smallest effect it detects, and a bar chart like Med-MAT's Figure 4."""
    from ..cg.plan import find_experiments
    from ..cg.tables import cg_report, figure, markdown, resolve_runs
    from ..errors import ReportError
    from ..outputs import OutputFolder

    if metric not in ("mc", "zeroshot", "nn"):
        fail(f"--metric {metric!r}: use mc, zeroshot or nn")
    experiments = find_experiments(plan)
    found, skipped = resolve_runs(experiments, runs or [], results, metric)
    report = cg_report(experiments, found, skipped, seed=seed)
    probe = None
    if metric == "mc" and results is not None:  # the probes `cg run` asked, beside the trained runs
        try:
            probe = cg_report(experiments, *resolve_runs(experiments, [], results, "nn"), seed=seed)
        except ReportError:
            probe = None
    if out_dir is not None:
        folder = OutputFolder(out_dir)
        folder.require_only_own("report")
        folder.write_bytes("report.json", json.dumps(report, indent=1).encode())
        folder.write_bytes("report.md", markdown(report, metric, probe).encode())
        folder.write_bytes("report.png", figure(report))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
        return
    _print_cg_tables(report, metric, probe)
    if out_dir is not None:
        out.print(f"report: {out_dir}", highlight=False)
