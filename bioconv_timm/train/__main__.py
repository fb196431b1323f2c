"""``python -m bioconv_timm.train ...`` (e.g. ``torchrun --nproc_per_node=K -m bioconv_timm.train ...``) is
``bioconv train ...``: an entry point, so it may call the command line."""
import sys

from ..cli import main

sys.exit(main(['train', *sys.argv[1:]]))
