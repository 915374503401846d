"""Scripts; demo.py runs from the project root as `python -m scripts.demo`."""
