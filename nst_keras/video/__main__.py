"""``python -m nst_keras.video``."""

from nst_keras.video import console_main

if __name__ == "__main__":
    console_main()
