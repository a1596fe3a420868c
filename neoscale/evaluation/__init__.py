"""Downstream tasks offline: shipped task data (``tasks``), JAX scoring on the run's mesh
(``scoring``) and the data's provenance (``extract``)."""
