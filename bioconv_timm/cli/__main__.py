"""``python -m bioconv_timm.cli ...`` is the ``bioconv`` command."""
import sys

from . import main

sys.exit(main())
