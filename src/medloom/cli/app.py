"""The root command and its groups; each command module adds its commands to them (`cli/__init__.py` imports
the modules in the order `medloom --help` lists them)."""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    help="Build curated, MAT-tagged multimodal medical datasets.",
)

eval_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Evaluate models on a loom: multiple-choice VQA, paired comparisons of runs.",
)
train_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Train on a loom: a CLIP-style model with locked pip-installed towers."
)
cg_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Compositional-generalization experiments (Med-MAT): which subsets reach a target.",
)
registry_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Published dataset tables (Med-MAT's 109 source datasets and 53 subsets): links, M/A/T, access, layouts.",
)
pmc_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="PubMed Central Open Access: download article packages.")
app.add_typer(eval_app, name="eval")
app.add_typer(train_app, name="train")
app.add_typer(cg_app, name="cg")
app.add_typer(registry_app, name="registry")
app.add_typer(pmc_app, name="pmc")
