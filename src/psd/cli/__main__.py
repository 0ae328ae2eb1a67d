"""``python -m psd.cli``: how ``psd up`` starts its children, with the interpreter it runs on."""

from psd.cli.main import main

if __name__ == "__main__":
    main()
