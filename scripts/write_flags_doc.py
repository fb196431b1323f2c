"""Rewrite docs/flags.md from the settings declarations (bioconv_timm.cli.flags_page)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bioconv_timm.cli import flags_page  # noqa: E402

if __name__ == '__main__':
    out = Path(__file__).resolve().parents[1] / 'docs' / 'flags.md'
    out.write_text(flags_page())
    print(f'wrote {out}')
