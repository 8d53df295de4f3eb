"""`medloom eval`: multiple-choice VQA, zero-shot, retrieval, paired comparison of runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .app import eval_app
from .common import (
    Address,
    ClipModelOption,
    Executor,
    ExperimentOption,
    Loom,
    Quiet,
    RunOption,
    SplitOption,
    SubsetOption,
    WhereOption,
    WorkersOption,
    err,
    executor_spec,
    fail,
    os_error_message,
    out,
    resolve_loom,
    split_option,
)


@eval_app.command("vqa")
def eval_vqa(
    loom: Loom,
    model: Annotated[
        str,
        typer.Option(
            help="openai:http://HOST:PORT/v1#MODEL (vLLM, Ollama, LMDeploy, "
            "OpenAI), hf:PATH (a local transformers vision-language "
            "model), or medloom:PATH or hf-clip:PATH (CLIP-style models: "
            "each option scored by image-text similarity)."
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="The run folder (predictions.parquet, results.json, cache/).")],
    split: Annotated[str, typer.Option(help="The split evaluated: test, val or train.")] = "test",
    subset: Annotated[str | None, typer.Option(help="Only this named subset's records.")] = None,
    experiment: Annotated[Path | None, typer.Option(help="A `cg plan` experiment folder: its test records.")] = None,
    where: Annotated[str | None, typer.Option(help="Only records matching this SQL condition.")] = None,
    circular: Annotated[bool, typer.Option(help="Ask every rotation of the options; right only when all are.")] = False,
    images: Annotated[bool, typer.Option(help="Send each image (JPEG, 512 px) with its question.")] = True,
    seed: Annotated[int, typer.Option(help="Seed for questions made on the fly and the bootstrap.")] = 0,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at most.", min=1)] = 8,
    retries: Annotated[int, typer.Option(help="Retries of a failed request.", min=0)] = 3,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds one answer may take at most, from sending the "
            "question to the reply's last byte, every retry included "
            "(a server trickling bytes is cut off).",
            min=0.1,
        ),
    ] = 120.0,
    max_failures: Annotated[
        int,
        typer.Option(
            help="Stop after this many failed questions in a row (what was answered is kept; run again to resume).", min=1
        ),
    ] = 20,
    allow_insecure_key: Annotated[bool, typer.Option(help="Send OPENAI_API_KEY over plain http to another machine.")] = False,
    judge: Annotated[
        str | None,
        typer.Option(
            help="openai:URL#MODEL: a chat model that maps each invalid "
            "answer to an option's letter, or leaves it invalid "
            "(logged in RUN/judge.jsonl)."
        ),
    ] = None,
    questions: Annotated[
        str,
        typer.Option(
            help="source: the benchmark's own questions (vqa, vlmeval_tsv, vqa_parquet readers; open and closed, "
            "scored by closed accuracy, exact match and token recall); generated: the multiple-choice questions "
            "of `medloom annotate`; auto: source where the selection has any."
        ),
    ] = "auto",
    max_tokens: Annotated[
        int,
        typer.Option(
            help="The longest reply asked of the server, in tokens: room for a reasoning model to think before "
            "its letter. A reply cut there (finish_reason length) counts wrong, reported apart from invalid.",
            min=1,
        ),
    ] = 2048,
    prompt_format: Annotated[
        str,
        typer.Option(
            help="How options are written: medloom (`A. option` lines) or medmat (Med-MAT's Question-choice, `A: "
            "option` lines: what `cg run --trainer hf-lora` trains on); both end with the instruction line."
        ),
    ] = "medloom",
    workers: Annotated[int, typer.Option("--workers", "-w", help="Processes rendering the images (default: all cores).")] = 0,
    executor: Executor = None,
    address: Address = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results.json.")] = False,
    quiet: Quiet = False,
) -> None:
    """Ask a model every multiple-choice question of the selection; accuracy with 95% Wilson and patient-bootstrap
    intervals per MAT triplet, per source and overall. Invalid answers (no parsing rule matched) count wrong."""
    from ..evaluate import VQASettings, evaluate_vqa
    from ..evaluate.metrics import table_rows

    split_name = split_option(split)
    settings = VQASettings(
        model=model,
        split=split_name,
        subset=subset,
        experiment=str(experiment) if experiment else None,
        where=where,
        circular=circular,
        images=images,
        seed=seed,
        concurrency=concurrency,
        retries=retries,
        timeout=timeout,
        max_failures=max_failures,
        allow_insecure_key=allow_insecure_key,
        judge=judge,
        questions=questions,
        max_tokens=max_tokens,
        prompt_format=prompt_format,
    )
    try:
        results = evaluate_vqa(
            resolve_loom(loom), out_dir, settings, quiet=quiet or as_json, workers=executor_spec(executor, address, workers)
        )
    except FileNotFoundError as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps(results, indent=1) + "\n")
    else:
        table = Table(
            title=f"{results['settings']['model']} on {results['settings']['selection']}" + (" (circular)" if circular else ""),
            title_justify="left",
        )
        for name in ("group", "n", "accuracy", "95% Wilson", "95% bootstrap (patients)", "invalid", "class recall"):
            table.add_column(name, justify="left" if name == "group" else "right")
        for name, m in table_rows(results):
            if not m["n"]:
                table.add_row(escape(name), "0", *["-"] * 5)
                continue
            table.add_row(
                escape(name),
                str(m["n"]),
                f"{m['accuracy']:.3f}",
                f"{m['wilson95'][0]:.3f}-{m['wilson95'][1]:.3f}",
                f"{m['bootstrap95'][0]:.3f}-{m['bootstrap95'][1]:.3f} ({m['clusters']})",
                f"{m['invalid_rate']:.1%}",
                f"{m['mean_class_recall']:.3f}",
            )
        out.print(table)
        if results.get("benchmark"):
            print_benchmark(results["benchmark"])
        out.print("rules: " + ", ".join(f"{k} {v}" for k, v in sorted(results["rules"].items())), highlight=False)
        if results["overall"].get("truncated"):
            out.print(
                f"truncated: {results['overall']['truncated']} replies cut at --max-tokens {max_tokens} (counted wrong, "
                "not invalid); raise --max-tokens to let them finish",
                highlight=False,
            )
        if results.get("judge"):
            j = results["judge"]
            out.print(
                f"judge {escape(j['model'])}: {j['mapped']} of {j['asked']} invalid answers mapped to an option"
                + (f", {j['errors']} failed (still invalid)" if j["errors"] else "")
                + f"; log: {out_dir / 'judge.jsonl'}",
                highlight=False,
            )
    if not results["complete"]:
        err.print(
            f"stopped: {results['answered']} of {results['asked']} answers, {results['failed']} failed "
            f"(last: {escape(results['last_error'])}); run the same command again to ask only the rest",
            highlight=False,
        )
        raise typer.Exit(1)


def print_benchmark(bench: dict) -> None:
    """The named metrics of a run on a benchmark's own questions, per answer type, triplet and source."""

    def cell(m: dict) -> str:
        if not m["n"]:
            return "-"
        lo, hi = m["bootstrap95"]
        return f"{m['value']:.3f} ({lo:.3f}-{hi:.3f}) n={m['n']}"

    table = Table(title="benchmark questions (95% bootstrap, patients)", title_justify="left")
    for name in ("group", "closed accuracy", "open exact match", "open token recall", "exact match"):
        table.add_column(name, justify="left" if name == "group" else "right")
    groups = [
        *((f"{k} questions", v) for k, v in bench["by_answer_type"].items()),
        *bench["by_triplet"].items(),
        *((f"source {k}", v) for k, v in bench["by_source"].items()),
        ("overall", bench["overall"]),
    ]
    for name, m in groups:
        table.add_row(
            escape(name),
            cell(m["closed_accuracy"]),
            cell(m["open_exact_match"]),
            cell(m["open_token_recall"]),
            cell(m["exact_match"]),
        )
    out.print(table)


def _clip_eval(
    kind: str,
    loom: Path,
    model: str,
    out_dir: Path,
    split: str,
    subset: str | None,
    experiment: Path | None,
    where: str | None,
    templates: Path | None,
    seed: int,
    workers,
    as_json: bool,
    quiet: bool,
) -> dict:
    from ..evaluate.zeroshot import ClipEvalSettings, evaluate_retrieval, evaluate_zeroshot

    split_name = split_option(split)
    prompts = None
    if templates is not None:
        try:
            prompts = [line.strip() for line in templates.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as e:
            fail(f"--templates {templates}: {os_error_message(e)}")
        bad = [p for p in prompts if "{c}" not in p]
        if bad or not prompts:
            fail(
                f"--templates {templates}: every line needs {{c}} where the class name goes"
                + (f" (not: {bad[0]!r})" if bad else "")
            )
    settings = ClipEvalSettings(
        model=model,
        split=split_name,
        subset=subset,
        experiment=str(experiment) if experiment else None,
        where=where,
        templates=prompts,
        seed=seed,
    )
    run = evaluate_zeroshot if kind == "zeroshot" else evaluate_retrieval
    try:
        results = run(resolve_loom(loom), out_dir, settings, quiet=quiet or as_json, workers=workers)
    except FileNotFoundError as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps(results, indent=1) + "\n")
    return results


@eval_app.command("zeroshot")
def eval_zeroshot(
    loom: Loom,
    model: ClipModelOption,
    out_dir: RunOption,
    split: SplitOption = "test",
    subset: SubsetOption = None,
    experiment: ExperimentOption = None,
    where: WhereOption = None,
    templates: Annotated[Path | None, typer.Option(help="Prompt templates, one per line with {c} for the class name.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    workers: WorkersOption = 0,
    executor: Executor = None,
    address: Address = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results.json.")] = False,
    quiet: Quiet = False,
) -> None:
    """Zero-shot classification per source (its label space as the classes): top-1 with Wilson and patient-
    bootstrap intervals, top-5, mean per-class recall, AUROC for two classes."""
    results = _clip_eval(
        "zeroshot",
        loom,
        model,
        out_dir,
        split,
        subset,
        experiment,
        where,
        templates,
        seed,
        executor_spec(executor, address, workers),
        as_json,
        quiet,
    )
    if as_json:
        return
    table = Table(title=f"{model} zero-shot on {results['settings']['selection']}", title_justify="left")
    for name in ("task", "classes", "n", "top-1", "95% Wilson", "95% bootstrap (patients)", "top-5", "class recall", "AUROC"):
        table.add_column(name, justify="left" if name == "task" else "right")
    rows = [(k, v) for k, v in results["tasks"].items()] + [("overall", results["overall"])]
    for name, m in rows:
        table.add_row(
            escape(name),
            str(len(m.get("classes", [])) or "-"),
            str(m["n"]),
            f"{m['accuracy']:.3f}",
            f"{m['wilson95'][0]:.3f}-{m['wilson95'][1]:.3f}",
            f"{m['bootstrap95'][0]:.3f}-{m['bootstrap95'][1]:.3f} ({m['clusters']})",
            f"{m['top5']:.3f}",
            f"{m['mean_class_recall']:.3f}",
            f"{m['auroc']:.3f}" if m.get("auroc") is not None else "-",
        )
    out.print(table)


@eval_app.command("retrieval")
def eval_retrieval(
    loom: Loom,
    model: ClipModelOption,
    out_dir: RunOption,
    split: SplitOption = "test",
    subset: SubsetOption = None,
    experiment: ExperimentOption = None,
    where: WhereOption = None,
    workers: WorkersOption = 0,
    executor: Executor = None,
    address: Address = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results.json.")] = False,
    quiet: Quiet = False,
) -> None:
    """Image-to-text and text-to-image retrieval over the records' texts (the export text rule): recall@1/5/10."""
    results = _clip_eval(
        "retrieval",
        loom,
        model,
        out_dir,
        split,
        subset,
        experiment,
        where,
        None,
        0,
        executor_spec(executor, address, workers),
        as_json,
        quiet,
    )
    if as_json:
        return
    i2t, t2i = results["image_to_text"], results["text_to_image"]
    out.print(
        f"{results['images']} images, {results['texts']} distinct texts ({escape(results['settings']['selection'])}): "
        f"image to text R@1 {i2t['R@1']:.3f} R@5 {i2t['R@5']:.3f} R@10 {i2t['R@10']:.3f}; text to image "
        f"R@1 {t2i['R@1']:.3f} R@5 {t2i['R@5']:.3f} R@10 {t2i['R@10']:.3f}",
        highlight=False,
    )


@eval_app.command("compare")
def eval_compare(
    run_a: Annotated[Path, typer.Argument(help="The first run folder.")],
    run_b: Annotated[Path, typer.Argument(help="The second run folder.")],
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """B minus A on the questions both runs answered: exact McNemar test and a paired bootstrap interval."""
    from ..evaluate import compare

    result = compare(run_a, run_b, seed=seed)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
        return
    out.print(
        f"{result['shared']} shared questions (only A {result['only_a']}, only B {result['only_b']}): "
        f"A {result['a']['accuracy']:.3f} ({escape(result['a']['model'])}), "
        f"B {result['b']['accuracy']:.3f} ({escape(result['b']['model'])}); B - A = {result['difference']:+.3f}, "
        f"95% paired bootstrap {result['bootstrap95'][0]:+.3f} to {result['bootstrap95'][1]:+.3f}; "
        f"exact McNemar p = {result['mcnemar_exact_p']:.4g} ({result['a_right_b_wrong']} only A right, "
        f"{result['b_right_a_wrong']} only B right)",
        highlight=False,
    )
