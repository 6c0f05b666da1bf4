"""``python -m tprna`` runs the command line."""
from tprna.cli import app

if __name__ == "__main__":
    app(prog_name="tprna")
