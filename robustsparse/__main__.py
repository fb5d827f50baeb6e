"""`python -m robustsparse` runs the command line."""

from robustsparse.cli import main

raise SystemExit(main())
