"""edgediff's pytest options and hooks live in edgediff/pytest_plugin.py."""
pytest_plugins = ["edgediff.pytest_plugin"]
