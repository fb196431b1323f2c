"""Publish trained weights to the Hugging Face Hub as timm models, with a model card.

``publish(RUN_DIR_OR_CHECKPOINT, repo_id)`` (CLI: ``bioconv publish``) reads a run folder written by
``bioconv train`` (config.json, model.safetensors, result.json / metrics.csv) or a bare ``.safetensors``
file (then ``model_name`` is required), rebuilds the model with ``timm.create_model`` and loads the
weights strictly (safetensors only, never pickle), and writes a folder a ``timm.create_model('hf-hub:...')``
call can load: ``model.safetensors`` and ``config.json`` from ``timm.models.save_for_hf`` plus a
``README.md`` model card, a ``huggingface_hub.ModelCard`` whose metadata (license, library, tags, dataset and
a ``model-index`` with the run's top-1 / top-5 as ``EvalResult``) is written by huggingface_hub. The model is
built with the run's ``model_kwargs`` (config.json), which end up in the Hub config.json's ``model_args``.
Unless ``dry_run_dir`` (a new or empty folder) is given the folder is uploaded with ``huggingface_hub.HfApi``
(``create_repo(exist_ok=True)`` + ``upload_folder``); the token comes from ``HF_TOKEN`` or
``huggingface-cli login``. The repo id is checked with huggingface_hub's ``validate_repo_id`` first, so a dry
run refuses the ids an upload would.

Loading back (after ``import bioconv_timm``)::

    timm.create_model('hf-hub:ORG/NAME', pretrained=True)

The package, one concept a module: :mod:`.source` reads a run folder or weights file and rebuilds the model
(its files checked by :mod:`.run_files`), :mod:`.card` writes the model card (datasets as the card names them:
:mod:`.datasets`), :mod:`.upload` exports the folder and uploads it; every public name is importable from here.
"""
from .card import (CARD_BODY_TEMPLATE, CARD_SECTIONS, LICENSE_TEXT, TRAINING_KEYS, card_data, format_kwargs,
                   model_card, paper_cell_for, render_model_card, render_run_card)
from .datasets import HELD_OUT_SPLIT, HUB_DATASETS, HubDataset, dataset_id
from .errors import PublishError
from .run_files import (CHECKPOINT_CROSS_FIELDS, MAX_IN_CHANS, MAX_NUM_CLASSES, MODEL_KWARGS_REFUSED,
                        RESULT_CROSS_FIELDS, Rule, cross_check_run, read_run_files, validate_run_config,
                        validate_run_result)
from .source import (build_model, create_source_model, read_source, repo_pretrained_tag, run_model_kwargs,
                     source_from_files, split_model_tag)
from .upload import UPLOAD_FILES, PublishResult, export_folder, publish, repo_id_problem

__all__ = ['PublishError', 'PublishResult', 'read_source', 'split_model_tag', 'build_model', 'export_folder',
           'card_data', 'model_card', 'render_model_card', 'render_run_card', 'publish', 'paper_cell_for',
           'validate_run_config', 'validate_run_result', 'cross_check_run', 'UPLOAD_FILES', 'LICENSE_TEXT',
           'CARD_SECTIONS', 'HubDataset', 'HUB_DATASETS', 'MODEL_KWARGS_REFUSED', 'repo_id_problem',
           # also public (used across the package's modules)
           'CARD_BODY_TEMPLATE', 'TRAINING_KEYS', 'format_kwargs', 'HELD_OUT_SPLIT', 'dataset_id', 'Rule',
           'MAX_IN_CHANS', 'MAX_NUM_CLASSES', 'CHECKPOINT_CROSS_FIELDS', 'RESULT_CROSS_FIELDS', 'read_run_files',
           'create_source_model', 'repo_pretrained_tag', 'run_model_kwargs', 'source_from_files']
