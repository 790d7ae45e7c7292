"""``python -m mesh`` is the ``mesh`` command."""

from mesh.cli import main

if __name__ == "__main__":
    main()
