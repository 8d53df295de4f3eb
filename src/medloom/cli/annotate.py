"""`medloom annotate`: captions, ROI descriptions and questions, with the recipe's step and its flags."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .app import app
from .common import (
    Address,
    AsJson,
    Executor,
    Quiet,
    Wait,
    Workers,
    executor_spec,
    fail,
    print_report,
    resolve_loom,
)


@app.command("annotate")
def annotate_cmd(
    target: Annotated[Path, typer.Argument(help="The loom, or a recipe whose `annotate:` step to run.")],
    captions: Annotated[bool, typer.Option("--captions", help="Captions from the MAT triplet and labels.")] = False,
    rois: Annotated[bool, typer.Option("--rois", help="Multigranular ROI descriptions.")] = False,
    vqa: Annotated[bool, typer.Option("--vqa", help="Multiple-choice, open, yes/no and grounding questions.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed for every random choice (default 0).")] = None,
    knowledge: Annotated[Path | None, typer.Option(help="Knowledge base (YAML/JSONL of term, synonyms, definition).")] = None,
    templates: Annotated[Path | None, typer.Option(help="YAML: task family -> extra caption templates.")] = None,
    instances: Annotated[
        list[str] | None,
        typer.Option(
            "--instances",
            help="A label whose mask regions are counted one by one (repeat for more); "
            "other labels' regions are parts of one structure. Default: lesion and "
            "cell words (nodule, polyp, cell, ...).",
        ),
    ] = None,
    llm: Annotated[str | None, typer.Option(help="OpenAI-compatible server, e.g. http://localhost:8000/v1.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name on that server.")] = None,
    llm_images: Annotated[bool, typer.Option(help="Send images to a multimodal server.")] = False,
    llm_concurrency: Annotated[int, typer.Option(help="Requests in flight at most.", min=1)] = 4,
    llm_max_wait: Annotated[
        float, typer.Option(help="Longest Retry-After honoured, in seconds; a longer one fails the request.", min=0)
    ] = 60.0,
    llm_allow_insecure_key: Annotated[bool, typer.Option(help="Send OPENAI_API_KEY over plain http to another machine.")] = False,
    where: Annotated[str | None, typer.Option(help="Only records matching this SQL condition.")] = None,
    workers: Workers = 0,
    executor: Executor = None,
    address: Address = None,
    as_json: AsJson = False,
    quiet: Quiet = False,
    wait: Wait = False,
) -> None:
    """Generate captions, ROI descriptions and questions for every record (all three unless some are named).

    Stored in LOOM/annotations and shown by `medloom show`; every text is checked against its record.
    """
    import yaml

    from ..annotate import AnnotateSettings, annotate

    step = None
    if target.is_file() and target.suffix in (".yaml", ".yml"):
        from ..recipe import load_recipe

        loaded = load_recipe(target)
        loom, step = loaded.loom, loaded.recipe.annotate
    else:
        loom = resolve_loom(target)
    settings = AnnotateSettings()
    if step is not None:
        settings = AnnotateSettings(
            captions=step.captions,
            rois=step.rois,
            vqa=step.vqa,
            seed=step.seed,
            templates=step.templates,
            knowledge=step.knowledge,
            definitions=step.definitions,
            instances=step.instances,
        )
        if step.llm:
            settings.llm_url, settings.llm_model = step.llm.url, step.llm.model
            settings.llm_images, settings.llm_concurrency = step.llm.images, step.llm.concurrency
            settings.llm_max_wait, settings.llm_allow_insecure_key = step.llm.max_wait, step.llm.allow_insecure_key
    if captions or rois or vqa:
        settings.captions, settings.rois, settings.vqa = captions, rois, vqa
    if seed is not None:
        settings.seed = seed
    if knowledge is not None:
        settings.knowledge = str(knowledge)
    if instances:
        settings.instances = list(instances)
    if templates is not None:
        try:
            settings.templates = yaml.safe_load(templates.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            fail(f"{templates}: {e}")
    if llm:
        settings.llm_url, settings.llm_model, settings.llm_images = llm, model, llm_images
        settings.llm_concurrency, settings.llm_max_wait = llm_concurrency, llm_max_wait
    if llm_allow_insecure_key:
        settings.llm_allow_insecure_key = True
    try:
        report = annotate(
            loom, settings, workers=executor_spec(executor, address, workers), quiet=quiet or as_json, where=where, wait=wait
        )
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=1) + "\n")
        return
    print_report(report)
