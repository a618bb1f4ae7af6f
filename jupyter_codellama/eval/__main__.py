"""``python -m jupyter_codellama.eval``: see :mod:`jupyter_codellama.eval.cli`."""

import sys

from .cli import main

sys.exit(main())
