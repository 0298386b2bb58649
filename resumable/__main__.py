"""``python -m resumable``: the command line (see :mod:`resumable.cli`)."""

from resumable.cli import main

main()
