"""Forward+backward time of the LC layer vs a channels-last Conv2d at the CIFAR ResNet20 shapes.

    python scripts/bench_lc.py [--batch-size 128] [--repeats 7] [--json out.json]
"""
import argparse
import json

import torch

from bioconv_timm.bench import bench_resnet20_layers, format_timings, timings_as_dicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--json', help='also write the rows as JSON to this path')
    args = parser.parse_args()
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU')
    rows = bench_resnet20_layers(args.batch_size, args.repeats)
    print(format_timings(rows))
    print(f'worst LC/conv ratio: {max(r.ratio for r in rows):.2f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(timings_as_dicts(rows), f, indent=2)


if __name__ == '__main__':
    main()
