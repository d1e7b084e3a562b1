"""Experiments of the paper (Sections 2 and 3) and the report that collects them."""
