"""`medloom train clip`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .app import train_app
from .common import (
    TOWERS_HINT,
    Address,
    AsJson,
    Executor,
    Loom,
    Quiet,
    SubsetOption,
    Wait,
    WhereOption,
    WorkersOption,
    err,
    executor_spec,
    fail,
    out,
    resolve_loom,
    split_option,
)


@train_app.command("clip")
def train_clip_cmd(
    loom: Loom,
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="The model folder (medloom-clip.json, projection.npz, train.json, loss.png, checkpoint.pt)."),
    ],
    split: Annotated[str, typer.Option(help="The split trained on.")] = "train",
    subset: SubsetOption = None,
    experiment: Annotated[Path | None, typer.Option(help="A `cg plan` experiment folder: trains on its train.txt only.")] = None,
    mix: Annotated[
        str | None,
        typer.Option(
            help="With --experiment TARGET_FOLDER: the experiment "
            "by name (related-fixed-task, all-related, "
            "without-area, baseline-plus, ...)."
        ),
    ] = None,
    where: WhereOption = None,
    epochs: Annotated[int, typer.Option(help="Passes over the records.", min=1)] = 20,
    batch_size: Annotated[int, typer.Option(help="Image-text pairs per step.", min=2)] = 64,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.", min=1e-9)] = 1e-3,
    dim: Annotated[int, typer.Option(help="Size of the shared embedding space.", min=1)] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and the order.")] = 0,
    prompts: Annotated[bool, typer.Option(help="Train single-label records on their class prompts too.")] = True,
    image_tower: Annotated[
        str,
        typer.Option(
            help="efficientnet-lite0 (locked, LiT). Continual "
            "pretraining of a full open_clip model runs "
            "open_clip's trainer: examples/train/open_clip.sh "
            "with PRETRAINED=CHECKPOINT."
        ),
    ] = "efficientnet-lite0",
    workers: WorkersOption = 0,
    executor: Executor = None,
    address: Address = None,
    as_json: AsJson = False,
    quiet: Quiet = False,
    wait: Wait = False,
) -> None:
    """Train projections (and the temperature) over the locked EfficientNet-Lite0 and MiniLM towers with a
    contrastive loss; resumes from its last epoch; `medloom eval ... --model medloom:OUT` reads the result."""
    from ..train.projections import TrainSettings, train_clip

    if image_tower != "efficientnet-lite0":
        fail(
            f"--image-tower {image_tower!r}: `train clip` trains projections over the locked efficientnet-lite0; "
            "to continue pretraining a full open_clip model (open_clip:CHECKPOINT), run open_clip's own trainer on "
            "the loom's WebDataset export: PRETRAINED=CHECKPOINT examples/train/open_clip.sh LOOM (it needs "
            "open_clip_torch and torchvision)"
        )
    split_name = split_option(split)
    if mix is not None:
        if experiment is None:
            fail("--mix names an experiment of a target folder: give that folder with --experiment")
        names = sorted(p.parent.name for p in experiment.glob("*/manifest.json"))
        if mix not in names:
            fail(
                f"--mix {mix!r}: {experiment} has "
                + (", ".join(names) if names else "no experiment (is it a target folder of `cg plan`?)")
            )
        experiment = experiment / mix
    settings = TrainSettings(
        split=split_name,
        subset=subset,
        experiment=str(experiment) if experiment else None,
        where=where,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        dim=dim,
        seed=seed,
        prompts=prompts,
    )
    try:
        report = train_clip(
            resolve_loom(loom),
            out_dir,
            settings,
            workers=executor_spec(executor, address, workers),
            quiet=quiet or as_json,
            wait=wait,
        )
    except FileNotFoundError as e:
        fail(str(e))
    except ImportError as e:
        fail(f"{e}; {TOWERS_HINT}")
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=1) + "\n")
    else:
        out.print(escape(report.summary()), highlight=False)
    if report.stopped:
        err.print(f"[red]error:[/red] {escape(report.stopped)}", highlight=False)
        raise typer.Exit(1)
