"""What tests, benchmarks and the demo share: the namespace harness (`netlab`), the daemon
runner (`daemon_proc`), the hand-built switch of the unit tests (`topology`), the
reliability switch (`relab`), the two-leaf FRR fabric (`fabric`) and the pytest fixtures
(`fixtures`, loaded by tests/conftest.py).

Imported as `tests.support.<module>` with the project root on sys.path: pytest puts it
there (`pythonpath = ["."]`), and benchmarks and the demo run as modules from the root
(`python -m benchmarks.bench_reply`), so nothing edits sys.path.
"""
