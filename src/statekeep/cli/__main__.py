"""``python -m statekeep.cli``: the same as the ``statekeep`` console script."""

from statekeep.cli.app import main

main()
