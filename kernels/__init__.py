"""Rank-gated LoRA kernels (imported as ``clbench.kernels``; imports nothing else from clbench).

The rank-gated operation, its reference, CPU and Triton paths arrive with the kernels work;
this package exists now so that the import mapping and the dependency rule are in place.
"""
