"""``python -m bioconv_timm.bench ...`` is ``bioconv bench ...`` (scripts/gpu_bench.sh runs it): an entry point,
so it may call the command line."""
import sys

from ..cli import main

sys.exit(main(['bench', *sys.argv[1:]]))
