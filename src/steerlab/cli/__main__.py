"""``python -m steerlab.cli``: the same as the ``steerlab`` console script."""

from . import main

main()
