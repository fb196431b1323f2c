"""Brain-Score (``brainscore_vision`` 2.4) for the bioconv models: plugin folders, local scoring, submission zips.

Paper section 5.4 / Table 3 scored the ImageNet-trained 0.5x ResNet18s (conv, LC, LC with weight sharing every
1, 10 and 100 batches) on brain-score.org: V1, V2, V4, IT and behavior, and their average. This package gives:

* ``plugin_files(model_name)`` -- the one template (``templates/*.tmpl``) of a submission-ready
  ``brainscore_vision`` model plugin (``__init__.py`` registering ``model_registry['bioconv_<model>']``,
  ``model.py`` with ``get_model`` / ``get_layers`` built on ``timm.create_model``, ``test.py``,
  ``requirements.txt``, ``metadata.yml`` with the model's brain-score.org fields and its Hub link, and
  ``region_layer_map/<id>.json`` only when a mapping is given). ``write_plugins()``
  writes the committed ``brainscore_plugin/`` folder from it (``bioconv brainscore plugins``), so the folders
  cannot drift.
* ``score(model_name, weights=...)`` -- builds brainscore_vision's ``ModelCommitment`` around a timm model and
  runs the public benchmarks (``BENCHMARKS``) on data already in ``BRAINIO_HOME``; before anything expensive it
  checks that every data file is there (``missing_benchmark_data``, and the ImageNet file of the layer
  selection) and stops with a message naming the missing ones. Without weights it scores a random-init model
  and says so loudly. Each region's layer is chosen the way brainscore_vision chooses it, and every candidate
  layer's score is kept: the output holds a per-layer table (JSON, CSV, Markdown), a plot of score against
  depth per region (PNG) and ``region_layer_map/<identifier>.json`` in the plugin folder format.
* ``build_submission(...)`` / ``check_submission_zip(...)`` -- the zip brain-score.org accepts: one root
  folder holding ``models/<identifier>/`` with ``__init__.py`` and ``test.py`` (explicit directory entries,
  as the website's upload check reads them), at most 50 MB, no weight files (weights are downloaded from the
  Hugging Face Hub by ``model.py``).

Nothing here imports ``brainscore_vision`` at module import time: the package works without the
``[brainscore]`` extra, and the functions that need it say how to install it.

The modules, one concept each: ``errors`` (the base error); ``benchmarks`` (Table 3's columns, benchmarks, regions, the paper's
scores); ``naming`` (identifiers, candidate layers); ``commitment`` (the brainscore_vision wrapper and
``ModelCommitment``); ``data`` (benchmark data in BRAINIO_HOME, the layer selection's ImageNet file and
``SELECTION_PCA_COMPONENTS``, read from ``data`` when used: set it there); ``region_layers`` (region -> layer
maps); ``results`` (``ScoreResult``, its tables, plot and files); ``scoring`` (``score``, ``layer_scores``);
``plugin`` (the plugin template, ``write_plugins``, ``stale_plugin_files``); ``metadata`` (a plugin's
``metadata.yml``: its fields, written and checked); ``submission`` (the zip).
"""
from .benchmarks import BENCHMARKS, PAPER_TABLE3, REGIONS, TABLE_COLUMNS
from .commitment import INSTALL_HINT, VISUAL_DEGREES, activations_model, model_commitment
from .data import (SELECTION_PCA_COMPONENTS, DataFile, MissingBenchmarkData, benchmark_data_files, brainio_home,
                   imagenet_pca_file, missing_benchmark_data)
from .errors import BrainScoreError
from .naming import (BEHAVIORAL_READOUT_LAYER, PLUGIN_MODELS, candidate_layers, model_name_from_identifier,
                     plugin_identifier)
from .plugin import DEFAULT_REQUIREMENT, plugin_files, stale_plugin_files, write_plugins
from .region_layers import committed_region_layer_map
from .results import ScoreResult, format_layer_table, format_score_table, plot_layer_scores, region_layer_map_path
from .scoring import layer_scores, score
from .submission import (MAX_PLUGIN_FILE_BYTES, MAX_SUBMISSION_BYTES, WEIGHT_SUFFIXES, SubmissionError,
                         build_submission, check_submission_zip)

__all__ = [
    'PLUGIN_MODELS', 'BENCHMARKS', 'TABLE_COLUMNS', 'PAPER_TABLE3', 'VISUAL_DEGREES', 'BEHAVIORAL_READOUT_LAYER',
    'MAX_SUBMISSION_BYTES', 'INSTALL_HINT', 'BrainScoreError', 'MissingBenchmarkData', 'SubmissionError',
    'plugin_identifier', 'model_name_from_identifier', 'candidate_layers', 'activations_model', 'model_commitment',
    'DataFile', 'benchmark_data_files', 'missing_benchmark_data', 'brainio_home', 'imagenet_pca_file',
    'SELECTION_PCA_COMPONENTS', 'ScoreResult', 'score', 'layer_scores', 'format_score_table',
    'format_layer_table', 'plot_layer_scores', 'region_layer_map_path', 'committed_region_layer_map',
    'plugin_files', 'write_plugins',
    'build_submission', 'check_submission_zip',
    # also public, used by the CLI and the tests
    'REGIONS', 'DEFAULT_REQUIREMENT', 'stale_plugin_files', 'WEIGHT_SUFFIXES', 'MAX_PLUGIN_FILE_BYTES',
]
