"""Training: typed configs (:mod:`~dynmec_jax.train.config`), the allocator
(:mod:`~dynmec_jax.train.allocator`, Fig. 2(b) and 3) and Algorithm 1
(:mod:`~dynmec_jax.train.joint`)."""
