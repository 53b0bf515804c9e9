"""The zoo: one module per family, each exporting its SPEC and model class."""
