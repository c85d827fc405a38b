"""Flat field + darkfield (+ time-lapse baseline): BaSiC's model, fitted robustly in closed form.

``gpuillum run INPUT -o OUT --method flatfield`` (alias ``basic``), or in Python::

    import gpuillum as gi
    model = gi.fit_flatfield(images)                      # (N, Y, X) or a list of 2-D arrays
    model.flatfield, model.darkfield, model.info["message"]
    corrected = model.apply(images[0])                     # (I - D) / F, in the input's dtype

Why this algorithm (measured on the synthetic plates of ``plates``: 24 images of 512^2, four
vignetting shapes, two seeds, image brightness 1 +- 10 %; benchmarks/accuracy_flatfield.py has the
full table with BaSiCPy 2.0 beside it):

* the darkfield of a plate is identified by the **spread of the images' background levels**
  (field-to-field and well-to-well brightness), which every image shares over most of its pixels:
  a robust per-pixel regression on those levels gives the flat field free of any offset, and its
  contrast against the background map gives the offset (darkfield error at most 3.3 counts, mean
  1.5; flat field at most 0.25 % RMS on bright plates and 0.6 % on dim ones);
* BaSiC's other lever, sorting each pixel's values so that the cells make the spread, is noisy
  with few images: with 24 images the k-th brightest value of a pixel depends on how many cells
  happened to cover it, and that count correlated with the vignetting by chance (slopes of
  100-180 counts on ranks of 500-1,200 counts in one plate), so the offset it implies is off by
  tens of counts (BaSiCPy with ``sort_intensity``: 75 counts mean error at a true offset of 100);
* a per-pixel median (which BaSiC's sorted L1 fit resembles) is blotchy on plates, where the
  cells that happen to cover a pixel move its median: 1.4 % flat error against 0.2 % for the
  robust mean; but on dense content (tissue tiles, cultures that cover the field, colonies that
  grow in a time-lapse) the robust mean's weights, which look for a background in every image,
  keep different parts of each pixel's values than BaSiC does (2.8-15 % from its demo
  references), and the median agrees with them (1.3-1.5 % RMS, border excluded); so
  ``statistic="auto"`` (the default) takes the median exactly when the darkfield regression finds
  that the data contradict the objects-on-a-background model (an offset below zero or above the
  darkest background, even and odd images that disagree; see ``estimator``), which no synthetic
  plate did and all three demo stacks do;
* the smoothing is a penalised DCT smoother (closed form, ``cupyx.scipy.fft`` on a GPU) instead
  of BaSiC's L1-shrunk DCT inside an ADMM loop: six passes of a few array operations, 1.3-2 ms
  of CPU per image against BaSiCPy's 24-45 ms (one torch thread, same run).

Modules: ``estimator`` (the fit on a working stack), ``working`` (the group reduction: the
working copies), ``fit`` (``fit_flatfield`` and the full-resolution model), ``method`` (the
engine's method), ``plates`` (synthetic plates with known truth for tests and benchmarks).
"""
from .estimator import WorkingFit, fit_working_stack
from .fit import fit_flatfield, load_dark_frames, model_from_stack
from .method import FLATFIELD, FlatfieldMethod, FlatfieldSettings
from .working import WorkingStack, working_shape

__all__ = ["FLATFIELD", "FlatfieldMethod", "FlatfieldSettings", "WorkingFit", "WorkingStack", "fit_flatfield",
           "fit_working_stack", "load_dark_frames", "model_from_stack", "working_shape"]
