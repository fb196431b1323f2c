"""The run folder's logs: ``metrics.csv`` (one row per epoch), ``snr.csv`` (per-layer weight SNR per epoch),
``sleeps.csv`` (every sleep), ``curves.png``, and the final weights as ``model.safetensors``. Every file is
rewritten whole and atomically, so a reader or a crash never sees half of one.

timm's ``update_summary`` appends one row to a CSV; ours rewrites the whole file instead, because a resumed run
must drop the rows written after its checkpoint, and columns (per-sleep SNR) can appear after the first row.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch.nn as nn

from .._atomic import atomic_path
from ..sleep import SleepHook, lc_layers, weight_snr

__all__ = ['write_csv', 'read_history', 'neg_log_snr', 'mean_defined', 'log_sleeps', 'plot_curves', 'save_safetensors',
           'epoch_line']


def write_csv(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    """All ``rows`` as one CSV (columns: every key, in order of first appearance); nothing for no rows."""
    if not rows:
        return
    columns: List[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_path(path) as tmp, open(tmp, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def read_history(folder: Path) -> List[Dict[str, Optional[float]]]:
    """``metrics.csv`` of a run folder read back, one dict per epoch, as JSON-ready numbers: empty and non-finite
    cells are None (ws(1)'s -log SNR is -inf after every sleep: all copies equal; JSON has no inf or nan)."""
    def number(text: Optional[str]) -> Optional[float]:
        value = float(text) if text not in ('', None) else None
        return value if value is not None and math.isfinite(value) else None

    with open(Path(folder) / 'metrics.csv', newline='') as f:
        return [{k: number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def neg_log_snr(model: nn.Module) -> Dict[str, Optional[float]]:
    """-log SNR (eq. 6) per LC layer; -inf for a perfectly shared layer, None where the SNR is undefined
    (every module of the layer holds a single location, e.g. a 1x1 output map: no variance to measure).
    Undefined layers are logged as empty cells and left out of the means."""
    out: Dict[str, Optional[float]] = {}
    for name, layer in lc_layers(model):
        snr = weight_snr(layer)
        out[name] = None if math.isnan(snr) else (-math.log(snr) if snr > 0 else math.inf)
    return out


def mean_defined(values: Sequence[Optional[float]]) -> Any:
    """Mean of the defined values ('' when there are none, an empty CSV cell)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else ''


def log_sleeps(hook: SleepHook, rows: List[Dict[str, Any]], with_snr: bool) -> None:
    """Record every sleep of ``hook`` in ``rows``: its optimizer step and (optionally, it costs two passes over
    the weights) the mean -log SNR just before and after."""
    inner = hook.sleep

    def sleep_with_log(model: Optional[nn.Module] = None) -> int:
        if model is not None and model is not hook.model:  # other weights (an EMA copy): not the trained model's log
            return inner(model)
        row: Dict[str, Any] = dict(step=hook.steps)
        if with_snr:
            row['neg_log_snr_before'] = mean_defined(list(neg_log_snr(hook.model).values()))
        count = inner()
        if with_snr:
            row['neg_log_snr_after'] = mean_defined(list(neg_log_snr(hook.model).values()))
        rows.append(row)
        return count

    hook.sleep = sleep_with_log  # type: ignore[method-assign]


def epoch_line(row: Dict[str, Any], epochs: int) -> str:
    """The one line printed per epoch, from its ``metrics.csv`` row."""
    evaluated = (f"eval loss {row['eval_loss']:.4f} top1 {row['eval_top1']:.2f} top5 {row['eval_top5']:.2f}"
                 if row['eval_top1'] != '' else 'no eval')
    return (f"epoch {row['epoch']}/{epochs} step {row['step']} lr {row['lr']:.2e} train loss {row['train_loss']:.4f} "
            f"top1 {row['train_top1']:.2f} | {evaluated} | {row['images_per_s']:.0f} img/s | sleeps {row['sleeps']}")


def plot_curves(history: List[Dict[str, Any]], path: Path, title: str) -> None:
    """Loss, accuracy and (for LC models) the mean weight -log SNR against the epoch, as a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    epochs = [r['epoch'] for r in history]
    has_snr = any(r.get('neg_log_snr') not in (None, '') for r in history)
    fig, axes = plt.subplots(1, 3 if has_snr else 2, figsize=(13 if has_snr else 9, 3.6))
    ev = [r for r in history if r['eval_top1'] != '']
    marker = '.' if len(ev) < 3 else None
    for ax, key, ylabel, title_ in ((axes[0], 'loss', 'cross-entropy', 'loss'),
                                    (axes[1], 'top1', 'top-1 (%)', 'accuracy')):
        ax.plot(epochs, [r[f'train_{key}'] for r in history], label='train')
        ax.plot([r['epoch'] for r in ev], [r[f'eval_{key}'] for r in ev], label='eval', marker=marker)
        ax.set(xlabel='epoch', ylabel=ylabel, title=title_)
        ax.legend()
        ax.grid(alpha=0.3)
    if has_snr:
        vals = [r['neg_log_snr'] if r.get('neg_log_snr') not in (None, '') else float('nan') for r in history]
        axes[2].plot(epochs, vals, marker='.')
        axes[2].set(xlabel='epoch', ylabel='mean -log SNR (end of epoch)', title='weight SNR (eq. 6)')
        axes[2].grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format='png')
    plt.close(fig)


def save_safetensors(model: nn.Module, path: Path) -> None:
    """``model``'s state dict as safetensors (CPU copies), atomically."""
    from safetensors.torch import save_file
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={'format': 'pt'})
