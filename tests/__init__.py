"""rarp-replay's tests. A package so that `tests.support` is importable from the project
root: by pytest (`pythonpath` in pyproject.toml) and by `python -m benchmarks.<name>`."""
