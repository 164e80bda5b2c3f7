"""Run the command line: ``python -m napari_lsr``."""

from .cli import main

raise SystemExit(main())
