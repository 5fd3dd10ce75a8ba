from vmstate.cli import program

program()
