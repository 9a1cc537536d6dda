from edgerq.cli import main

main()
