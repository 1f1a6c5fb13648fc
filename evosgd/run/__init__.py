"""Running scenarios: the engine loop, executors (serial, local process pool), the results store
(Parquet + manifest, resumable) and the memory guard."""

from evosgd.run.engine import Recorder, RunError, RunOutcome, Schedule, run_one
from evosgd.run.executors import Executor, ProcessPoolExecutor, SerialExecutor, make_executor
from evosgd.run.memory import check_memory, estimate_run_bytes
from evosgd.run.runner import execute_scenario, run_scenario
from evosgd.run.store import ResultsStore, StoreData, load_store

__all__ = ["Executor", "ProcessPoolExecutor", "Recorder", "ResultsStore", "RunError", "RunOutcome", "Schedule",
           "SerialExecutor", "StoreData", "check_memory", "estimate_run_bytes", "execute_scenario", "load_store",
           "make_executor", "run_one", "run_scenario"]
