# The ``dynmec-ablate-scheduler`` command: dynmec_jax/cli/ablate_scheduler.py.
from dynmec_jax.cli.ablate_scheduler import __doc__, run  # noqa: F401 (the usage that --help prints)

if __name__ == "__main__":
    run()
