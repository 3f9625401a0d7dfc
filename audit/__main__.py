"""``python -m audit`` runs the command line (also under torchrun)."""

from audit.cli import main

if __name__ == "__main__":
    main()
