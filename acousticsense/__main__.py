"""``python -m acousticsense``: the command line, as the ``acousticsense`` command."""

from .cli import main

if __name__ == "__main__":  # not when a spawned or fork-server process imports this as its main module
    main()
