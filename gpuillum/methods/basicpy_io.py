"""Read a model saved by BaSiCPy 2.0 (``BaSiC.save_model(folder)``) as an IlluminationModel.

BaSiCPy writes ``settings.json`` (its settings) and ``profiles.npz`` (``flatfield``,
``darkfield``, ``baseline``; docs/basic.md section 7). Its correction is ``(I - darkfield) /
flatfield`` in the input's counts, which is what the returned model's ``apply`` computes (in the
input's dtype by default, or float32 as BaSiCPy). The stored baseline is not per frame when the
fit sorted the stack, and BaSiCPy refits it at transform time, so it is kept only in ``info``
(its length) and not applied. Nothing is unpickled: an object array (a baseline of None) is
skipped.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InvalidValue
from ..model import IlluminationModel

SETTINGS_FILE = "settings.json"
PROFILES_FILE = "profiles.npz"


def load_basicpy_model(folder) -> IlluminationModel:
    """The flat field and darkfield of a BaSiCPy ``save_model`` folder, as a model (method "basicpy").

    Parameters
    ----------
    folder : path
        The folder holding ``settings.json`` and ``profiles.npz``.

    Returns
    -------
    IlluminationModel
        ``flatfield`` as saved (BaSiCPy does not renormalise it after upsampling), ``darkfield``
        in counts (None when BaSiCPy fitted none: all zeros), ``settings`` = BaSiCPy's settings.

    Examples
    --------
    >>> model = load_basicpy_model("basic_model/")
    >>> corrected = model.apply(image, output_dtype="float32")   # as BaSiC.transform
    """
    folder = Path(folder)
    profiles = folder / PROFILES_FILE
    if not profiles.is_file():
        raise InvalidValue(f"{folder}: not a BaSiCPy model folder (no {PROFILES_FILE})")
    settings = {}
    if (folder / SETTINGS_FILE).is_file():
        try:
            settings = json.loads((folder / SETTINGS_FILE).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InvalidValue(f"{folder / SETTINGS_FILE}: not JSON ({error})") from None
    arrays = {}
    with np.load(profiles, allow_pickle=False) as data:
        for name in ("flatfield", "darkfield", "baseline"):
            if name in data.files:
                try:
                    arrays[name] = np.asarray(data[name], dtype=np.float32)
                except ValueError:  # an object array (None) would need unpickling
                    continue
    flat = arrays.get("flatfield")
    if flat is None or flat.ndim != 2:
        raise InvalidValue(f"{profiles}: expected a 2-D 'flatfield' (BaSiCPy fits of 2-D images)")
    dark = arrays.get("darkfield")
    if dark is not None and not np.any(dark):
        dark = None
    info = {"source": "BaSiCPy save_model", "baseline_values": int(arrays["baseline"].size) if "baseline" in arrays else 0}
    return IlluminationModel(flatfield=flat, darkfield=dark, units="counts", method="basicpy", settings=settings, info=info)
