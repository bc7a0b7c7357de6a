from godprof.cli.main import run

run()
