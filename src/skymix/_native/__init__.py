"""Compiled kernels (built from src/_native/*.pyx). Import them through skymix.compose only."""
