"""`python -m skymix` is the `skymix` command."""

from .cli import main

raise SystemExit(main())
