"""`python -m rarp_replay` runs the daemon (`rarp-reply`)."""

import sys

from .cli.rarp_reply import main

sys.exit(main())
