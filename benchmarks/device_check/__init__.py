"""The parts of the accelerator check (benchmarks/accelerator.py), one module per group of parts."""
