"""``python -m trustseg ...`` (and ``torchrun ... -m trustseg predict ...``): the command line."""

import sys

from trustseg.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
