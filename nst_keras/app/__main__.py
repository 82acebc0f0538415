"""``python -m nst_keras.app``: see ``nst_keras.app``."""

from nst_keras.app import console_main

if __name__ == "__main__":
    console_main()
