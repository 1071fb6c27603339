"""`python -m labshared.tinyclip`: the report command (`labshared.tinyclip.report`)."""

from labshared.tinyclip.report import main

raise SystemExit(main())
