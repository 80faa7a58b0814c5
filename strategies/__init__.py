"""Built-in strategies (imported as ``clbench.strategies``), each registered by entry point.

A strategy imports clbench's public API (:mod:`clbench.api`, :mod:`clbench.nn`) and
:mod:`clbench.kernels`, never another strategy.
"""
