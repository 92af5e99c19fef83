"""Entry point of the mini reproduction: ``python -m neurmap.reproduce_mini`` (the experiment lives in
:mod:`neurmap.experiments.reproduce_mini`)."""

import sys

from neurmap.experiments.reproduce_mini import main

if __name__ == "__main__":
    sys.exit(main())
