"""Reference implementations that tests and benchmarks compare the package against (not shipped)."""
