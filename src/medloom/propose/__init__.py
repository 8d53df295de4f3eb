"""`medloom propose`: machine-made ROIs for images that came without them (MedTrinity-25M's ROI step), kept in
their own view (`proposals`), apart from a dataset's own ROIs until a person accepts them.

Every method is one module here, registered once in `METHODS`; `base.py` says what a method module holds.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module: what `--method` accepts, in the order `medloom propose --list` shows
METHODS = {
    "body": "medloom.propose.body",  # body / foreground, any modality
    "lung-ct": "medloom.propose.lung_ct",  # lung fields in CT, Hounsfield units inside the body
    "brain-mri": "medloom.propose.brain_mri",  # brain in MRI
    "fundus": "medloom.propose.fundus",  # optic disc and retinal vessels in fundus photographs
    "nuclei-he": "medloom.propose.nuclei",  # nuclei in H&E: colour deconvolution and watershed
    "breast": "medloom.propose.breast",  # breast region in mammograms
    # expert models with weights the user has (propose/weights.py: nothing is downloaded)
    "lungmask": "medloom.propose.lungmask",  # lungmask's U-Net (R231, LTRCLobes) on CT in HU
    "cellpose": "medloom.propose.cellpose",  # Cellpose's CPnet (cyto, nuclei) on microscopy and pathology
    "nnunet": "medloom.propose.nnunet",  # an nnU-Net v2 results folder (2d per record; 3d on NIfTI volumes: TotalSegmentator)
    "sam": "medloom.propose.sam",  # a SAM-style promptable model (transformers SamModel) given the record's boxes
}


def get_method(name: str) -> ModuleType:
    from ..errors import ProposeError

    if name not in METHODS:
        raise ProposeError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])
