"""``python -m nst_keras.batch``."""

from nst_keras.batch import console_main

if __name__ == "__main__":
    console_main()
