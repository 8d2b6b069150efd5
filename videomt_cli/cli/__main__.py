from videomt_cli.cli.base import main

main()
