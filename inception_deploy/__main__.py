"""`python -m inception_deploy` is the `inception-deploy` command."""

from .launch import main

main()
