"""`python -m bot`: the same as the `sdbot` command."""

import sys

from bot.cli import main

sys.exit(main())
