"""Example islandora-job jobs, used by the docs, the tests and the molecule scenarios."""
