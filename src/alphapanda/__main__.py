from alphapanda.cli.app import main

main()
