"""``python -m mesh`` is the ``mesh`` command."""

import sys

from mesh.cli import main

if __name__ == "__main__":
    sys.exit(main())
