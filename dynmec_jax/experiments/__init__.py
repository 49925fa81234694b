"""Section V of the paper: the reproduction driver (:mod:`~dynmec_jax.experiments.reproduce`),
one sweep item (:mod:`~dynmec_jax.experiments.sections`), figure data
(:mod:`~dynmec_jax.experiments.figures`), the claims as data
(:mod:`~dynmec_jax.experiments.claims`), Fig. 12's training cost
(:mod:`~dynmec_jax.experiments.fig12`), the report and the method names."""
