from tinytrans.cli import main

main()
