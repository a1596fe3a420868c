"""Downstream tasks offline: shipped task data (``tasks``), JAX scoring on the run's mesh
(``scoring``) and the data's provenance (``extract``)."""

from neoscale.evaluation.tasks import TASKS, load_task, parse_tasks

__all__ = ["TASKS", "load_task", "parse_tasks"]
