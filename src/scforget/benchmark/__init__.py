"""The benchmark protocol and the ``scforget`` command line."""

from ._config import BenchmarkConfig
from ._protocol import BenchmarkResult, prepare_data, run_benchmark
from ._summary import summarise

__all__ = ["BenchmarkConfig", "BenchmarkResult", "prepare_data", "run_benchmark", "summarise"]
