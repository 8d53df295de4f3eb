"""The `medloom` command and `python -m medloom`, with the CLI imported only when the command runs.

multiprocessing prepares every local worker by running the parent's main module again (the console script, or
this module under `-m`). A script that imported the CLI at its top made each worker load typer, rich and every
command's imports, 0.17 s of each worker's start before it could take a part.
"""


def main() -> None:
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
