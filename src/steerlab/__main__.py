"""``python -m steerlab``: the command line, as the ``steerlab`` script runs it."""

from .cli import main

if __name__ == "__main__":
    main()
