"""`python -m recipe` entry point."""
from recipe.cli import main

main()
