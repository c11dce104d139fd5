from clearinghouse.cli import app

app(prog_name="clearinghouse")
