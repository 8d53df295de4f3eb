"""`python -m medloom.cli`."""

from . import main

main()
