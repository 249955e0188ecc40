"""`python -m daemon.cli`: the `runbookd` command."""

from daemon.cli.main import main

raise SystemExit(main())
