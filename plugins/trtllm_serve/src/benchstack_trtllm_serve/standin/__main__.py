"""``python -m benchstack_trtllm_serve.standin ...`` runs the trtllm-serve stand-in."""

import sys

from .cli import main

sys.exit(main())
