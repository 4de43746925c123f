"""How a run is started and collected: one Hydra job (job.py), its worker processes
(spawn.py), a sweep's summary of its jobs (sweep.py)."""
