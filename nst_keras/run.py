"""``python -m nst_keras.run --flagfile=configs/default.cfg``: see ``nst_keras.cli``."""

from nst_keras.cli import console_main, main

__all__ = ["console_main", "main"]

if __name__ == "__main__":
    console_main()
