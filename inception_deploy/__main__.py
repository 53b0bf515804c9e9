"""`python -m inception_deploy` is the `inception-deploy` command."""

from .cli import main

main()
