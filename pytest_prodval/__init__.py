"""pytest-prodval: a production-validation load-test plan as a pytest suite."""

__version__ = "0.1.0"
