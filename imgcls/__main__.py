"""`python -m imgcls VERB ...` (what torchrun launches) is the same as the `imgcls` command."""

from imgcls.cli import main

main()
