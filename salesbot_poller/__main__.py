"""`python -m salesbot_poller` is the same as the `salesbot-poller` console script."""

from salesbot_poller.cli.main import main

raise SystemExit(main())
