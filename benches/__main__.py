"""``python -m benches [--quick] [--out DIR] [--scenario NAME ...]``."""

from benches.cli import main

raise SystemExit(main())
