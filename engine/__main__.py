"""`python -m engine`: the engine process the bot starts."""

import sys

from engine.worker import main

sys.exit(main())
