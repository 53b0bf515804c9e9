"""What every stage shares: errors, interrupts, optional dependencies, artifact files and the manifest, the
compilers as data, comparison, tolerances and timing. It imports nothing else of the package."""
