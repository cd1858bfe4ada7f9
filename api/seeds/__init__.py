"""Seed adapters: the seeds' own paths and shapes over jetflow's commands and projections."""
