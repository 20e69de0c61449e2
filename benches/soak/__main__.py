"""``python -m benches.soak``: see :mod:`benches.soak.runner`."""

from benches.soak.runner import main

raise SystemExit(main())
