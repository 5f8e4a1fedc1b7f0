"""Entry point for ``python -m voice_agent``."""

from voice_agent.cli import main

raise SystemExit(main())
