"""Root conftest of the pytest-prodval repository.

The plugin itself is active through its `pytest11` entry point (pip install -e .); this
file only enables pytester for the plugin's own tests. In a project of yours you need
no conftest at all: scenario files in `scenarios/` are the tests.
"""

pytest_plugins = ["pytester"]
