"""Built-in benchmark definitions: one versioned TOML file per named benchmark.

This package is the value of clbench's own ``clbench.benchmarks`` entry point, exactly as a
third-party benchmark package would declare it. A package may also export ``LOADERS``, a
mapping of loader name to loader function, for the datasets its TOML files name.
"""
