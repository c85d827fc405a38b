"""Per-image kernels: array in, array out, on the backend of the input (NumPy or CuPy)."""
