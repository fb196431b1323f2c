#!/usr/bin/env python
"""Reproduce paper Figs. 4A, 4B, 5A, 5B (single-layer Hebbian sleep dynamics, appendix A.5).

Writes fig<ID>.csv (iteration, k, gamma, neg_log_snr) and fig<ID>.png into --out-dir and prints,
per (k, gamma), the final -log SNR next to the floor 2 log(gamma/(1+gamma)) and the exact eq. 5
fixed point (eq. 5 for 4A, eq. 24 for 5A/4B/5B). Paper settings by default: 4A ~15 s, 5A ~100 s,
4B/5B (one shared eq. 8 run, 10^4 iterations) ~5 min on 2 CPU cores; --short-eq8 for 2000 iterations. Example: python scripts/sleep_fig4.py --figures 4A --out-dir results/fig4
"""
import sys

from bioconv_timm.cli import main

if __name__ == '__main__':
    sys.exit(main(['sleep-sim', *sys.argv[1:]]))  # the same as `bioconv sleep-sim ...`
