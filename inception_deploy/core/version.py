"""The package version, in one place (environment records and manifests carry it)."""

__version__ = "0.1.0"
