"""Experiments of the paper (Sections 2 and 3) and the report that collects them."""

__all__: list[str] = []  # nothing at package level: import the modules (``from latentmotion.experiments import reproduce``)
