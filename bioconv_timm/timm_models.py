"""The former home of the converted timm CNNs, kept so that ``bioconv_timm.timm_models`` imports keep working.

The families are described in :mod:`bioconv_timm.models.registry` (``TIMM_FAMILIES``) and built in
:mod:`bioconv_timm.models.timm_cnns`; new code imports them from :mod:`bioconv_timm.models`.
"""
from .models import timm_cnns  # noqa: F401  (registers the converted timm CNNs)
from .models.registry import TIMM_FAMILIES, TIMM_IMG_SIZE, TimmFamily

__all__ = ['TIMM_FAMILIES', 'TimmFamily', 'DEFAULT_IMG_SIZE']

DEFAULT_IMG_SIZE = TIMM_IMG_SIZE  # the families' default input side (64)
