from keel.cli.app import main

main()
